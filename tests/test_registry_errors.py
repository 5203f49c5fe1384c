"""Every way a provider plugin can be unusable is a clear exit-2 error, from `validate` and
`run` alike, before anything is contacted.

Third-party plugins are fake distributions made at test time (a `*.dist-info` folder with
METADATA and entry_points.txt, plus the module) on the CLI subprocess's PYTHONPATH: found
through the entry-point group exactly as an installed package is. Nothing is installed.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.cli import cli
from tests.kubeapi import KubeApiServer

GOOD_PLUGIN = '''
from syncer.plugin import PortNumber, Provider, ProviderOptions, Secret, ServiceSpec


class FakeOptions(ProviderOptions):
    port: PortNumber = 8080
    """The port every Service gets."""
    token: Secret | None = None
    """An API token (never shown)."""
    labels_from: list[str] | None = None


class FakeProvider(Provider[FakeOptions]):
    Options = FakeOptions
    summary = "Nothing at all, for tests"

    def discover(self) -> list[ServiceSpec]:
        return []
'''


def fake_dist(root: Path, dist: str, entry_points: dict[str, str],
              modules: dict[str, str] | None = None) -> dict[str, str]:
    """A distribution `dist` 1.0 registering `entry_points` (name -> module:attr) under
    endpoints_sync.providers, with its `modules` (name -> source). Returns the env that puts
    everything made in `root` on the CLI's path."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[endpoints_sync.providers]\n{lines}")
    for module, source in (modules or {}).items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    return {"PYTHONPATH": str(root)}


