"""Registries owned by the lowest floor: name -> entry, filled by the modules that provide entries.

A lower module (``config.py``, ``checkpoint.py``) reads a registry here; a higher
module (``prune``, ``quantize``) registers its entries into it. The lower module
therefore never imports the higher one. So that a registry is complete whenever
it is read, each names its *providers*: modules imported (once, lazily) on first
read, like Python entry points. This module imports nothing from ``mhsa_cli``.

Registries:

* :data:`IMPORTANCE` -- head importance methods (``mhsa prune --method``), provided
  by :mod:`mhsa_cli.prune.importance`;
* :data:`NEURON_IMPORTANCE` -- feed-forward neuron importance methods (the same names
  as :data:`IMPORTANCE`), provided by :mod:`mhsa_cli.prune.neurons`;
* :data:`LAYER_IMPORTANCE` -- block importance methods (``mhsa prune --layer-method``),
  provided by :mod:`mhsa_cli.prune.layers`;
* :data:`CHECKPOINT_KINDS` -- checkpoint kinds (``float``, ``int8``): how to check a
  checkpoint's weights against its JSON and how to load its model, provided by
  :mod:`mhsa_cli.checkpoint` and :mod:`mhsa_cli.quantize.kind`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """A read-only mapping name -> entry; providers register with :meth:`register`.

    Args:
        what: what an entry is, for messages ("importance method").
        providers: module names imported on first read so that their entries are in.
    """

    def __init__(self, what: str, providers: tuple[str, ...] = ()):
        self.what = what
        self.providers = providers
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name`` (a provider calls this at import); returns ``entry``.

        Raises:
            ValueError: ``name`` is taken by another entry (two providers disagree).
        """
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.what} '{name}' is registered twice")
        self._entries[name] = entry
        return entry

    def _load(self) -> dict[str, T]:
        if not self._loaded:
            self._loaded = True  # before importing: a provider may read the registry while importing
            for module in self.providers:
                importlib.import_module(module)
        return self._entries

    def __getitem__(self, name: str) -> T:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._load()))

    def __len__(self) -> int:
        return len(self._load())

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._load())})"


IMPORTANCE: Registry[Any] = Registry("importance method", ("mhsa_cli.prune.importance",))
NEURON_IMPORTANCE: Registry[Any] = Registry("neuron importance method", ("mhsa_cli.prune.neurons",))
LAYER_IMPORTANCE: Registry[Any] = Registry("layer importance method", ("mhsa_cli.prune.layers",))
CHECKPOINT_KINDS: Registry[Any] = Registry("checkpoint kind", ("mhsa_cli.checkpoint", "mhsa_cli.quantize.kind"))
