"""The base class of provider options, and the option types every provider (and the core's
own configuration) uses for the same things.

Each is an `Annotated` pydantic type whose check is the one rule of `syncer.names`, so a
Service name is refused with the same message whether the config, an inventory or a
provider's options hold it. Use them as field types of a `ProviderOptions` model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyAddress,
    IPvAnyNetwork,
    StrictInt,
    ValidationInfo,
)

from syncer.names import (
    external_name_problem,
    namespace_problem,
    port_name_problem,
    service_name_problem,
)
from syncer.secrets import Secret

__all__ = [
    "CONFIG_DIR",
    "Cidr",
    "ConfigPath",
    "DnsName",
    "IpAddress",
    "Namespace",
    "PortName",
    "PortNumber",
    "ProviderOptions",
    "Secret",
    "ServiceName",
]

CONFIG_DIR = "config_dir"
"""The key of the validation context that holds the configuration file's folder."""


class ProviderOptions(BaseModel):
    """Base class of provider options: unknown keys are errors, values are immutable, and a
    field's docstring (or `Field(description=...)`) is its documentation in
    `endpoints-sync providers` and `endpoints-sync schema`."""

    # hide_input_in_errors: str() of a ValidationError never quotes an input (it may be a
    # secret); the core's own messages decide what to quote (syncer.documents).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True,
                              hide_input_in_errors=True)


def _rule(problem_of: object) -> AfterValidator:
    def check(value: str) -> str:
        problem = problem_of(value)  # type: ignore[operator]
        if problem:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


def _written_as_text(value: object) -> object:
    """An address or network must be written as text: pydantic would read `1` or `true` as
    0.0.0.1."""
    if not isinstance(value, str):
        raise ValueError(f"expected an IP address or CIDR as a string, got {type(value).__name__}")
    return value


def _resolved(value: Path, info: ValidationInfo) -> Path:
    """Relative to the configuration file's folder (the registry passes it in the validation
    context), else to the working directory. `~` is expanded."""
    path = value.expanduser()
    if path.is_absolute():
        return path
    base = (info.context or {}).get(CONFIG_DIR)
    return Path(base) / path if base is not None else Path.cwd() / path


def _non_empty_path(value: object) -> object:
    if value == "":
        raise ValueError("expected a file path, got an empty string")
    return value


ServiceName = Annotated[str, _rule(service_name_problem)]
"""A Service name: a DNS-1035 label."""
Namespace = Annotated[str, _rule(namespace_problem)]
"""A namespace name: a DNS-1123 label."""
PortNumber = Annotated[StrictInt, Field(ge=1, le=65535)]
"""A port number, 1 to 65535, written as a number."""
PortName = Annotated[str, _rule(port_name_problem)]
"""A port name (IANA service name rules); `""` is not one: use `str` with a default of `""`
for an optional name."""
DnsName = Annotated[str, _rule(external_name_problem)]
"""A lowercase DNS name (a DNS-1123 subdomain; one trailing dot allowed)."""
Cidr = Annotated[IPvAnyNetwork, BeforeValidator(_written_as_text)]
"""An IPv4 or IPv6 network such as 192.0.2.0/24, written as text."""
IpAddress = Annotated[IPvAnyAddress, BeforeValidator(_written_as_text)]
"""An IPv4 or IPv6 address, written as text."""
ConfigPath = Annotated[Path, BeforeValidator(_non_empty_path), AfterValidator(_resolved)]
"""A file path, resolved against the configuration file's folder when the options are
loaded: the provider sees an absolute path."""