def config_for(tmp_path: Path, provider: str, options: str = "") -> Path:
    (tmp_path / "inventory.yaml").write_text("services: []\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"sources:\n  - {{name: src, provider: {provider}{options}}}\n")
    return config


def refused_by_validate_and_run(config: Path, kube: KubeApiServer, tmp_path: Path,
                                env: dict[str, str]) -> list[str]:
    """Both commands exit 2 without contacting the cluster; their stderr."""
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
    errors = []
    commands: list[list[str | Path]] = [["validate", "-c", config],
                                        ["run", "-c", config, "--kubeconfig", kubeconfig]]
    for args in commands:
        result = cli(*args, env=env)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
        errors.append(result.stderr)
    assert kube.requests == []
    assert errors[0].split("error ", 1)[1] == errors[1].split("error ", 1)[1]  # one message
    return errors


def test_a_plugin_that_fails_to_import(kube: KubeApiServer, tmp_path: Path) -> None:
    env = fake_dist(tmp_path / "site", "shiny-plugin", {"shiny": "shiny_plugin:ShinyProvider"},
                    {"shiny_plugin": "import no_such_library_anywhere\n"})
    for err in refused_by_validate_and_run(config_for(tmp_path, "shiny"), kube, tmp_path, env):
        assert f"{tmp_path / 'config.yaml'}: sources[0].provider: " in err
        assert "provider 'shiny' (shiny_plugin:ShinyProvider, from shiny-plugin) failed to " \
               "import: ModuleNotFoundError: No module named 'no_such_library_anywhere'" in err


def test_two_distributions_registering_one_name(kube: KubeApiServer, tmp_path: Path) -> None:
    # A third party claiming a built-in's name: neither is picked silently.
    env = fake_dist(tmp_path / "site", "rival-static", {"static": "rival:FakeProvider"},
                    {"rival": GOOD_PLUGIN})
    config = config_for(tmp_path, "static", ", path: inventory.yaml")
    for err in refused_by_validate_and_run(config, kube, tmp_path, env):
        assert "sources[0].provider: provider 'static' is registered by several " \
               "distributions: " in err
        assert "endpoints-sync (providers.static:StaticProvider)" in err
        assert "rival-static (rival:FakeProvider)" in err
        assert "uninstall all but one" in err


def test_an_entry_point_that_is_not_a_provider(kube: KubeApiServer, tmp_path: Path) -> None:
    env = fake_dist(tmp_path / "site", "odd-plugin", {"odd": "odd_plugin:make"},
                    {"odd_plugin": "def make():\n    return None\n"})
    for err in refused_by_validate_and_run(config_for(tmp_path, "odd"), kube, tmp_path, env):
        assert "provider 'odd': entry point odd_plugin:make (from odd-plugin) is not a " \
               "syncer.plugin.Provider subclass" in err


BROKEN_CONTRACTS = {
    # Caught when the class is defined (Provider.__init_subclass__).
    "core_key": ("""
        from syncer.plugin import Provider, ProviderOptions

        class Options(ProviderOptions):
            namespace: str = "x"

        class Broken(Provider[Options]):
            Options = Options
            summary = "broken"

            def discover(self):
                return []
        """, "Options declares 'namespace', which the core handles for every source"),
    "no_summary": ("""
        from syncer.plugin import Provider, ProviderOptions

        class Options(ProviderOptions):
            pass

        class Broken(Provider[Options]):
            Options = Options

            def discover(self):
                return []
        """, "set `summary` to one line saying what the provider discovers"),
    # Declared abstract (skipping the definition check) yet registered: the registry checks.
    "abstract": ("""
        from syncer.plugin import Provider, ProviderOptions

        class Options(ProviderOptions):
            pass

        class Broken(Provider[Options], abstract=True):
            Options = Options
            summary = "half made"
        """, "provider 'broken' (broken_plugin:Broken): implement discover()"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_CONTRACTS))
def test_a_provider_class_that_breaks_the_contract(case: str, kube: KubeApiServer,
                                                   tmp_path: Path) -> None:
    source, expected = BROKEN_CONTRACTS[case]
    env = fake_dist(tmp_path / "site", "broken-plugin", {"broken": "broken_plugin:Broken"},
                    {"broken_plugin": source})
    for err in refused_by_validate_and_run(config_for(tmp_path, "broken"), kube, tmp_path,
                                           env):
        assert "sources[0].provider: provider 'broken'" in err
        assert expected in err


def test_an_unknown_provider_lists_the_installed_ones(kube: KubeApiServer,
                                                      tmp_path: Path) -> None:
    env = fake_dist(tmp_path / "site", "fake-plugin", {"fake": "fake_plugin:FakeProvider"},
                    {"fake_plugin": GOOD_PLUGIN})
    for err in refused_by_validate_and_run(config_for(tmp_path, "nope"), kube, tmp_path, env):
        listed = err.split("unknown provider 'nope'; installed providers: ", 1)[1].split()
        names = {n.strip(",") for n in listed}
        assert {"static", "consul", "aws_ec2", "aws_rds", "fake"} <= names


def test_a_third_party_missing_optional_dependency(kube: KubeApiServer, tmp_path: Path) -> None:
    plugin = GOOD_PLUGIN.replace('summary = "Nothing at all, for tests"',
                                 'summary = "x"\n    optional_imports = {"fancylib_xyz": "fancy"}')
    env = fake_dist(tmp_path / "site", "fancy-plugin", {"fancy": "fancy_plugin:FakeProvider"},
                    {"fancy_plugin": plugin})
    for err in refused_by_validate_and_run(config_for(tmp_path, "fancy"), kube, tmp_path, env):
        assert "the fancy provider needs the 'fancylib_xyz' package, which is not installed: " \
               "pip install 'fancy-plugin[fancy]'" in err


def test_a_built_in_missing_optional_dependency(kube: KubeApiServer, tmp_path: Path) -> None:
    # As if py-consul were not installed: `import consul` fails and find_spec finds nothing.
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['consul'] = None\n")
    config = config_for(tmp_path, "consul", ", url: 'http://127.0.0.1:1'")
    env = {"PYTHONPATH": str(shim)}
    for err in refused_by_validate_and_run(config, kube, tmp_path, env):
        assert "sources[0].provider: the consul provider needs the 'consul' package, which " \
               "is not installed: pip install 'endpoints-sync[consul]'" in err


def test_a_broken_plugin_does_not_break_other_sources_configs(tmp_path: Path) -> None:
    # Only the providers a configuration names are loaded.
    env = fake_dist(tmp_path / "site", "shiny-plugin", {"shiny": "shiny_plugin:ShinyProvider"},
                    {"shiny_plugin": "raise RuntimeError('boom at import')\n"})
    result = cli("validate", "-c", config_for(tmp_path, "static", ", path: inventory.yaml"),
                 env=env)
    assert result.returncode == 0, result.stderr
    assert "OK: 1 source(s): src (static)" in result.stdout
