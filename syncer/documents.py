"""Reading YAML/JSON documents, and pydantic errors as ConfigErrors naming file and field."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def folder_of(path: str | Path) -> Path:
    """The folder a document's relative paths resolve against: its own (symlinks resolved,
    as a ConfigMap mount's are), or the working directory for standard input."""
    return Path.cwd() if str(path) == STDIN else Path(path).resolve().parent


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
_STR, _SEQ, _MAP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"


class _Refused(yaml.MarkedYAMLError):
    """A document that parses but is refused; `problem` is the whole message."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class StrictLoader(YamlLoader):
    """libyaml's parser (the C one where available) with YAML 1.2 core-schema scalars,
    stricter still: what is not written as a decimal int, a float, true/false or null is a
    string (no octal 0120, sexagesimal 1:20, yes/no/on/off, dates), and only the core tags
    are known. The document is built straight from the parser's events (`_Builder`), never
    as a tree of nodes first: a node and its two marks cost about ten times the built value
    (3.4 GB for a 50 MB inventory), and composing them was most of the reading time."""

    # Own, empty table: add_implicit_resolver below would otherwise start from YAML 1.1's.
    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}  # noqa: RUF012

    def get_single_data(self) -> Any:
        return _Builder(self).document()

    def resolve_plain(self, value: str) -> str:
        """The tag of a plain (unquoted) scalar without an explicit one."""
        for tag, pattern in self.yaml_implicit_resolvers.get(value[:1], ()):
            if pattern.match(value):
                return tag
        return _STR


for _tag, _pattern, _first in (
        ("tag:yaml.org,2002:bool", _BOOL, "tTfF"),
        ("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""]),
        ("tag:yaml.org,2002:int", _INT, "-+0123456789"),
        ("tag:yaml.org,2002:float", _FLOAT, "-+0123456789."),
        (_MERGE, re.compile(r"<<"), "<")):
    # Anchored: the resolver uses re.match, which would accept any prefix.
    StrictLoader.add_implicit_resolver(_tag, re.compile(f"(?:{_pattern.pattern})\\Z"),
                                       list(_first))


def _strict_int(value: str, mark: Any) -> int:
    if len(value) > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(value):,} digits; at most {MAX_INT_DIGITS} "
                       "are accepted", mark)
    if not _INT.fullmatch(value):
        raise _Refused(f"expected a decimal integer, got {_short(value)}", mark)
    return int(value)


def _strict_float(value: str, mark: Any) -> float:
    if not (_FLOAT.fullmatch(value) or _INT.fullmatch(value)):
        raise _Refused(f"expected a decimal number, got {_short(value)}", mark)
    return float(value.lower().replace(".inf", "inf").replace(".nan", "nan"))


def _strict_bool(value: str, mark: Any) -> bool:
    if not _BOOL.fullmatch(value):
        raise _Refused(f"expected true or false, got {_short(value)}", mark)
    return value.lower() == "true"


# The core schema's scalar tags; any other tag (!!python/object, !!timestamp, !!binary,
# !custom) is refused.
_SCALARS: dict[str, Callable[[str, Any], Any]] = {
    _STR: lambda value, mark: value,
    "tag:yaml.org,2002:null": lambda value, mark: None,
    "tag:yaml.org,2002:bool": _strict_bool,
    "tag:yaml.org,2002:int": _strict_int,
    "tag:yaml.org,2002:float": _strict_float,
}
_COLLECTIONS = {yaml.SequenceStartEvent: (_SEQ, "sequence"),
                yaml.MappingStartEvent: (_MAP, "mapping")}
_NO_KEY, _MERGE_KEY = object(), object()  # a mapping awaits a key; the key is `<<`


@dataclass(slots=True)
class _Built:
    """A finished value, as its parent (or an alias of it) needs to know it."""

    value: Any
    kind: str  # "scalar", "sequence" or "mapping", as PyYAML's messages name nodes
    mark: Any
    height: int  # collection levels in it (a scalar: 0), aliases followed
    expanded: int  # nodes in it, aliases expanded
    key: tuple[str, str] | None  # a scalar's (tag, text): how duplicate keys are told
    misfit: _Built | None = None  # a sequence's first item that is not a mapping (merging)


@dataclass(slots=True)
class _Open:
    """A collection being built."""

    kind: str
    mark: Any
    anchor: str | None
    items: list[Any] = field(default_factory=list)  # a sequence's values, a mapping's pairs
    merged: list[dict[Any, Any]] = field(default_factory=list)  # what `<<` merges in
    key: Any = _NO_KEY  # a mapping's key waiting for its value
    keys: dict[tuple[str, str], int] = field(default_factory=dict)  # (tag, text) -> line
    height: int = 0
    expanded: int = 1
    misfit: _Built | None = None


class _Builder:
    """One document from the parser's events, refused as soon as it is wrong: a duplicate
    key, nesting deeper than MAX_DEPTH (aliases included: a recursive alias nests forever),
    aliases expanding past the node budget (the "billion laughs": the built values share
    memory, but whatever walks them later does not), a tag outside the core schema."""

    def __init__(self, loader: StrictLoader) -> None:
        self.loader = loader
        self.anchors: dict[str, _Built | None] = {}  # None: still open (an alias is recursive)
        self.anchor_marks: dict[str, Any] = {}
        self.distinct = 0  # the document's own nodes
        self.stack: list[_Open] = []

    def document(self) -> Any:
        get: Callable[[], Any] = self.loader.get_event
        get()  # StreamStart
        start = get()
        if isinstance(start, yaml.StreamEndEvent):
            return None
        root = self.node(get())
        if root.key is not None and root.key[0] == _MERGE:
            _wrong_tag(_MERGE, "scalar", root.mark)
        get()  # DocumentEnd
        after = get()
        if not isinstance(after, yaml.StreamEndEvent):
            raise yaml.composer.ComposerError("expected a single document in the stream",
                                              start.start_mark, "but found another document",
                                              after.start_mark)
        budget = max(MIN_NODE_BUDGET, NODE_BUDGET_FACTOR * self.distinct)
        if root.expanded > budget:
            raise _Refused(f"aliases expand the document to {root.expanded:,} nodes; the "
                           f"limit is {budget:,}", root.mark)
        return root.value

    def node(self, event: Any) -> _Built:
        """The value that starts with `event`, with everything in it."""
        get, stack = self.loader.get_event, self.stack
        base = len(stack)
        while True:
            kind = type(event)
            if kind is yaml.ScalarEvent:
                done = self.scalar(event)
            elif kind is yaml.AliasEvent:
                done = self.alias(event)
            elif kind in _COLLECTIONS:
                self.open(event)
                event = get()
                continue
            else:  # SequenceEnd, MappingEnd
                done = self.close(stack.pop())
            if len(stack) == base:
                return done
            self.add(stack[-1], done)
            event = get()

    def scalar(self, event: Any) -> _Built:
        self.distinct += 1
        value, tag = event.value, event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve_plain(value) if event.implicit[0] else _STR
        build = _SCALARS.get(tag)
        if build is None and tag != _MERGE:  # `<<` is a key only: add() refuses it elsewhere
            _wrong_tag(tag, "scalar", event.start_mark)
        built = _Built(build(value, event.start_mark) if build else value, "scalar",
                       event.start_mark, 0, 1, (tag, value))
        if event.anchor is not None:
            self.anchor(event.anchor, event.start_mark, built)
        return built

    def alias(self, event: Any) -> _Built:
        self.distinct += 1  # a place in its collection, as the document's own nodes count
        name = event.anchor
        if name not in self.anchors:
            raise yaml.composer.ComposerError(None, None, f"found undefined alias {name!r}",
                                              event.start_mark)
        target = self.anchors[name]
        if target is None or len(self.stack) + target.height > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels (aliases included)",
                           self.anchor_marks[name])
        return target

    def anchor(self, name: str, mark: Any, built: _Built | None) -> None:
        if name in self.anchors:
            raise yaml.composer.ComposerError(f"found duplicate anchor {name!r}; first "
                                              "occurrence", self.anchor_marks[name],
                                              "second occurrence", mark)
        self.anchors[name] = built
        self.anchor_marks[name] = mark

    def open(self, event: Any) -> None:
        tag, kind = _COLLECTIONS[type(event)]
        if event.tag not in (None, "!", tag):
            _wrong_tag(event.tag, kind, event.start_mark)
        if len(self.stack) >= MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels (aliases included)",
                           event.start_mark)
        self.distinct += 2 if self.stack else 1  # itself, and its place in its parent
        if event.anchor is not None:
            self.anchor(event.anchor, event.start_mark, None)
        self.stack.append(_Open(kind, event.start_mark, event.anchor))

    def add(self, parent: _Open, child: _Built) -> None:
        parent.height = max(parent.height, child.height)
        parent.expanded += child.expanded
        if parent.kind == "mapping" and parent.key is _NO_KEY:
            self.key(parent, child)
            return
        if child.key is not None and child.key[0] == _MERGE:
            _wrong_tag(_MERGE, "scalar", child.mark)
        if parent.kind == "sequence":
            parent.items.append(child.value)
            if child.kind != "mapping" and parent.misfit is None:
                parent.misfit = child
            return
        key, parent.key = parent.key, _NO_KEY
        if key is _MERGE_KEY:
            parent.merged.extend(_merged(parent, child))
        else:
            parent.items.append((key, child.value))

    def key(self, parent: _Open, child: _Built) -> None:
        if child.kind != "scalar":
            raise yaml.constructor.ConstructorError("while constructing a mapping",
                                                    parent.mark, "found unhashable key",
                                                    child.mark)
        assert child.key is not None
        first = parent.keys.get(child.key)
        if first is not None:
            raise _Refused(f"duplicate key {_short(child.key[1])} (first at line "
                           f"{first + 1})", child.mark)
        parent.keys[child.key] = child.mark.line
        parent.key = _MERGE_KEY if child.key[0] == _MERGE else child.value

    def close(self, done: _Open) -> _Built:
        value: Any
        if done.kind == "sequence":
            value = done.items
        elif done.merged:
            value = {}
            for mapping in done.merged:  # as PyYAML 6: the first listed wins
                for k, v in mapping.items():
                    value.setdefault(k, v)
            value.update(done.items)
        else:
            value = dict(done.items)
        built = _Built(value, done.kind, done.mark, done.height + 1, done.expanded, None,
                       done.misfit)
        if done.anchor is not None:
            self.anchors[done.anchor] = built
        return built


def _merged(parent: _Open, child: _Built) -> list[dict[Any, Any]]:
    """The mappings a `<<` key merges in, in the order listed."""
    if child.kind == "mapping":
        return [child.value]
    if child.kind == "sequence" and child.misfit is None:
        return list(child.value)
    misfit = child.misfit or child
    what = "a mapping" if child.kind == "sequence" else "a mapping or list of mappings"
    raise yaml.constructor.ConstructorError("while constructing a mapping", parent.mark,
                                            f"expected {what} for merging, but found "
                                            f"{misfit.kind}", misfit.mark)


def _wrong_tag(tag: str, kind: str, mark: Any) -> None:
    if tag in _SCALARS or tag in (_SEQ, _MAP):
        expected = ("a scalar" if tag in _SCALARS else
                    "a sequence" if tag == _SEQ else "a mapping")
        problem = f"expected {expected} node, but found {kind}"
    else:
        problem = f"could not determine a constructor for the tag {tag!r}"
    raise yaml.constructor.ConstructorError(None, None, problem, mark)


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
