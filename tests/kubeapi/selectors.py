"""Label and field selectors, with the grammar of apimachinery's labels.Parse."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tests.kubeapi import formats

_TOKEN = re.compile(r"\s*(?:(==|!=|=|!|\(|\)|,|<|>)|([^\s!=(),<>]+))")


class SelectorError(ValueError):
    """A selector that does not parse; answered as 400 BadRequest."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if not present or not re.fullmatch(r"-?\d+", value):
            return False
        bound = int(self.values[0])
        return int(value) > bound if self.op == "gt" else int(value) < bound


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def _tokens(text: str) -> list[str]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            if text[pos:].strip():
                raise SelectorError(f"unable to parse requirement: bad input at {text[pos:]!r}")
            break
        tokens.append(match.group(1) or match.group(2))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise SelectorError("unable to parse requirement: unexpected end of selector")
        self.pos += 1
        return token

    def word(self, what: str) -> str:
        token = self.take()
        if token in ("==", "!=", "=", "!", "(", ")", ",", "<", ">"):
            raise SelectorError(f"unable to parse requirement: expected {what}, found {token!r}")
        return token

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.take()
            return Requirement(_key(self.word("key")), "!")
        key = _key(self.word("key"))
        op = self.peek()
        if op in (None, ","):
            return Requirement(key, "exists")
        self.take()
        if op in ("=", "==", "!="):
            value = "" if self.peek() in (None, ",") else self.word("value")
            return Requirement(key, "in" if op != "!=" else "notin", (_value(value),))
        if op in ("<", ">"):
            bound = self.word("integer")
            if not re.fullmatch(r"-?\d+", bound):
                raise SelectorError(f"unable to parse requirement: {bound!r} is not an integer")
            return Requirement(key, "gt" if op == ">" else "lt", (bound,))
        if op in ("in", "notin"):
            return Requirement(key, op, self.value_set())
        raise SelectorError(f"unable to parse requirement: unknown operator {op!r}")

    def value_set(self) -> tuple[str, ...]:
        if self.take() != "(":
            raise SelectorError("unable to parse requirement: expected '('")
        values = [_value(self.word("value"))]
        while (token := self.take()) == ",":
            values.append(_value(self.word("value")))
        if token != ")":
            raise SelectorError(f"unable to parse requirement: unexpected {token!r}")
        return tuple(values)


def _key(key: str) -> str:
    errors = formats.qualified_name(key)
    if errors:
        raise SelectorError(f"unable to parse requirement: key: Invalid value: {key!r}: "
                            + "; ".join(errors))
    return key


def _value(value: str) -> str:
    errors = formats.label_value(value)
    if errors:
        raise SelectorError(f"unable to parse requirement: values[0]: Invalid value: {value!r}: "
                            + "; ".join(errors))
    return value


def parse_label_selector(text: str) -> LabelSelector:
    parser = _Parser(text)
    requirements: list[Requirement] = []
    while parser.peek() is not None:
        requirements.append(parser.requirement())
        if parser.peek() is not None and parser.take() != ",":
            raise SelectorError("unable to parse requirement: expected ','")
    return LabelSelector(tuple(requirements))


_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()  # (field, equal?, value)

    def matches(self, obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata", {})
        for field, equal, value in self.terms:
            actual = meta.get(field.removeprefix("metadata."), "")
            if (actual == value) != equal:
                return False
        return True


def parse_field_selector(text: str) -> FieldSelector:
    terms: list[tuple[str, bool, str]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"([^=!]+?)\s*(==|!=|=)\s*(.*)", part)
        if match is None:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, value = match.groups()
        if field not in _FIELDS:
            raise SelectorError(f'field label not supported: {field}')
        terms.append((field, op != "!=", value))
    return FieldSelector(tuple(terms))
