"""Running an mlx-lm model around its frozen lower layers: stop after them, or start above them.

With LoRA on the top layers only, the layers below the first adapted one compute the same hidden states
for every pass of a day (pi_old, the reference, each update, the end-of-day pass). `recording` runs a
forward through those layers alone and hands back their output; `replaying` runs a forward that takes
that output in their place. Both swap stand-ins into the model's layer list for the length of one
forward call (the models iterate `model.layers`); nothing else about the model changes, and its
parameters are never touched.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import mlx.core as mx
import mlx.nn as nn


@dataclass
class Frozen:
    """The input of layer `start` (the output of the frozen layers below it) for one forward's positions:
    (n, L, D), or (1, P, D) for a prompt."""

    start: int
    hidden: mx.array


class _StandIn:
    """Takes a layer's place in the model's loop: returns `out` if set, else its input unchanged. Keeps the
    replaced layer's `use_sliding` (mlx-lm's llama picks each layer's mask by it)."""

    def __init__(self, layer: nn.Module, out: mx.array | None = None):
        self.use_sliding = getattr(layer, "use_sliding", False)
        self.out = out

    def __call__(self, h: mx.array, mask=None, cache=None) -> mx.array:
        return h if self.out is None else self.out


class _Recorder(_StandIn):
    """Runs its layer and keeps the output."""

    def __init__(self, layer: nn.Module):
        super().__init__(layer)
        self.layer = layer

    def __call__(self, h: mx.array, mask=None, cache=None) -> mx.array:
        self.out = self.layer(h, mask, cache)
        return self.out


@contextlib.contextmanager
def _swapped(model: nn.Module, stand_ins: dict[int, object]) -> Iterator[None]:
    layers = model.layers
    saved = {i: layers[i] for i in stand_ins}
    try:
        for i, s in stand_ins.items():
            layers[i] = s
        yield
    finally:
        for i, layer in saved.items():
            layers[i] = layer


@contextlib.contextmanager
def replaying(model: nn.Module, frozen: Frozen | None) -> Iterator[None]:
    """Within it, a forward of `model` starts at layer `frozen.start` from `frozen.hidden`: the layers below
    it pass their input on and the last of them returns the stored states (their keys and values are
    neither computed nor cached). The embedding still runs on the inputs and is discarded. None: a plain
    forward."""
    if frozen is None or frozen.start == 0:
        yield
        return
    layers = model.layers
    k = frozen.start
    stand_ins = {i: _StandIn(layers[i]) for i in range(k - 1)}
    stand_ins[k - 1] = _StandIn(layers[k - 1], frozen.hidden)
    with _swapped(model, stand_ins):
        yield


@contextlib.contextmanager
def recording(model: nn.Module, start: int) -> Iterator[_Recorder]:
    """Within it, a forward of `model` runs layers 0 .. `start` - 1 alone (the ones above pass their input
    on); the yielded recorder's `out` is layer `start` - 1's output after each forward (what `replaying`
    takes as `Frozen.hidden`). The forward's own return value is not the model's and is to be ignored."""
    if not 0 < start <= len(model.layers):
        raise ValueError(f"recording needs 0 < start <= {len(model.layers)} layers, got {start}")
    layers = model.layers
    recorder = _Recorder(layers[start - 1])
    stand_ins = {i: _StandIn(layers[i]) for i in range(start, len(layers))}
    stand_ins[start - 1] = recorder
    with _swapped(model, stand_ins):
        yield recorder
