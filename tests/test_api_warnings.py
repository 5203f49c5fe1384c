"""The API server's `Warning` headers: each distinct one logged once per run, not per object
(Kubernetes 1.33+ answers every Endpoints write with a deprecation warning)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from urllib3 import HTTPHeaderDict

from syncer.kube import Kube, api_warnings, connect
from syncer.run import load, sync
from tests.kubeapi import KubeApiServer

DEPRECATED = "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"


def write(tmp: Path, last_octet: int, write_kinds: str = "") -> Path:
    services = [{"name": f"svc-{i}", "ports": [{"port": 80}],
                 "endpoints": [{"address": f"192.0.2.{last_octet}"}]} for i in range(20)]
    (tmp / "inventory.yaml").write_text(yaml.safe_dump({"services": services}))
    config = tmp / "config.yaml"
    config.write_text(f"owner: o\nnamespace: external\n{write_kinds}"
                      "sources: [{name: inv, provider: static, path: inventory.yaml}]\n")
    return config


def run(config: Path, kubeconfig: Path) -> int:
    def client() -> Kube:
        return connect(str(kubeconfig))

    return sync(load(str(config)), client, apply=True).exit_code


def warned(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "the API server warns" in r.getMessage()]


def test_twenty_endpoints_writes_give_one_warning_line_per_run(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    kube.endpoints_warning = True
    assert run(write(tmp_path, 5), kubeconfig) == 0
    assert len(kube.requests_matching("POST", r"/api/v1/namespaces/external/endpoints$")) == 20
    (line,) = warned(caplog)
    assert line.startswith(f"the API server warns: {DEPRECATED}; once nothing in the cluster "
                           "reads v1 Endpoints, set `write: [endpointslices]`")
    caplog.clear()
    assert run(write(tmp_path, 6), kubeconfig) == 0  # 20 updates: a new run says it again
    assert len(kube.requests_matching("PUT", r"/endpoints/")) == 20
    assert len(warned(caplog)) == 1


def test_no_warning_when_the_server_sends_none_or_no_endpoints_are_written(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    assert run(write(tmp_path, 5), kubeconfig) == 0
    assert warned(caplog) == []
    kube.endpoints_warning = True
    assert run(write(tmp_path, 6, "write: [endpointslices]\n"), kubeconfig) == 0
    assert kube.requests_matching("PUT", r"/endpoints/") == []
    assert kube.list_objects("Endpoints", "external") == []  # the old ones were deleted
    assert warned(caplog) == []


def test_warning_headers_are_parsed_as_rfc_9111_warning_values() -> None:
    headers = HTTPHeaderDict()
    headers.add("Warning", f'299 - "{DEPRECATED}"')
    headers.add("Warning", '299 - "a \\"quoted\\" word, and a comma", 299 - "second"')
    headers.add("Warning", '299 kube-apiserver "dated" "Mon, 01 Jan 2024 00:00:00 GMT"')
    assert api_warnings(headers) == [DEPRECATED, 'a "quoted" word, and a comma', "second",
                                     "dated"]
    assert api_warnings(HTTPHeaderDict()) == []
