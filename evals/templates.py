"""Prompt templates are data: each benchmark's config (`conf/benchmark/<name>.yaml`, `loader.prompts`)
holds one set of templates and rule names per protocol; the benchmark modules only fill them.

A template names its fields as `{field}`; every other brace is literal, so a template reads exactly
like the string it produces (GPQA's `{"answer": "C"}` needs no escaping). Values are inserted
verbatim and never scanned for fields themselves.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import OmegaConf

from deltamem.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "benchmark"
_FIELD = re.compile(r"\{(\w+)\}")


class TemplateError(UserError, ValueError):
    """A prompt set that lacks a protocol or a key, or a template naming a field nobody fills."""


def fill(template: str, **values: Any) -> str:
    """`template` with every `{field}` replaced by `str(values[field])`; an unknown field is an error."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise TemplateError(f"template field {{{name}}} has no value (fields given: {sorted(values)})")
        return str(values[name])

    return _FIELD.sub(one, str(template))


def config_prompts(benchmark: str) -> dict[str, Any]:
    """`loader.prompts` of `conf/benchmark/<benchmark>.yaml`: the prompt sets by protocol name."""
    path = CONF_DIR / f"{benchmark}.yaml"
    node = OmegaConf.select(OmegaConf.load(path), "loader.prompts")
    if node is None:
        raise TemplateError(f"{path} has no loader.prompts")
    return OmegaConf.to_container(node, resolve=False)  # type: ignore[return-value]


def protocol_prompts(
    benchmark: str, protocol: str, given: Mapping[str, Any] | None, required: Sequence[str]
) -> dict[str, Any]:
    """The prompt set of `protocol`: from `given` (the loader's `prompts`, as Hydra passes it) or,
    when None, from the benchmark's config file; every key of `required` must be present."""
    sets = config_prompts(benchmark) if given is None else given
    if OmegaConf.is_config(sets):
        sets = OmegaConf.to_container(sets, resolve=True)  # type: ignore[arg-type]
    if protocol not in sets:
        raise TemplateError(f"{benchmark}: no prompt set for protocol {protocol!r} (have {sorted(sets)})")
    chosen = dict(sets[protocol])
    missing = [key for key in required if key not in chosen]
    if missing:
        raise TemplateError(f"{benchmark}: the prompt set of protocol {protocol!r} lacks {missing}")
    return chosen


def protocols_of(benchmark: str) -> tuple[str, ...]:
    """The protocol names the benchmark's config defines prompt sets for."""
    return tuple(config_prompts(benchmark))


__all__ = ["CONF_DIR", "TemplateError", "config_prompts", "fill", "protocol_prompts", "protocols_of"]
