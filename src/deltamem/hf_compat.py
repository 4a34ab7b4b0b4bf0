"""What differs between the transformers versions we run on, asked of the model once per class.

* the forward keyword of the KV cache: `cache` (transformers ≥ 5.2x) or `past_key_values`;
* whether `forward` takes an optional argument (`logits_to_keep`, `cache_position`);
* the KV cache a forward call returned, under either name.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any


def cache_argument(model: Any) -> str:
    """The forward keyword of the KV cache of `model`: `cache` or `past_key_values`."""
    return "cache" if forward_accepts(model, "cache") else "past_key_values"


def forward_accepts(model: Any, name: str) -> bool:
    """Whether `model.forward` has a parameter `name` (cached per model class: decode steps ask)."""
    return name in _forward_parameters(type(model))


@functools.cache
def _forward_parameters(model_type: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_type.forward).parameters)


def returned_cache(output: Any) -> Any:
    """The KV cache returned by a forward call, under either name."""
    cache = output.get("cache")
    return cache if cache is not None else output.get("past_key_values")
