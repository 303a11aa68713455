"""The view registry: each ``data.view`` name -> the View class that implements it.

A view class names itself (``name``) and builds itself from the config
(``from_config(ViewOptions)``); ``build(name, options)`` looks the class up.
A view that is not part of proxyjax registers itself with ``register`` (or by module
path with ``register_lazy``, imported when first built).
"""

from __future__ import annotations

import importlib

from proxyjax.views import base
from proxyjax.views.deflate import DeflateView, GzipView
from proxyjax.views.neural import NeuralView
from proxyjax.views.recoded import BitView, DoubleBitView, DoubleByteView, HalfByteView, RawView
from proxyjax.views.tokenizer import TokenBytesView, TokenizerView

# name -> View class, or "module:Class" for a view imported on first use. Order is the
# order names are listed in (``VIEW_NAMES``, error messages).
_REGISTRY: dict[str, type[base.View] | str] = {}
_NEEDS_TOKENIZER: dict[str, bool] = {}


def register(cls: type[base.View]) -> type[base.View]:
  """Registers a View class under its ``name`` (usable as a class decorator)."""
  if not cls.name:
    raise ValueError(f"{cls.__name__} has no name")
  _REGISTRY[cls.name] = cls
  _NEEDS_TOKENIZER[cls.name] = cls.needs_tokenizer
  return cls


def register_lazy(name: str, target: str, *, needs_tokenizer: bool = False) -> None:
  """Registers ``name`` -> ``"package.module:Class"``, imported when first built."""
  _REGISTRY[name] = target
  _NEEDS_TOKENIZER[name] = needs_tokenizer


def names() -> tuple[str, ...]:
  return tuple(_REGISTRY)


def needs_tokenizer(name: str) -> bool:
  return _NEEDS_TOKENIZER[name]


def view_class(name: str) -> type[base.View]:
  """The class of view ``name``. Raises ValueError for an unknown name."""
  entry = _REGISTRY.get(name)
  if entry is None:
    raise ValueError(f"unknown view {name!r}; known views: {', '.join(_REGISTRY)}")
  if isinstance(entry, str):
    module, _, attr = entry.partition(":")
    entry = getattr(importlib.import_module(module), attr)
    _REGISTRY[name] = entry
  return entry


def build(name: str, options: base.ViewOptions | None = None) -> base.View:
  """View ``name`` as the config's ``options`` configure it."""
  return view_class(name).from_config(options or base.ViewOptions())


for _cls in (RawView, DeflateView, GzipView, TokenizerView, TokenBytesView, HalfByteView,
             DoubleBitView, BitView, DoubleByteView, NeuralView):
  register(_cls)
del _cls
