"""Command-line habits people bring from kubectl and external-dns: global options before or
after the command, durations, `-c -`, $KUBECONFIG over in-cluster, `plan -o json` and
`plan --exit-code`, log levels and JSON log fields.

Tables run in process; each habit also runs once through the CLI in a subprocess."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncer.cli import EXIT_CHANGES, _parser, main
from syncer.errors import ConfigError
from syncer.kube import connect
from tests.cli import cli
from tests.kubeapi import KubeApiServer
from tests.specs import rgw_entry
from tests.test_registry_errors import fake_dist

CONFIG = ("owner: cluster-a\n"
          "sources:\n  - {name: rgw, provider: static, path: inventory.yaml}\n")
SUMMARY = re.compile(r"summary created=4 updated=0 deleted=0 unchanged=0 skipped=0 conflicts=0 "
                     r"failed_sources=0 failed_writes=0 probe_failed=0 readiness_changed=0 "
                     r"duration=\d+\.\d\ds")


def inventory(tmp: Path) -> Path:
    (tmp / "inventory.yaml").write_text(yaml.safe_dump({"services": [rgw_entry()]}))
    config = tmp / "config.yaml"
    config.write_text(CONFIG)
    return config


def json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines()]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """main() points the root logger at this test's stderr: put pytest's handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


# --- in process: the tables -----------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("300", 300), ("0.5", 0.5), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("1.5h", 5400),
    ("1m30s", 90), ("500ms", 0.5), ("168h", 7 * 24 * 3600), (" 2m ", 120)])
def test_interval_durations(text: str, seconds: float) -> None:
    args = _parser().parse_args(["run", "-c", "config.yaml", "--interval", text])
    assert args.interval == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5m30", "-5m", "1h-30m", "m", "", "1d", "5 m", "169h", "0s",
                                  "nan", "1e9", "five minutes"])
def test_bad_durations_name_the_flag_and_what_was_expected(
        text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "-c", "config.yaml", f"--interval={text}"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --interval: expected a positive, finite number of seconds or a " \
           "duration such as 90s, 5m or 1h30m (at most 604800 seconds, a week)" in err


@pytest.mark.parametrize(("argv", "log_format", "log_level"), [
    (["plan", "-c", "x"], "text", "info"),
    (["--log-format", "json", "plan", "-c", "x"], "json", "info"),
    (["plan", "-c", "x", "--log-format", "json"], "json", "info"),
    (["--log-format", "json", "--log-level", "warning", "plan", "-c", "x"], "json", "warning"),
    (["-v", "validate", "-c", "x"], "text", "debug"),
    (["validate", "-c", "x", "-v"], "text", "debug"),
    (["--log-level", "error", "providers", "--log-format", "json"], "json", "error"),
    # Given twice, the later one wins, as everywhere on a command line.
    (["--log-format", "json", "schema", "--log-format", "text"], "text", "info"),
    (["--log-level", "warning", "run", "-c", "x", "-v"], "text", "debug"),
])
def test_global_options_before_or_after_the_command(argv: list[str], log_format: str,
                                                     log_level: str) -> None:
    args = _parser().parse_args(argv)
    assert (args.log_format, args.log_level) == (log_format, log_level)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(("argv", "message"), [
    (["run", "-c", "-", "--interval", "5m"], "-c - cannot be used with --interval"),
    (["run", "-c", "config.yaml", "-o", "json"], "-o json prints a plan: use it with --dry-run"),
])
def test_refused_combinations_exit_2_before_reading_anything(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(CONFIG.encode())))
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert sys.stdin.read() == CONFIG  # the configuration was not read


@pytest.mark.usefixtures("restore_logging")
def test_config_from_stdin_resolves_paths_against_the_working_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    inventory(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(CONFIG.encode())))
    assert main(["validate", "-c", "-"]) == 0
    assert capsys.readouterr().out == "<stdin>: OK: 1 source(s): rgw (static)\n"

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"owner: [\n")))
    assert main(["validate", "-c", "-"]) == 2
    assert "configuration error: <stdin>: line 2, column 1: invalid YAML" in \
        capsys.readouterr().err
    bad_option = CONFIG.replace("path: inventory.yaml", "path: inventory.yaml, colour: red")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(bad_option.encode())))
    assert main(["validate", "-c", "-"]) == 2
    assert "<stdin>: sources[0].colour: unknown key" in capsys.readouterr().err


