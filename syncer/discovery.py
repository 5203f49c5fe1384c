"""What `Provider.discover()` returns: the Services a source wants, and the ones to leave alone.

The policy for data a provider cannot use, the same whichever provider or layer meets it:

- data that cannot become an object at all (an invalid Service name from a catalog, a
  backend without a usable address): dropped, with a warning; the rest is synced;
- contradictory data for a Service (its backends disagree on the port, two catalog entries
  map to one name): that Service is `Kept` — left in the cluster exactly as it is, named
  in a warning and in the plan, and the run exits 1 — while the source's other Services are
  synced. Leaving such a Service out instead would prune it; failing the whole source would
  freeze every other Service it feeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from syncer.model import ServiceSpec


@dataclass(frozen=True, slots=True)
class Kept:
    """A Service this run must leave exactly as it is in the cluster, and why."""

    name: str
    reason: str
    namespace: str | None = None
    """None: the source's namespace."""


@dataclass(frozen=True, slots=True)
class Discovery:
    """The answer of one `discover()` call."""

    services: tuple[ServiceSpec, ...] = ()
    kept: tuple[Kept, ...] = ()

    @classmethod
    def of(cls, result: Discovery | Sequence[ServiceSpec]) -> Discovery:
        """A provider may also return a plain list of ServiceSpec (the API's first form)."""
        if isinstance(result, Discovery):
            return result
        if isinstance(result, str | bytes) or not isinstance(result, Sequence):
            raise TypeError("discover() must return a Discovery or a list of ServiceSpec, got "
                            f"{type(result).__name__}")
        for item in result:
            if not isinstance(item, ServiceSpec):
                raise TypeError("discover() returned a list holding a "
                                f"{type(item).__name__}, not a ServiceSpec")
        return cls(tuple(result))

    def __add__(self, other: Discovery) -> Discovery:
        return Discovery(self.services + other.services, self.kept + other.kept)
