"""Reading YAML/JSON documents, and pydantic errors as ConfigErrors naming file and field."""

from __future__ import annotations

from collections.abc import Sequence
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
    """Read a YAML (or JSON, a subset of YAML) file; syntax errors become ConfigErrors."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), "", f"cannot read the file: {e}") from None
    try:
        return yaml.load(text, Loader=YamlLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(str(path), where, f"invalid YAML: {problem}") from None
