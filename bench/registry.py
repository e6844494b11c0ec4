"""Name -> factory registries with metadata (models, datasets, optimizers, schedules).

Everything a study file can name lives in a Registry, so adding a component is one decorated
factory: it then shows in `bench list`, is validated by the study-file schema and is covered by
the registry-parametrized tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


class UnknownNameError(KeyError):
    """A name that no registry entry carries; str() is the one-line message shown to users."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    """One registered component.

    Args:
        name: the key a study file uses.
        factory: builds the component; its arguments are documented on the factory itself.
        summary: one line for `bench list`.
        meta: component-specific facts (tunable hyper-parameters, default search space, task, ...).
    """

    name: str
    factory: Callable[..., Any]
    summary: str
    meta: dict[str, Any] = field(default_factory=dict)


class Registry:
    """An ordered mapping name -> Entry with a decorator to fill it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, summary: str, **meta: Any) -> Callable:
        def decorator(factory: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = Entry(name, factory, summary, dict(meta))
            return factory

        return decorator

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        return f"unknown {name!r} (known: {', '.join(self.names())})"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._entries)