def test_kubeconfig_env_wins_over_in_cluster(kube: KubeApiServer, kubeconfig: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "203.0.113.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    with pytest.raises(ConfigError, match="cannot load the cluster configuration"):
        connect()  # in-cluster: no service account token here
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert connect().list("Service", "", None) == []
    assert kube.requests, "the kubeconfig's server was asked"


# --- through the CLI ------------------------------------------------------------------------

def test_plan_json_from_stdin_with_kubeconfig_env_and_exit_code(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    inventory(tmp_path)
    # In a pod with $KUBECONFIG set, the kubeconfig is used (in-cluster would fail here).
    env = {"KUBECONFIG": str(kubeconfig), "KUBERNETES_SERVICE_HOST": "203.0.113.1",
           "KUBERNETES_SERVICE_PORT": "443"}
    result = cli("--log-format", "json", "plan", "-c", "-", "-o", "json", "--exit-code",
                 env=env, stdin=CONFIG, cwd=tmp_path)
    assert result.returncode == EXIT_CHANGES == 3, result.stderr
    doc = json.loads(result.stdout)
    assert doc["summary"]["created"] == 4
    assert {c["action"] for c in doc["changes"]} == {"create"}
    assert kube.write_requests() == []
    lines = json_lines(result.stderr)
    assert any(line.get("source") == "rgw" for line in lines)
    last = lines[-1]
    assert last["event"] == "plan_summary"
    assert last["counts"] == doc["summary"]
    assert isinstance(last["duration_seconds"], float)
    assert SUMMARY.fullmatch(last["msg"].removeprefix("plan "))


def test_run_then_plan_exit_code_is_0_when_nothing_is_pending(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = inventory(tmp_path)
    result = cli("run", "-c", config, "--kubeconfig", kubeconfig, "--log-format", "json")
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stderr)
    written = [line for line in lines if line.get("event") == "written"]
    assert len(written) == 4
    assert all((line["source"], line["namespace"], line["service"])
               == ("rgw", "storage", "ocs-external-rgw-lb") for line in written)
    (found,) = [line for line in lines if line.get("event") == "source_discovered"]
    assert found["counts"] == {"services": 1, "addresses": 12}
    last = lines[-1]
    assert last["event"] == "summary" and last["level"] == "info"
    assert last["counts"]["created"] == 4 and last["counts"]["failed_writes"] == 0
    assert SUMMARY.fullmatch(last["msg"])

    result = cli("plan", "-c", config, "--kubeconfig", kubeconfig, "--exit-code")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "No changes: the cluster matches the sources.\n"
    assert "plan summary created=0 updated=0 deleted=0 unchanged=4 " in result.stderr


BUGGY_PLUGIN = '''
from syncer.plugin import Provider, ProviderOptions, ServiceSpec


class BuggyProvider(Provider[ProviderOptions]):
    Options = ProviderOptions
    summary = "A provider with a bug"

    def discover(self) -> list[ServiceSpec]:
        return {}["no such key"]
'''


def test_debug_shows_a_provider_bug_and_errors_win_over_pending_changes(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = inventory(tmp_path)
    config.write_text(CONFIG + "  - {name: buggy, provider: buggy}\n")
    env = fake_dist(tmp_path / "site", "endpoints-sync-buggy", {"buggy": "buggy:BuggyProvider"},
                    {"buggy": BUGGY_PLUGIN})
    result = cli("--log-level", "debug", "plan", "-c", config, "--kubeconfig", kubeconfig,
                 "--exit-code", "--log-format", "json", env=env)
    assert result.returncode == 1, result.stderr  # changes are pending, but a source failed
    assert "! source buggy failed: KeyError: 'no such key'" in result.stdout
    assert "+ create Service storage/ocs-external-rgw-lb" in result.stdout
    lines = json_lines(result.stderr)
    (failed,) = [line for line in lines if line.get("event") == "source_failed"]
    assert (failed["level"], failed["source"]) == ("error", "buggy")
    (bug,) = [line for line in lines if "exc" in line]
    assert (bug["level"], bug["source"]) == ("debug", "buggy")
    assert bug["exc"].startswith("Traceback (most recent call last)")
    assert 'return {}["no such key"]' in bug["exc"]


@pytest.mark.usefixtures("restore_logging")
def test_dry_run_prints_the_same_json_plan(kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = inventory(tmp_path)
    assert main(["run", "-c", str(config), "--kubeconfig", str(kubeconfig), "--dry-run",
                 "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["created"] == len(doc["changes"]) == 4
    assert kube.write_requests() == []
