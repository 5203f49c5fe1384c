"""Bad input of every kind: exit 2, the file and the field named, within seconds, no traceback,
nothing contacted. The corpus in tests/bad_inputs/ runs in-process through `validate`; a few
representative cases, and every path that could hang, run the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from syncer.cli import main
from syncer.documents import MAX_DOCUMENT_BYTES, load_document
from syncer.errors import ConfigError
from tests.cli import ROOT, cli, run_sync
from tests.kubeapi import KubeApiServer

CORPUS = Path(__file__).parent / "bad_inputs"
INDEX: dict[str, list[str]] = yaml.safe_load((CORPUS / "index.yaml").read_text())
GOOD_INVENTORY = ("services:\n  - name: web\n    ports: [{name: http, port: 80}]\n"
                  "    endpoints:\n      - {address: 192.0.2.10, port: 8080}\n")


def _config_for(inventory: Path, folder: Path) -> Path:
    cfg = folder / "config.yaml"
    cfg.write_text(f"sources:\n  - {{name: inv, provider: static, path: '{inventory}'}}\n")
    return cfg


def _validate(cfg: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["validate", "-c", str(cfg)])
    return code, capsys.readouterr().err


def _assert_refused(code: int, err: str, file: Path | str, field: str, fragment: str) -> None:
    assert code == 2, err
    where = f"{file}: {field}: " if field else f"{file}: "
    assert where in err, err
    assert fragment in err, err
    assert "Traceback" not in err, err
    # A message quotes at most a short piece of the input, never the input itself.
    assert all(len(line) < 400 for line in err.splitlines()), err


def test_the_corpus_is_complete() -> None:
    on_disk = {p.name for p in CORPUS.iterdir()} - {"index.yaml"}
    assert on_disk == set(INDEX)
    assert len(INDEX) >= 50


@pytest.mark.parametrize("name", sorted(INDEX))
def test_corpus_file_is_refused_naming_file_and_field(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    field, fragment = INDEX[name]
    path = CORPUS / name
    cfg = path if name.startswith("config-") else _config_for(path, tmp_path)
    code, err = _validate(cfg, capsys)
    _assert_refused(code, err, path, field, fragment)


# --- YAML 1.1 coercions are gone: values arrive as written ---

def test_scalars_arrive_as_written(tmp_path: Path) -> None:
    doc = tmp_path / "values.yaml"
    doc.write_text("a: 0120\nb: 1:20\nc: no\nd: 'no'\ne: '80'\nf: on\ng: 0x1f\nh: 1_000\n"
                   "i: 2024-01-01\nj: 80\nk: -7\nl: true\nm: FALSE\nn: ~\no: null\np:\n"
                   "q: 1.5\nr: 1e3\ns: .inf\nt: yes\nu: tRue\nv: 07\n")
    assert load_document(doc) == {
        "a": "0120", "b": "1:20", "c": "no", "d": "no", "e": "80", "f": "on", "g": "0x1f",
        "h": "1_000", "i": "2024-01-01", "j": 80, "k": -7, "l": True, "m": False, "n": None,
        "o": None, "p": None, "q": 1.5, "r": 1000.0, "s": float("inf"), "t": "yes",
        "u": "tRue", "v": "07"}


def test_merge_keys_still_work_and_may_be_overridden(tmp_path: Path) -> None:
    doc = tmp_path / "merge.yaml"
    doc.write_text("base: &b {port: 80, ready: true}\none: {<<: *b, port: 81}\n"
                   "two: {<<: [*b, {zone: a}], ready: false}\n")
    assert load_document(doc) == {"base": {"port": 80, "ready": True},
                                  "one": {"port": 81, "ready": True},
                                  "two": {"port": 80, "ready": False, "zone": "a"}}


def test_the_yaml_loader_is_the_c_one() -> None:
    from syncer.documents import StrictLoader
    assert issubclass(StrictLoader, yaml.CSafeLoader)


# --- resources: bounded time and memory ---

@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_nesting_100000_deep_is_refused_within_a_second(suffix: str, tmp_path: Path) -> None:
    doc = tmp_path / f"deep{suffix}"
    doc.write_text("[" * 100_000 + "]" * 100_000)
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_document(doc)
    assert time.monotonic() - start < 1
    assert "nest" in info.value.message
    assert len(str(info.value)) < 200 + len(str(doc))


def test_an_alias_bomb_is_refused_within_a_second() -> None:
    start = time.monotonic()
    with pytest.raises(ConfigError, match="aliases expand the document"):
        load_document(CORPUS / "config-alias-bomb.yaml")
    assert time.monotonic() - start < 1


def test_many_aliases_within_the_budget_are_fine(tmp_path: Path) -> None:
    doc = tmp_path / "aliases.yaml"
    doc.write_text("base: &b {port: 80}\nuse: [" + ", ".join(["*b"] * 1000) + "]\n")
    assert len(load_document(doc)["use"]) == 1000


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    doc = tmp_path / "huge.yaml"
    with doc.open("wb") as f:  # sparse: reading it would take a while, refusing it does not
        f.truncate(MAX_DOCUMENT_BYTES + 1)
    start = time.monotonic()
    with pytest.raises(ConfigError, match="the limit is") as info:
        load_document(doc)
    assert time.monotonic() - start < 1
    assert info.value.file == str(doc)


def test_a_generated_large_inventory_loads(tmp_path: Path) -> None:
    """The bounds leave room for real inventories: 5,000 endpoints pass every check."""
    eps = "".join(f"      - {{address: 198.18.{i // 250}.{i % 250 + 1}, port: 8080}}\n"
                  for i in range(5000))
    doc = tmp_path / "big.yaml"
    doc.write_text(f"services:\n  - name: web\n    ports: [{{port: 80}}]\n    endpoints:\n{eps}")
    assert len(load_document(doc)["services"][0]["endpoints"]) == 5000


# --- paths that are not a readable regular file ---

def test_a_directory_a_missing_file_and_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    cases = {tmp_path: "is a directory", tmp_path / "missing.yaml": "file not found",
             tmp_path / "loop-a": "symlink loop", Path("/dev/zero"): "not a regular file",
             Path("/dev/null"): "not a regular file"}
    for path, fragment in cases.items():
        with pytest.raises(ConfigError) as info:
            load_document(path)
        assert info.value.file == str(path)
        assert fragment in info.value.message


def test_a_fifo_as_config_or_inventory_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for cfg in (fifo, _config_for(fifo, tmp_path)):
        start = time.monotonic()
        proc = cli("validate", "-c", cfg, timeout=20)
        assert time.monotonic() - start < 10
        _assert_refused(proc.returncode, proc.stderr, fifo, "", "not a regular file")


def test_an_unreadable_inventory_run_as_nobody(tmp_path: Path) -> None:
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"unreadable-{os.getpid()}"
    folder.mkdir(mode=0o755)
    try:
        inventory = folder / "inventory.yaml"
        inventory.write_text(GOOD_INVENTORY)
        inventory.chmod(0o600)
        cfg = _config_for(inventory, folder)
        cfg.chmod(0o644)
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-m", "syncer", "validate", "-c", str(cfg)],
            capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
        _assert_refused(proc.returncode, proc.stderr, inventory, "", "permission denied")
    finally:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


# --- the real CLI against the API server: exit 2 and not one request ---

@pytest.mark.parametrize(("config", "inventory", "field", "fragment"), [
    ("config-duplicate-key.yaml", None, "line 2, column 1", "duplicate key 'owner'"),
    ("config-python-tag.yaml", None, "line 1, column 8", "could not determine a constructor"),
    ("config-adopt-no.yaml", None, "adopt", "valid boolean (got 'no')"),
    (None, "inventory-port-string.yaml", "services[0].ports[0].port",
     "Input should be a valid integer (got '80')"),
    (None, "inventory-alias-bomb.yaml", "line 1, column 1", "aliases expand"),
    (None, "/dev/zero", "", "not a regular file"),
])
def test_run_refuses_before_contacting_the_cluster(
        config: str | None, inventory: str | None, field: str, fragment: str,
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    if config is not None:
        cfg = file = CORPUS / config
    else:
        assert inventory is not None
        file = Path(inventory) if inventory.startswith("/") else CORPUS / inventory
        cfg = _config_for(file, tmp_path)
    kube.reset_requests()
    proc = run_sync(cfg, kubeconfig)
    _assert_refused(proc.returncode, proc.stderr, file, field, fragment)
    assert kube.requests == []


# --- the command line ---

@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1", "1e9", "ten"])
def test_interval_must_be_positive_and_finite(value: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "-c", "config.yaml", f"--interval={value}"])
    assert info.value.code == 2
    assert "expected a positive, finite number of seconds" in capsys.readouterr().err


def test_interval_nan_through_the_cli() -> None:
    proc = cli("run", "-c", "config.yaml", "--interval", "nan")
    assert proc.returncode == 2
    assert "expected a positive, finite number of seconds" in proc.stderr
    assert "Traceback" not in proc.stderr
