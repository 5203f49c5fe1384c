"""`write_concurrency`: how many Services a run writes at once (default 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncer.config import WRITE_CONCURRENCY
from tests.cli import cli
from tests.kubeapi import KubeApiServer

INVENTORY = "services:\n" + "".join(
    f"  - name: web-{i}\n    ports: [{{name: http, port: 80}}]\n"
    f"    endpoints: [{{address: 192.0.2.{10 + i}}}]\n" for i in range(5))


def _config(tmp_path: Path, line: str) -> Path:
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    config = tmp_path / "config.yaml"
    config.write_text(f"owner: w\nnamespace: default\n{line}sources:\n"
                      "  - {name: inv, provider: static, path: inventory.yaml}\n")
    return config


@pytest.mark.parametrize("value", ["0", "65", "'8'", "true", "1.5"])
def test_a_bad_write_concurrency_is_exit_2_naming_the_field(
        value: str, tmp_path: Path, kube: KubeApiServer, kubeconfig: Path) -> None:
    config = _config(tmp_path, f"write_concurrency: {value}\n")
    kube.reset_requests()
    result = cli("run", "-c", config, "--kubeconfig", kubeconfig)
    assert result.returncode == 2, result.stderr
    assert f"{config}: write_concurrency: " in result.stderr
    assert kube.requests == []


@pytest.mark.parametrize("line", ["write_concurrency: 1\n", ""])
def test_every_write_goes_out_one_at_a_time_or_by_default(
        line: str, tmp_path: Path, kube: KubeApiServer, kubeconfig: Path) -> None:
    result = cli("run", "-c", _config(tmp_path, line), "--kubeconfig", kubeconfig)
    assert result.returncode == 0, result.stderr
    created = [r for r in kube.write_requests() if r.method == "POST"]
    assert len(created) == 15  # 5 Services, each with an EndpointSlice and Endpoints
    assert "created=15 " in result.stderr


def test_the_default_is_eight() -> None:
    assert WRITE_CONCURRENCY == 8


@pytest.mark.parametrize(("line", "bound"), [("write_concurrency: 3\n", 3),
                                             ("write_concurrency: 1\n", 1),
                                             ("", WRITE_CONCURRENCY)])
def test_no_more_services_are_written_at_once_than_write_concurrency(
        line: str, bound: int, tmp_path: Path, kube: KubeApiServer, kubeconfig: Path) -> None:
    (tmp_path / "inventory.yaml").write_text("services:\n" + "".join(
        f"  - name: web-{i}\n    ports: [{{name: http, port: 80}}]\n"
        f"    endpoints: [{{address: 192.0.2.{10 + i}}}]\n" for i in range(12)))
    config = tmp_path / "config.yaml"
    config.write_text(f"owner: w\nnamespace: default\n{line}sources:\n"
                      "  - {name: inv, provider: static, path: inventory.yaml}\n")
    # Each Service's first write takes 0.15 s: the writes of different Services overlap.
    kube.inject_fault("POST", r"/services$", delay=0.15, times=12)
    result = cli("run", "-c", config, "--kubeconfig", kubeconfig)
    assert result.returncode == 0, result.stderr
    assert len(kube.write_requests()) == 36
    assert kube.peak_writes_in_flight == bound
