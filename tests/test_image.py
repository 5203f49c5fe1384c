"""The Dockerfile, without a Docker engine: its structure, its .dockerignore, and its build
stage's own COPY and RUN steps run here (paths moved into tmp), from the built wheel into a
fresh venv, whose `endpoints-sync` must then list every built-in provider."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BUILT_IN = set(PYPROJECT["project"]["entry-points"]["endpoints_sync.providers"])


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions: comments dropped, `\\` continuations joined."""
    out: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        out.append(Instruction(keyword.upper(), " ".join(args.split())))
        pending = ""
    return out


def stages() -> tuple[dict[str, str], list[list[Instruction]]]:
    """(the global ARG defaults, each stage's instructions starting with its FROM)."""
    found: list[list[Instruction]] = []
    global_args: dict[str, str] = {}
    for ins in instructions((ROOT / "Dockerfile").read_text()):
        if ins.keyword == "FROM":
            found.append([ins])
        elif found:
            found[-1].append(ins)
        elif ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            global_args[name] = default
    return global_args, found


def base_image(from_: Instruction, global_args: dict[str, str]) -> str:
    image = from_.args.split()[0]
    return re.sub(r"\$\{(\w+)\}", lambda m: global_args[m[1]], image)


def labels(stage: list[Instruction]) -> dict[str, str]:
    found: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "LABEL":
            for pair in shlex.split(ins.args):
                key, _, value = pair.partition("=")
                found[key] = value
    return found


def env(stage: list[Instruction]) -> dict[str, str]:
    found: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            for pair in shlex.split(ins.args):
                key, _, value = pair.partition("=")
                found[key] = value
    return found


def only(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stage if i.keyword == keyword]


# --- structure ----------------------------------------------------------------------------


def test_two_stages_on_a_slim_python_base() -> None:
    global_args, (build, final) = stages()
    assert build[0].args.split()[-2:] == ["AS", "build"]
    for stage in (build, final):
        image = base_image(stage[0], global_args)
        assert re.fullmatch(r"python:3\.(1[1-9])-slim(-\w+)?", image), image
    # The final stage compiles nothing and fetches nothing: it copies the built venv.
    assert not only(final, "RUN")
    assert only(final, "COPY") == ["--from=build /opt/endpoints-sync /opt/endpoints-sync"]


def test_final_stage_runs_as_65532_with_the_cli_as_entrypoint() -> None:
    _, (_, final) = stages()
    assert only(final, "USER") == ["65532:65532"]
    # USER comes after anything that would need root.
    keywords = [i.keyword for i in final]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "COPY")
    assert [json.loads(e) for e in only(final, "ENTRYPOINT")] == [["endpoints-sync"]]
    variables = env(final)
    # Read-only root filesystem: everything that writes goes to /tmp (an emptyDir).
    assert variables["HOME"] == variables["TMPDIR"] == "/tmp"
    assert variables["PYTHONDONTWRITEBYTECODE"] == "1"
    assert variables["PATH"].startswith("/opt/endpoints-sync/bin:")
    assert variables["ENDPOINTS_SYNC_CONFIG"] == "/etc/endpoints-sync/config.yaml"


def test_oci_labels_match_pyproject() -> None:
    _, (_, final) = stages()
    found = labels(final)
    (version_arg,) = [a for a in only(final, "ARG") if a.startswith("VERSION=")]
    assert version_arg == f"VERSION={PYPROJECT['project']['version']}"
    assert found["org.opencontainers.image.version"] == "${VERSION}"
    assert found["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]["text"]
    assert found["org.opencontainers.image.source"].startswith("https://")


def test_nothing_secret_is_copied() -> None:
    _, all_stages = stages()
    copied = [a for stage in all_stages for a in only(stage, "COPY") + only(stage, "ADD")]
    assert not [a for stage in all_stages for a in only(stage, "ADD")]
    for args in copied:
        sources = [s for s in args.split()[:-1] if not s.startswith("--")]
        for source in sources:
            assert not re.search(r"(^|/)(\.env|kubeconfig|\.kube|\.aws|\.git)|\.(pem|key)$",
                                 source), args
            assert source != ".", "COPY . would copy whatever the context holds"


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents wins."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]").replace(r"\[co\]", "[co]")
        if any(re.fullmatch(regex, p) for p in prefixes):
            excluded = not negate
    return excluded


