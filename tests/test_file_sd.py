"""The file_sd provider: Prometheus target-group files (JSON/YAML, globs), and via the CLI."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from providers.file_sd import FileSdOptions, FileSdProvider, expand
from syncer.options import CONFIG_DIR
from syncer.plugin import (
    ConfigError,
    Discovery,
    PermanentSourceError,
    SourceContext,
    config_error_from,
)
from tests.cli import cli, exited, run_sync
from tests.kubeapi import KubeApiServer
from tests.specs import slice_endpoints


def provider(tmp_path: Path, **options: Any) -> FileSdProvider:
    opts = FileSdOptions.model_validate(options, context={CONFIG_DIR: tmp_path})
    return FileSdProvider(opts, SourceContext(source="files", config_file="c.yaml",
                                              field_path="sources[0]", config_dir=tmp_path))


def discover(tmp_path: Path, **options: Any) -> Discovery:
    return provider(tmp_path, **options).discover()


def by_name(found: Discovery) -> dict[str, list[tuple[str, int | None, str | None]]]:
    return {s.name: [(b.address, next(iter(b.ports.values()), None), b.zone)
                     for b in s.backends] for s in found.services}


def test_globs_read_json_and_yaml_files_and_zone_from_meta_filepath(tmp_path: Path) -> None:
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "a.json").write_text(json.dumps([
        {"targets": ["192.0.2.1:9100"], "labels": {"job": "node"}}]))
    (tmp_path / "targets" / "b.yaml").write_text(
        "- targets: ['192.0.2.2:9100', '[2001:db8::2]:9100']\n  labels: {job: node}\n"
        "- targets: ['192.0.2.3:8080']\n  labels: {job: web}\n")
    (tmp_path / "targets" / "ignored.txt").write_text("not matched")
    (tmp_path / "zone-b.yml").write_text("- targets: ['192.0.2.4:8080']\n  labels: {job: web}\n")

    found = discover(tmp_path, files=["targets/*.json", "targets/*.yaml", "zone-*.yml",
                                      "none-*.json"],
                     service_label="job", zone_label="__meta_filepath")

    assert by_name(found)["web"] == [("192.0.2.3", 8080, None), ("192.0.2.4", 8080, None)]
    assert [a for a, _, _ in by_name(found)["node"]] == ["192.0.2.1", "192.0.2.2",
                                                         "2001:db8::2"]
    assert found.kept == ()


def test_zone_from_a_label(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "t.json").write_text(json.dumps([
        {"targets": ["192.0.2.1:80"], "labels": {"__meta_zone": "eu-1a"}},
        {"targets": ["192.0.2.2:80"], "labels": {"__meta_zone": "not a zone!"}}]))
    caplog.set_level(logging.WARNING)
    found = discover(tmp_path, files=["t.json"], service="web", zone_label="__meta_zone")
    assert by_name(found) == {"web": [("192.0.2.1", 80, "eu-1a"), ("192.0.2.2", 80, None)]}
    assert "source 'files': target group t.json[1]: zone left unset" in caplog.text


def test_expand_resolves_relative_patterns_sorted_and_once(tmp_path: Path) -> None:
    for name in ("b.json", "a.json"):
        (tmp_path / name).write_text("[]")
    assert expand(("*.json", "a.json", str(tmp_path / "missing.json")), tmp_path) == [
        tmp_path / "a.json", tmp_path / "b.json", tmp_path / "missing.json"]


def test_a_glob_matching_nothing_is_an_empty_source(tmp_path: Path) -> None:
    assert discover(tmp_path, files=["sd/*.json"], service_label="job") == Discovery()


@pytest.mark.parametrize(("name", "text", "message"), [
    ("t.json", '[{"targets": ["192.0.2.1:80"]', r"t\.json: line 1, column \d+: invalid JSON"),
    ("t.yaml", "- targets: [192.0.2.1:80\n", r"t\.yaml: line \d+, column \d+: invalid YAML"),
    ("t.yaml", "", r"t\.yaml: the file is empty"),
    ("t.json", '{"targets": []}', r"t\.json: expected a list of target groups, got a mapping"),
    ("t.yaml", "- targets: []\n  label: {job: x}\n",
     r"t\.yaml: \[0\]\.label: unknown key \(expected targets, labels\)"),
    ("t.yaml", "- targets: []\n  labels: {port: 80}\n",
     r"t\.yaml: \[0\]\.labels\.port: label values must be strings"),
    ("missing.json", None, r"missing\.json: file not found"),
])
def test_a_broken_file_fails_the_source_and_validate(tmp_path: Path, name: str,
                                                     text: str | None, message: str) -> None:
    if text is not None:
        (tmp_path / name).write_text(text)
    p = provider(tmp_path, files=[name], service_label="job")
    with pytest.raises(PermanentSourceError, match=message) as e:
        p.discover()
    assert str(tmp_path / name) in str(e.value)
    with pytest.raises(ConfigError, match=message):
        p.check()


@pytest.mark.parametrize(("files", "expected"), [
    ([], r"sources\[0\]\.files: expected at least 1"),
    (["t.txt"], r"sources\[0\]\.files: files\[0\]: expected a \.json, \.yml or \.yaml file"),
    (["*/t.json"], r"files\[0\]: a glob is allowed in the file name only"),
    ([""], r"files\[0\]: expected a file path or glob"),
])
def test_file_patterns_are_checked(tmp_path: Path, files: list[str], expected: str) -> None:
    with pytest.raises(ValidationError) as e:
        FileSdOptions.model_validate({"files": files, "service_label": "job"})
    message = str(config_error_from("c.yaml", e.value, prefix="sources[0]"))
    assert re.search(expected, message), message


# --- end to end ---------------------------------------------------------------------------


def addresses(kube: KubeApiServer, service: str) -> set[str]:
    return slice_endpoints(kube.list_objects("EndpointSlice", "external"), service)


def test_cli_sync_then_a_broken_file_keeps_the_cluster(kube: KubeApiServer, kubeconfig: Path,
                                                      tmp_path: Path) -> None:
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "node.json").write_text(json.dumps([
        {"targets": ["192.0.2.10:9100", "192.0.2.11:9100"], "labels": {"job": "node"}}]))
    (sd / "web.yaml").write_text("- targets: ['192.0.2.20:8080']\n  labels: {job: web}\n")
    config = tmp_path / "config.yaml"
    config.write_text("owner: cluster-a\nnamespace: external\nsources:\n"
                      "  - {name: prom, provider: file_sd, files: ['sd/*.json', 'sd/*.yaml'], "
                      "service_label: job}\n")
    exited(cli("validate", "-c", config), 0)
    exited(run_sync(config, kubeconfig), 0)
    assert addresses(kube, "node") == {"192.0.2.10:9100", "192.0.2.11:9100"}
    assert addresses(kube, "web") == {"192.0.2.20:8080"}

    # Half-written by the system that feeds it: exit 1, nothing written.
    (sd / "web.yaml").write_text("- targets: ['192.0.2.21:8080'\n")
    kube.reset_requests()
    err = exited(run_sync(config, kubeconfig), 1)
    assert "source 'prom': failed, its Services are left as they are" in err
    assert "web.yaml: line" in err
    assert kube.write_requests() == []
    assert addresses(kube, "web") == {"192.0.2.20:8080"}
    assert addresses(kube, "node") == {"192.0.2.10:9100", "192.0.2.11:9100"}
    # `validate` reads the files too: the broken one is named (exit 2).
    err = exited(cli("validate", "-c", config), 2)
    assert "web.yaml: line" in err
