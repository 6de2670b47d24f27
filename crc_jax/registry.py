"""A tiny name -> factory registry, shared by models, SSL algorithms and strategies."""

from __future__ import annotations

from typing import Generic, TypeVar
from collections.abc import Callable

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories. `kind` is used in error messages ("model", "strategy")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._traits: dict[str, dict] = {}

    def register(self, name: str, **traits):
        """Decorator registering a factory under `name`. `traits` declare, explicitly, what
        the caller must pass or may rely on, so no list of names is kept beside the
        registry. Strategies: `group_size=True` takes the config's al.group_size,
        `class_balanced=True` builds class-balanced groups itself, `needs_dropout=True`
        needs an MC-dropout pass, `cold_start=True` picks sensibly with an untrained model.
        SSL algorithms: `dropout=True` trains with the model's dropout,
        `augments_images=True` is defined by image augmentation (FixMatch's RandAugment
        strong view), so it has nothing to work with on feature vectors. Models:
        `vectors=True` takes (N, d) vectors (a head over features). Data sets:
        `tfds_name` names the TFDS builder."""
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._factories[name] = factory
            self._traits[name] = dict(traits)
            return factory

        return decorator

    def traits(self, name: str) -> dict:
        """The traits `name` was registered with (KeyError naming the known ones if unknown)."""
        self.factory(name)
        return dict(self._traits[name])

    def names(self, trait: str | None = None) -> list[str]:
        """Registered names, sorted; with `trait`, only those registered with it set."""
        return sorted(n for n in self._factories if trait is None or self._traits[n].get(trait))

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def factory(self, name: str) -> Callable[..., T]:
        if name not in self._factories:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._factories[name]

    def get(self, name: str, **options) -> T:
        return self.factory(name)(**options)