@pytest.mark.parametrize("path", [
    ".git/config", ".venv/bin/python", "tests/conftest.py", ".mypy_cache/x", ".ruff_cache/x",
    ".pytest_cache/x", ".hypothesis/x", "endpoints_sync.egg-info/PKG-INFO", ".demo/kubeconfig",
    "bench/bench.py", "bench/results.json", "build/lib/x.py", "dist/x.whl", ".env",
    "kubeconfig", "token.pem", "syncer/__pycache__/cli.cpython-311.pyc",
    "providers/__pycache__/consul.cpython-311.pyc", "syncer/x.pyc", "deploy/config.yaml",
])
def test_dockerignore_keeps_out(path: str) -> None:
    assert dockerignore_excludes(path)


def test_dockerignore_lets_in_what_the_dockerfile_copies() -> None:
    _, (build, _) = stages()
    for args in only(build, "COPY"):
        for source in args.split()[:-1]:
            assert not dockerignore_excludes(source), source
    for package in ("syncer", "providers"):
        for file in (ROOT / package).rglob("*.py"):
            if "__pycache__" not in file.parts:
                assert not dockerignore_excludes(str(file.relative_to(ROOT))), file
    assert not dockerignore_excludes("syncer/py.typed")


# --- the build stage, run here ------------------------------------------------------------


def run_build_stage(tmp: Path) -> tuple[Path, Path]:
    """The build stage's COPY and RUN steps with /src, /wheels and /opt/endpoints-sync moved
    under tmp; `python` is this interpreter (pip reaches the package index, as in a build).
    Returns (wheel, venv)."""
    _, (build, _) = stages()
    places = {"/opt/endpoints-sync": tmp / "venv", "/wheels": tmp / "wheels", "/src": tmp / "src"}

    def moved(text: str) -> str:
        for old, new in places.items():
            text = re.sub(rf"(?<![\w/]){re.escape(old)}(?![\w-])", str(new), text)
        return text

    workdir = tmp
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    for ins in build[1:]:
        if ins.keyword == "WORKDIR":
            workdir = Path(moved(ins.args))
            workdir.mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "COPY":
            *sources, dest = ins.args.split()
            target = workdir / dest
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():
                    shutil.copytree(origin, target, ignore=shutil.ignore_patterns(
                        "__pycache__", "*.pyc", "*.egg-info"))
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target / origin.name)
        elif ins.keyword == "RUN":
            # pip's cache is kept here (the image build skips it to stay small): the packages
            # `make install` just downloaded are not fetched again.
            command = moved(ins.args).replace(" --no-cache-dir", "")
            done = subprocess.run(["/bin/sh", "-c", command], cwd=workdir,
                                  env={**os.environ, "PATH": path, "PIP_QUIET": "1"},
                                  capture_output=True, text=True, timeout=240, check=False)
            assert done.returncode == 0, f"RUN {ins.args}\n{done.stdout}\n{done.stderr}"
        else:
            assert ins.keyword in ("ARG", "ENV"), f"not emulated here: {ins.keyword}"
    (wheel,) = (tmp / "wheels").glob("endpoints_sync-*.whl")
    return wheel, tmp / "venv"


@pytest.mark.slow
def test_build_stage_installs_every_provider_into_a_fresh_venv(tmp_path: Path) -> None:
    wheel, venv = run_build_stage(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        declared = archive.read(entry_points).decode()
    assert "syncer/py.typed" in names
    assert {f"providers/{p}.py" for p in ("static", "consul", "aws_ec2", "aws_rds")} <= names
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]
    assert all(f"{name} = " in declared for name in BUILT_IN)
    # A fresh venv: nothing from our .venv or the system site-packages.
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()

    # The image's environment: HOME and TMPDIR in /tmp, no bytecode written.
    home = tmp_path / "home"
    home.mkdir()
    image_env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home),
                 "TMPDIR": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
    before = sorted(p for p in venv.rglob("*"))
    listed = subprocess.run([str(venv / "bin" / "endpoints-sync"), "providers"],
                            capture_output=True, text=True, env=image_env, cwd=home,
                            timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    shown = {line.split()[0] for line in listed.stdout.splitlines()
             if line and not line.startswith(" ")}
    assert shown == BUILT_IN
    assert "unavailable" not in listed.stdout, listed.stdout

    config = tmp_path / "config"
    shutil.copytree(ROOT / "deploy", config, ignore=shutil.ignore_patterns("overlays"))
    checked = subprocess.run([str(venv / "bin" / "endpoints-sync"), "validate", "-c",
                              str(config / "config.yaml")], capture_output=True, text=True,
                             env=image_env, cwd=home, timeout=60, check=False)
    assert checked.returncode == 0, checked.stderr
    # Read-only root filesystem: running wrote nothing into the installation.
    assert sorted(p for p in venv.rglob("*")) == before
