"""Reading YAML/JSON documents, and pydantic errors as ConfigErrors naming file and field."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import ValidationError

from syncer.errors import ConfigError

try:  # the C loader is several times faster on large inventories
    from yaml import CSafeLoader as YamlLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as YamlLoader  # type: ignore[assignment]

SECRET_WORDS = ("token", "secret", "password", "credential")

# Bounds on every configuration and inventory file. 128 MiB leaves room for a 50 MB inventory
# (about a million endpoints) while refusing /dev/zero-like inputs before they are read.
MAX_DOCUMENT_BYTES = 128 * 1024 * 1024
# Real documents nest about 8 levels (services[].endpoints[].ports.http); libyaml stops at 1000.
MAX_DEPTH = 64
# Alias expansion budget: the larger of this and NODE_BUDGET_FACTOR x the document's own nodes.
MIN_NODE_BUDGET = 1_000_000
NODE_BUDGET_FACTOR = 10
# No port, count or id needs more; a thousand-digit number is a mistake or an attack.
MAX_INT_DIGITS = 100

STDIN = "-"
"""The path that means standard input (`-c -`), shown in messages as STDIN_NAME."""
STDIN_NAME = "<stdin>"


def document_name(path: str | Path) -> str:
    """How messages name a document: its path, or `<stdin>`."""
    return STDIN_NAME if str(path) == STDIN else str(path)


def field_path(loc: Sequence[int | str]) -> str:
    """Pydantic's error location as a config path: ('sources', 1, 'region') -> sources[1].region."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def config_error_from(file: str, e: ValidationError, prefix: str = "") -> ConfigError:
    """A ConfigError for every problem pydantic found, the first one first."""
    errors = e.errors(include_url=False)
    # A list whose item failed also reports itself too short: the item is the news.
    errors = [x for x in errors if x["type"] != "too_short"] or errors
    problems = [_describe(err) for err in errors]
    problems = [(f"{prefix}{f}" if f.startswith("[") else f"{prefix}.{f}" if prefix and f
                 else prefix or f, m) for f, m in problems]
    field, msg = problems[0]
    error = ConfigError(file, field, msg)
    if len(problems) > 1:
        rest = "\n".join(f"{file}: {f}: {m}" for f, m in problems[1:])
        error.args = (f"{error.args[0]}\n{rest}",)
    return error


def _describe(err: Any) -> tuple[str, str]:
    loc = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif err["type"] == "too_short":
        msg = f"expected at least {err.get('ctx', {}).get('min_length', 1)} item(s)"
    elif "input" in err and err["type"] not in ("value_error",) and not _secret(err["loc"]):
        msg = f"{msg} (got {_short(err['input'])})"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return field_path(loc), msg


def _secret(loc: Sequence[int | str]) -> bool:
    """Never echo what was given for a field that may hold a secret."""
    return any(isinstance(p, str) and any(w in p.lower() for w in SECRET_WORDS) for p in loc)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_document(path: Path) -> Any:
    """Read one YAML document (or JSON, when the name ends in .json) from a regular file, or
    from standard input when the path is STDIN.

    Every way the file can be wrong is a ConfigError naming it, found within a second or two
    and in memory bounded by MAX_DOCUMENT_BYTES: not a regular file (a FIFO is never opened
    for a blocking read), too large, not UTF-8, empty, bad syntax, a duplicate key, aliases
    expanding past the node budget, nesting past MAX_DEPTH, an integer of absurd length.
    """
    shown = document_name(path)
    if shown == STDIN_NAME:
        return _load_yaml(_read_stdin(), shown)  # JSON is YAML too, near enough for a config
    text = _read_text(path, shown)
    if path.suffix.lower() == ".json":
        return _load_json(text, shown)
    return _load_yaml(text, shown)


# --- reading the file ---------------------------------------------------------------------

def _read_text(path: Path, shown: str) -> str:
    try:
        # stat before open: opening a FIFO for reading would block until a writer comes.
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(shown, "", "file not found") from None
    except OSError as e:
        raise ConfigError(shown, "", _os_problem(e)) from None
    _check_kind(st, shown)
    try:
        # O_NONBLOCK: should the path become a FIFO between stat and open, open still returns.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(shown, "", _os_problem(e)) from None
    with os.fdopen(fd, "rb") as f:
        _check_kind(os.fstat(fd), shown)
        try:
            raw = f.read(MAX_DOCUMENT_BYTES + 1)
        except OSError as e:
            raise ConfigError(shown, "", _os_problem(e)) from None
    return _decode(raw, shown)


