"""One registry per pluggable kind of part: the name a config uses -> the code that builds it, and what it declares.

    TEMPORAL_MODULES  model.temporal_module  per-bottleneck module: builder(channels, clip_len, astrm_cfg), where
                                             ("input": on conv1's input, E2E-Spot's shifts; "output": after conv1)
    TEMPORAL_HEADS    model.temporal_head    builder(in_dim, width, layers, heads) -> module with ``out_dim``
    LOSSES            loss.classification    builder(logits, targets, loss_cfg) -> loss; declares ``activation``
                                             (``sigmoid`` or ``softmax``: how inference turns logits into scores)
    NMS               eval.nms               builder(frames, scores, window, groups, threshold) -> (keep, scores)
    SCHEDULERS        optim.scheduler        builder(optimizer, optim_cfg, warmup_steps, total_steps)

Adding a part is one decorated function in any module imported before the config is loaded (docs/architecture.md):

    @TEMPORAL_HEADS.register("my_head")
    def build_my_head(in_dim, width, layers, heads):
        return MyHead(in_dim, width or in_dim)

Config validation, ``--help`` texts and the docs read the names from here. An *alias* is an old name that maps to a
registered one with some of its hyper-parameters fixed (``bigru2`` = ``bigru`` with ``model.head_layers: 2``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pespot.errors import ConfigError

# The modules whose import registers the built-in parts (imported on the first lookup).
BUILTIN_MODULES = ("pespot.model.backbone", "pespot.model.temporal", "pespot.train.losses", "pespot.postprocess",
                   "pespot.train.schedule")


@dataclass(frozen=True)
class Entry:
    """A registered part: its name, builder and declarations (e.g. ``activation``), and alias settings."""

    name: str
    builder: Callable[..., Any]
    meta: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # fixed by an alias (e.g. {"layers": 2})

    def __getattr__(self, key: str) -> Any:
        try:
            return self.meta[key]
        except KeyError:
            raise AttributeError(key) from None


class Registry:
    """Names of one kind of part -> ``Entry``."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind, self.key = kind, key  # e.g. "temporal head", "model.temporal_head"
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, tuple[str, dict[str, Any]]] = {}

    def register(self, name: str, *, aliases: dict[str, dict[str, Any]] | None = None,
                 **meta: Any) -> Callable[[Callable], Callable]:
        """Decorator: register ``builder`` under ``name`` with ``meta``; ``aliases`` maps old names to settings."""

        def decorate(builder: Callable) -> Callable:
            if name in self._entries or name in self._aliases:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = Entry(name, builder, dict(meta))
            for alias, settings in (aliases or {}).items():
                self._aliases[alias] = (name, dict(settings))
            return builder

        return decorate

    def unregister(self, name: str) -> None:
        """Remove ``name`` and its aliases (a plug-in's tests register and remove their toy parts)."""
        self._entries.pop(name, None)
        self._aliases = {a: t for a, t in self._aliases.items() if t[0] != name}

    def names(self, aliases: bool = True) -> list[str]:
        """Registered names (and aliases), in registration order."""
        _load_builtins()
        return list(self._entries) + (list(self._aliases) if aliases else [])

    def get(self, name: str) -> Entry:
        """The entry of ``name`` (an alias gives its target with the alias's settings); a ConfigError naming the
        config key and the known names otherwise."""
        _load_builtins()
        if name in self._entries:
            return self._entries[name]
        if name in self._aliases:
            target, settings = self._aliases[name]
            entry = self._entries[target]
            return Entry(entry.name, entry.builder, entry.meta, settings)
        raise ConfigError(f"config key '{self.key}': expected one of {', '.join(self.names())}, got {name!r}")

    def registered(self) -> list[str]:
        """Names and aliases registered so far, without loading the built-in modules (for use at import time)."""
        return list(self._entries) + list(self._aliases)

    def __contains__(self, name: object) -> bool:
        _load_builtins()
        return name in self._entries or name in self._aliases


TEMPORAL_MODULES = Registry("per-bottleneck temporal module", "model.temporal_module")
TEMPORAL_HEADS = Registry("temporal head", "model.temporal_head")
LOSSES = Registry("classification loss", "loss.classification")
NMS = Registry("NMS", "eval.nms")
SCHEDULERS = Registry("learning-rate schedule", "optim.scheduler")
ALL = {r.key: r for r in (TEMPORAL_MODULES, TEMPORAL_HEADS, LOSSES, NMS, SCHEDULERS)}

_loaded = False


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def activation(classification: str) -> str:
    """How inference scores a model trained with the classification loss ``classification``."""
    return LOSSES.get(classification).activation
