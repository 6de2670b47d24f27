"""A tiny name -> factory registry, shared by models, SSL algorithms and strategies."""

from __future__ import annotations

import inspect
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories. `kind` is used in error messages ("model", "strategy")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str):
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def factory(self, name: str) -> Callable[..., T]:
        if name not in self._factories:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._factories[name]

    def accepts(self, name: str, option: str) -> bool:
        """Whether the factory of `name` takes the keyword `option`."""
        params = inspect.signature(self.factory(name)).parameters
        return option in params or any(p.kind is p.VAR_KEYWORD for p in params.values())

    def get(self, name: str, **options) -> T:
        return self.factory(name)(**options)