def _read_stdin() -> str:
    stdin = sys.stdin
    if stdin is None or stdin.closed:
        raise ConfigError(STDIN_NAME, "", "standard input is closed; pipe the configuration in")
    if stdin.isatty():  # waiting for a person to type YAML would look like a hang
        raise ConfigError(STDIN_NAME, "", "standard input is a terminal; pipe the "
                          "configuration in (endpoints-sync plan -c - < config.yaml)")
    try:
        raw = stdin.buffer.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as e:
        raise ConfigError(STDIN_NAME, "", _os_problem(e)) from None
    return _decode(raw, STDIN_NAME)


def _decode(raw: bytes, shown: str) -> str:
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise ConfigError(shown, "", _too_large(len(raw)))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(shown, f"line {line}", f"not UTF-8 text (byte {e.start} cannot be "
                          "decoded); expected a YAML or JSON text file") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise ConfigError(shown, "", "standard input is empty" if shown == STDIN_NAME
                          else "the file is empty")
    return text


def _check_kind(st: os.stat_result, shown: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(shown, "", "is a directory; expected a file")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(shown, "", "is not a regular file (a FIFO, device or socket); "
                          "expected a file")
    if st.st_size > MAX_DOCUMENT_BYTES:
        raise ConfigError(shown, "", _too_large(st.st_size))


def _too_large(size: int) -> str:
    return (f"the file is {size:,} bytes; the limit is {MAX_DOCUMENT_BYTES:,} bytes "
            f"({MAX_DOCUMENT_BYTES >> 20} MiB)")


def _os_problem(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "cannot read the file: a symlink loop"
    if isinstance(e, PermissionError):
        return "cannot read the file: permission denied"
    return f"cannot read the file: {e.strerror or e}"


# --- YAML ---------------------------------------------------------------------------------

_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
                    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")
_BOOL = re.compile(r"true|True|TRUE|false|False|FALSE")
_NULL = re.compile(r"~|null|Null|NULL|")
_MERGE = "tag:yaml.org,2002:merge"


class _Refused(yaml.MarkedYAMLError):
    """A document that parses but is refused; `problem` is the whole message."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class StrictLoader(YamlLoader):
    """The safe loader (C-accelerated where available) with YAML 1.2 core-schema scalars,
    stricter still: what is not written as a decimal int, a float, true/false or null is a
    string (no octal 0120, sexagesimal 1:20, yes/no/on/off, dates), only the core tags are
    known, and a document is measured before it is built (duplicate keys, depth, aliases).
    The C parser calls these Python resolvers and constructors, so it keeps its speed."""

    # Own, empty tables: add_* below would otherwise start from YAML 1.1's.
    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}  # noqa: RUF012
    yaml_constructors: ClassVar[dict[Any, Any]] = {}

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _measure(node)
        return self.construct_document(node)

    def construct_strict_int(self, node: yaml.ScalarNode) -> int:
        value = str(self.construct_scalar(node))
        if len(value) > MAX_INT_DIGITS:
            raise _Refused(f"an integer of {len(value):,} digits; at most {MAX_INT_DIGITS} "
                           "are accepted", node.start_mark)
        if not _INT.fullmatch(value):
            raise _Refused(f"expected a decimal integer, got {_short(value)}", node.start_mark)
        return int(value)

    def construct_strict_float(self, node: yaml.ScalarNode) -> float:
        value = str(self.construct_scalar(node))
        if not (_FLOAT.fullmatch(value) or _INT.fullmatch(value)):
            raise _Refused(f"expected a decimal number, got {_short(value)}", node.start_mark)
        return float(value.lower().replace(".inf", "inf").replace(".nan", "nan"))

    def construct_strict_bool(self, node: yaml.ScalarNode) -> bool:
        value = str(self.construct_scalar(node))
        if not _BOOL.fullmatch(value):
            raise _Refused(f"expected true or false, got {_short(value)}", node.start_mark)
        return value.lower() == "true"


for _tag, _pattern, _first in (
        ("tag:yaml.org,2002:bool", _BOOL, "tTfF"),
        ("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""]),
        ("tag:yaml.org,2002:int", _INT, "-+0123456789"),
        ("tag:yaml.org,2002:float", _FLOAT, "-+0123456789."),
        (_MERGE, re.compile(r"<<"), "<")):
    # Anchored: the resolver uses re.match, which would accept any prefix.
    StrictLoader.add_implicit_resolver(_tag, re.compile(f"(?:{_pattern.pattern})\\Z"),
                                       list(_first))
for _tag, _build in (
        ("tag:yaml.org,2002:null", yaml.SafeLoader.construct_yaml_null),
        ("tag:yaml.org,2002:bool", StrictLoader.construct_strict_bool),
        ("tag:yaml.org,2002:int", StrictLoader.construct_strict_int),
        ("tag:yaml.org,2002:float", StrictLoader.construct_strict_float),
        ("tag:yaml.org,2002:str", yaml.SafeLoader.construct_yaml_str),
        ("tag:yaml.org,2002:seq", yaml.SafeLoader.construct_yaml_seq),
        ("tag:yaml.org,2002:map", yaml.SafeLoader.construct_yaml_map)):
    StrictLoader.add_constructor(_tag, _build)
# Any other tag (!!python/object, !!timestamp, !!binary, !custom) is refused.
StrictLoader.add_constructor(None, yaml.SafeLoader.construct_undefined)  # type: ignore[type-var]


def _load_yaml(text: str, shown: str) -> Any:
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        code = e.character if isinstance(e.character, int) else ord(e.character[:1])
        raise ConfigError(shown, f"line {line}", f"invalid YAML: unacceptable character "
                          f"#x{code:04x}: {e.reason}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = _clip(str(getattr(e, "problem", None) or e))
        if mark and "tab" not in problem and _char_at(text, mark.line, mark.column) == "\t":
            problem += " (a tab: YAML is indented with spaces)"
        message = problem if isinstance(e, _Refused) else f"invalid YAML: {problem}"
        raise ConfigError(shown, where, message) from None
    except RecursionError:  # the pure-Python parser, where libyaml is missing
        raise ConfigError(shown, "", f"nested deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def _char_at(text: str, line: int, column: int) -> str:
    lines = text.split("\n", line + 1)
    return lines[line][column:column + 1] if line < len(lines) else ""


def _measure(root: yaml.Node) -> None:
    """Refuse a composed document before it is built: a duplicate key, nesting deeper than
    MAX_DEPTH (a recursive alias nests forever), or aliases expanding past the node budget
    (the "billion laughs": the built objects share memory, but whatever walks them later does
    not). Breadth-first over the collection nodes, counting the paths that reach each one, so
    the cost is at most MAX_DEPTH passes over the real document, whatever the aliases."""
    level: dict[int, tuple[yaml.Node, int]] = {id(root): (root, 1)}
    seen: set[int] = set()
    expanded = distinct = depth = 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            node = next(iter(level.values()))[0]
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels (aliases included)",
                           node.start_mark)
        below: dict[int, tuple[yaml.Node, int]] = {}
        for key, (node, paths) in level.items():
            if isinstance(node, yaml.MappingNode):
                children: list[yaml.Node] = [n for pair in node.value for n in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = node.value
            else:  # a scalar document
                children = []
            if key not in seen:
                seen.add(key)
                distinct += 1 + len(children)
                if isinstance(node, yaml.MappingNode):
                    _check_keys(node)
            expanded += paths
            for child in children:
                if isinstance(child, yaml.ScalarNode):
                    expanded += paths
                else:
                    before = below.get(id(child))
                    below[id(child)] = (child, paths + (before[1] if before else 0))
        level = below
    budget = max(MIN_NODE_BUDGET, NODE_BUDGET_FACTOR * distinct)
    if expanded > budget:
        raise _Refused(f"aliases expand the document to {expanded:,} nodes; the limit "
                       f"is {budget:,}", root.start_mark)


def _check_keys(node: yaml.MappingNode) -> None:
    """Duplicate keys are mistakes, not "last one wins". Keys merged in with `<<` may be
    overridden; only the mapping's own keys count."""
    values = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
    if len(set(values)) == len(values):
        return  # the common case, at C speed
    first: dict[tuple[str, str], int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        key = (key_node.tag, key_node.value)
        if key in first:
            raise _Refused(f"duplicate key {_short(key_node.value)} (first at line "
                           f"{first[key] + 1})", key_node.start_mark)
        first[key] = key_node.start_mark.line


# --- JSON ---------------------------------------------------------------------------------

class _JsonRefused(ValueError):
    pass


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _JsonRefused(f"duplicate key {_short(k)}")
            seen.add(k)
    return out


def _json_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise _JsonRefused(f"an integer of {len(text):,} digits; at most {MAX_INT_DIGITS} "
                           "are accepted")
    return int(text)


def _load_json(text: str, shown: str) -> Any:
    try:
        data = json.loads(text, object_pairs_hook=_json_object, parse_int=_json_int)
    except json.JSONDecodeError as e:
        raise ConfigError(shown, f"line {e.lineno}, column {e.colno}",
                          f"invalid JSON: {e.msg}") from None
    except _JsonRefused as e:
        raise ConfigError(shown, "", str(e)) from None
    except RecursionError:
        raise ConfigError(shown, "", f"nested deeper than {MAX_DEPTH} levels") from None
    if _json_depth(data) > MAX_DEPTH:
        raise ConfigError(shown, "", f"nested deeper than {MAX_DEPTH} levels")
    return data


def _json_depth(data: Any) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values()
                         if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))
    return deepest


def _clip(text: str, limit: int = 120) -> str:
    """A parser's message may quote the input (a tag, an alias): never more than a line."""
    return text if len(text) <= limit else text[:limit - 3] + "..."
