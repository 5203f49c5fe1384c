"""One run in-process, with the injectable resolver: DNS names in inventories."""

from __future__ import annotations

import socket
from pathlib import Path

from syncer.kube import Kube, connect
from syncer.run import load, sync
from tests.kubeapi import KubeApiServer

INVENTORY = """
services:
  - name: db
    ports: [{name: pg, port: 5432}]
    endpoints:
      - {address: db-1.example.internal}
      - {address: 192.0.2.5}
"""


class FakeResolver:
    def __init__(self, answers: dict[str, list[str]] | None) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def resolve(self, name: str) -> list[str]:
        self.asked.append(name)
        if self.answers is None:
            raise OSError(socket.EAI_NONAME, "Name or service not known")
        return self.answers[name]


def setup(tmp_path: Path) -> Path:
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    config = tmp_path / "config.yaml"
    config.write_text("owner: o\nnamespace: external\n"
                      "sources: [{name: inv, provider: static, path: inventory.yaml}]\n")
    return config


def addresses(kube: KubeApiServer) -> list[str]:
    ep = kube.get_object("Endpoints", "external", "db")
    assert ep is not None
    return [a["ip"] for s in ep["subsets"] for a in s.get("addresses", [])]


def test_names_resolve_to_every_address(kube: KubeApiServer, kubeconfig: Path,
                                        tmp_path: Path) -> None:
    config = setup(tmp_path)
    resolver = FakeResolver({"db-1.example.internal": ["192.0.2.7", "2001:db8::7"]})

    def client() -> Kube:
        return connect(str(kubeconfig))

    outcome = sync(load(str(config)), client, apply=True, resolver=resolver)
    assert outcome.exit_code == 0
    assert resolver.asked == ["db-1.example.internal"]
    assert addresses(kube) == ["192.0.2.5", "192.0.2.7", "2001:db8::7"]


def test_a_name_that_does_not_resolve_fails_the_source_and_changes_nothing(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = setup(tmp_path)

    def client() -> Kube:
        return connect(str(kubeconfig))

    sync(load(str(config)), client, apply=True,
         resolver=FakeResolver({"db-1.example.internal": ["192.0.2.7"]}))
    kube.reset_requests()
    outcome = sync(load(str(config)), client, apply=True, resolver=FakeResolver(None))
    assert outcome.exit_code == 1
    assert "cannot resolve 'db-1.example.internal'" in outcome.desired.failed_sources["inv"]
    assert kube.write_requests() == []
    assert addresses(kube) == ["192.0.2.5", "192.0.2.7"]


def test_hosts_map_answers_without_dns(tmp_path: Path) -> None:
    from syncer.resolve import SystemResolver

    resolver = SystemResolver({"DB-1.Example.Internal.": ["192.0.2.9"]})
    assert resolver.resolve("db-1.example.internal") == ["192.0.2.9"]


def test_one_name_that_does_not_exist_is_dropped_while_the_others_sync(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = setup(tmp_path)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(INVENTORY + "      - {address: db-2.example.internal}\n")

    class OneMissing(FakeResolver):
        def resolve(self, name: str) -> list[str]:
            if name == "db-1.example.internal":
                raise OSError(socket.EAI_NONAME, "Name or service not known")
            return ["192.0.2.8"]

    def client() -> Kube:
        return connect(str(kubeconfig))

    outcome = sync(load(str(config)), client, apply=True, resolver=OneMissing(None))
    assert outcome.exit_code == 0
    assert outcome.desired.failed_sources == {}
    assert addresses(kube) == ["192.0.2.5", "192.0.2.8"]


def test_a_dns_failure_other_than_no_such_name_fails_the_source(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    config = setup(tmp_path)
    (tmp_path / "inventory.yaml").write_text(
        INVENTORY + "      - {address: db-2.example.internal}\n")

    class Flaky(FakeResolver):
        def resolve(self, name: str) -> list[str]:
            if name == "db-1.example.internal":
                raise OSError(socket.EAI_AGAIN, "Temporary failure in name resolution")
            return ["192.0.2.8"]

    def client() -> Kube:
        return connect(str(kubeconfig))

    outcome = sync(load(str(config)), client, apply=True, resolver=Flaky(None))
    assert outcome.exit_code == 1
    assert "Temporary failure" in outcome.desired.failed_sources["inv"]
    assert kube.write_requests() == []
