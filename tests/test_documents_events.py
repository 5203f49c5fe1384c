"""The YAML loader builds documents from libyaml's events (syncer.documents._Builder): the
same values PyYAML's safe loader builds, under the project's stricter scalars, and its
refusals where a document is wrong."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncer.documents import MAX_DEPTH, StrictLoader, load_document
from syncer.errors import ConfigError


class NodeLoader(yaml.CSafeLoader):
    """The reference: PyYAML's own way (a tree of nodes, then the values) with the project's
    core-schema resolvers, as syncer.documents loaded documents before the event builder."""

    yaml_implicit_resolvers = StrictLoader.yaml_implicit_resolvers


def reference(text: str) -> Any:
    return yaml.load(text, Loader=NodeLoader)

# Scalars of every kind the loader builds, dumped by PyYAML in its own styles.
SCALARS = (st.none() | st.booleans() | st.integers(-10**12, 10**12)
           | st.floats(allow_nan=False, allow_infinity=True, width=64)
           | st.text(max_size=12))
KEYS = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8)
DOCUMENTS = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(KEYS, inner, max_size=5), max_leaves=30)


def load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "doc.yaml"
    path.write_text(text)
    return load_document(path)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(doc=DOCUMENTS, flow=st.sampled_from([None, True, False]))
def test_what_pyyaml_dumps_loads_as_pyyaml_loads_it(doc: Any, flow: bool | None,
                                                     tmp_path: Path) -> None:
    text = yaml.safe_dump({"doc": doc}, default_flow_style=flow, allow_unicode=True)
    assert same(load(tmp_path, text), reference(text))


def test_shared_values_dumped_as_anchors_and_aliases_load_shared(tmp_path: Path) -> None:
    ports = [{"name": "http", "port": 80}]
    text = yaml.safe_dump({"a": {"ports": ports}, "b": {"ports": ports}})
    assert "&id001" in text and "*id001" in text
    loaded = load(tmp_path, text)
    assert loaded == {"a": {"ports": ports}, "b": {"ports": ports}}
    assert loaded["a"]["ports"] is loaded["b"]["ports"]


def test_merge_keys_the_first_listed_wins_own_keys_win_over_all(tmp_path: Path) -> None:
    text = ("x: &x {a: 1, b: 1}\ny: &y {b: 2, c: 2}\n"
            "z: {<<: [*x, *y], c: 3, d: 3}\nw: {<<: *y}\n")
    loaded, pyyaml = load(tmp_path, text), reference(text)
    assert loaded["z"] == {"a": 1, "b": 1, "c": 3, "d": 3}
    assert loaded["w"] == {"b": 2, "c": 2}
    assert same(loaded, pyyaml)  # keys in PyYAML's order too


@pytest.mark.parametrize(("text", "where", "fragment"), [
    ("a: 1\nb: 2\na: 3\n", "line 3, column 1", "duplicate key 'a' (first at line 1)"),
    ("a: *nope\n", "line 1, column 4", "found undefined alias 'nope'"),
    ("a: &x 1\nb: &x 2\n", "line 2, column 4", "second occurrence"),
    ("a: !!python/name:os.system x\n", "line 1, column 4", "could not determine a constructor"),
    ("a: !!map x\n", "line 1, column 4", "expected a mapping node, but found scalar"),
    ("a: !!str {b: 1}\n", "line 1, column 4", "expected a scalar node, but found mapping"),
    ("a: !!int 0x10\n", "line 1, column 4", "expected a decimal integer, got '0x10'"),
    ("? [1, 2]\n: x\n", "line 1, column 3", "found unhashable key"),
    ("a: <<\n", "line 1, column 4", "could not determine a constructor"),
    ("a: 1\n---\nb: 2\n", "line 2, column 1", "but found another document"),
    ("a: &r [*r]\n", "line 1, column 4", f"nested deeper than {MAX_DEPTH} levels"),
    ("x: {<<: [{a: 1}, 2]}\n", "line 1, column 18", "expected a mapping for merging"),
])
def test_wrong_documents_are_refused_where_they_are_wrong(
        text: str, where: str, fragment: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert f": {where}: " in str(info.value) and fragment in str(info.value)


def test_nesting_through_aliases_counts(tmp_path: Path) -> None:
    deep = "[" * 40 + "]" * 40
    assert load(tmp_path, f"a: &d {deep}\nb: [*d]\n")["b"]  # 41 levels: fine
    with pytest.raises(ConfigError, match=f"nested deeper than {MAX_DEPTH} levels"):
        load(tmp_path, f"a: &d {deep}\nb: {'[' * 30}*d{']' * 30}\n")  # 71 levels


def test_billion_laughs_are_refused_by_the_expansion_budget(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    with pytest.raises(ConfigError, match="aliases expand the document to"):
        load(tmp_path, "\n".join(lines) + "\n")
