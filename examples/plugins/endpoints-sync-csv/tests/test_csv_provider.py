"""The csv provider in-process: the port rule, dropped rows, unusable files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from endpoints_sync_csv import CsvOptions, CsvProvider

from syncer.plugin import Backend, ConfigError, Discovery, Kept, ServicePort, SourceContext


def discover(tmp_path: Path, csv: str, **options: object) -> Discovery:
    (tmp_path / "inventory.csv").write_text(csv)
    provider = CsvProvider(CsvOptions.model_validate({"path": "inventory.csv", **options},
                                                     context={"config_dir": tmp_path}),
                           SourceContext(source="inv", config_file="config.yaml",
                                         field_path="sources[0]", config_dir=tmp_path))
    return provider.discover()


def test_the_rows_port_unless_the_port_option_wins_and_disagreement_is_kept(
        tmp_path: Path) -> None:
    rows = ("service,address,port\nweb,192.0.2.1,8080\nweb,192.0.2.2,8081\n"
            "db,198.51.100.1,5432\n")
    found = discover(tmp_path, rows)
    assert [(s.name, s.ports) for s in found.services] == [("db", (ServicePort("", 5432),))]
    assert found.kept == (Kept("web", "its backends listen on ports 8080, 8081; set `port` to "
                                      "choose the Service port (each backend keeps its own)"),)

    found = discover(tmp_path, rows, port=80)
    web = found.services[1]
    assert (web.name, web.ports, found.kept) == ("web", (ServicePort("", 80),), ())
    assert web.backends == (Backend("192.0.2.1", {"": 8080}), Backend("192.0.2.2", {"": 8081}))


def test_unusable_rows_are_dropped_with_a_warning_and_the_rest_is_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = ("service, address, port, zone\n"
            "web, 192.0.2.1, 80, zone-a\n"
            "web, 192.0.2.01, 80\n"        # not strictly an IP address
            "web, 192.0.2.3, http\n"
            "web, 192.0.2.4, 65536\n"
            "web, 2001:DB8:0::5, 80\n")    # valid, written in its canonical form
    with caplog.at_level(logging.WARNING):
        found = discover(tmp_path, rows)
    assert [b.address for b in found.services[0].backends] == ["192.0.2.1", "2001:db8::5"]
    assert found.services[0].backends[0].zone == "zone-a"
    dropped = [(r.getMessage(), getattr(r, "source", None)) for r in caplog.records]
    assert dropped == [(f"line {n} dropped: no IP address or a bad port", "inv")
                       for n in (3, 4, 5)]


@pytest.mark.parametrize(("content", "message"), [
    (None, "unusable CSV file: [Errno 2] No such file or directory"),
    ("name,ip\nweb,192.0.2.1\n", "unusable CSV file: the header must name the columns service "
                                 "and address"),
    ("service,address\n\xff\n".encode("latin-1"), "unusable CSV file: 'utf-8' codec can't"),
], ids=["missing", "wrong-header", "not-utf-8"])
def test_an_unusable_file_is_a_config_error_naming_the_path_option(
        tmp_path: Path, content: str | bytes | None, message: str) -> None:
    provider = CsvProvider(CsvOptions(path=tmp_path / "inventory.csv"),
                           SourceContext(source="inv", config_file="config.yaml",
                                         field_path="sources[0]"))
    if isinstance(content, str):
        (tmp_path / "inventory.csv").write_text(content)
    elif content is not None:
        (tmp_path / "inventory.csv").write_bytes(content)
    with pytest.raises(ConfigError) as e:
        provider.check()
    assert (e.value.file, e.value.field) == ("config.yaml", "sources[0].path")
    assert e.value.message.startswith(message)
