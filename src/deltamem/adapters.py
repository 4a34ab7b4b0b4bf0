"""Adapter files: our format and the public release's, both directions.

Ours (a folder):
    adapter_config.json        {"format": "deltamem-adapter", "version": 1, "memory": {...}, "backbone": {...}}
    adapter_model.safetensors  keys `layers.{i}.{in_proj|beta_bias|B_q|B_k|B_v|B_o}`
Nothing executable: JSON and safetensors only.

The public release (declare-lab/delta-mem_*; METHOD.md §7), a folder:
    delta_mem_config.json      its config dataclass as JSON
    delta_mem_adapter.pt       a torch-saved dict of bare out×in matrices, keys
                               `model.layers.{i}.self_attn.{memory_q_proj, memory_k_proj, memory_v_proj,
                               beta_proj, beta_bias, delta_q_proj, delta_k_proj, delta_v_proj, delta_o_proj}`
It is read with `torch.load(weights_only=True)` (tensors only, no pickled code).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .attach import DeltaMemModel, decoder_layers
from .config import ConfigError, DeltaMemConfig
from .errors import UserError
from .write_strategy import from_release

OUR_CONFIG, OUR_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
RELEASE_CONFIG, RELEASE_WEIGHTS = "delta_mem_config.json", "delta_mem_adapter.pt"
FORMAT_NAME, FORMAT_VERSION = "deltamem-adapter", 1


class AdapterFileError(UserError, ValueError):
    """An adapter file is unreadable (cut, corrupted) or refused (a pickle with code in it)."""


def _read_safetensors(path: str) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as error:  # SafetensorError (header or body cut), OSError
        raise AdapterFileError(f"{path}: not a readable safetensors file ({type(error).__name__}: {error})") from error


def _read_release_pt(path: Path) -> Any:
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # weights_only refused a global: the file would run code
        raise AdapterFileError(
            f"{path}: refused, the pickle holds executable code (only plain tensors are loaded)"
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise AdapterFileError(f"{path}: not a readable torch file ({type(error).__name__}: {error})") from error


class AdapterMismatchError(UserError, ValueError):
    """An adapter file does not fit the model it is loaded into."""


# ---------------------------------------------------------------------- shared checks
def _check_and_copy(
    model: DeltaMemModel,
    tensors: dict[str, Tensor],
    source: str,
    stored: DeltaMemConfig,
    config_source: str,
    backbone: dict[str, Any] | None = None,
) -> None:
    """Copy `tensors` (our key names) into the model after checking every shape (the first mismatching
    tensor is named) and then the config fields that shapes cannot reveal. Nothing is copied on error."""
    expected = dict(model.memory_parameters())
    for key in expected:  # model order: layer by layer, in_proj first
        if key not in tensors:
            raise AdapterMismatchError(
                f"{source}: missing tensor '{key}' (expected shape {tuple(expected[key].shape)})"
            )
        if tuple(tensors[key].shape) != tuple(expected[key].shape):
            raise AdapterMismatchError(
                f"{source}: tensor '{key}' has shape {tuple(tensors[key].shape)}, the model expects "
                f"{tuple(expected[key].shape)}"
            )
    extra = sorted(set(tensors) - set(expected), key=_natural)
    if extra:
        raise AdapterMismatchError(
            f"{source}: tensor '{extra[0]}' has no place in this model ({len(extra)} unexpected)"
        )
    _check_config(model, stored, config_source)
    fingerprint = _backbone_fingerprint(model)
    for key, value in (backbone or {}).items():
        if value is not None and fingerprint.get(key) not in (None, value):
            raise AdapterMismatchError(
                f"{config_source}: adapter was trained on a backbone with {key}={value}, "
                f"this one has {fingerprint[key]}"
            )
    with torch.no_grad():
        for key, param in expected.items():
            param.copy_(tensors[key].to(device=param.device, dtype=param.dtype))


def _natural(key: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in key.split("."))


def _backbone_fingerprint(model: DeltaMemModel) -> dict[str, Any]:
    cfg = getattr(model.base_model, "config", None)
    fields = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
    return {f: getattr(cfg, f, None) for f in fields}


def _check_config(model: DeltaMemModel, stored: DeltaMemConfig, source: str) -> None:
    ours = model.memory_config
    shape_fields = ("rank", "num_state_heads", "targets", "layers", "write", "alpha")
    for name in shape_fields:
        a, b = getattr(stored, name), getattr(ours, name)
        if name == "layers":  # None, a depth band and explicit indices compare as the indices they mean
            a, b = _layers(stored, model), _layers(ours, model)
        if a != b:
            raise AdapterMismatchError(f"{source}: config field '{name}' is {a!r} in the file but {b!r} in the model")


def _layers(config: DeltaMemConfig, model: DeltaMemModel) -> tuple[int, ...]:
    return tuple(config.layer_indices(len(decoder_layers(model.base_model))))


def adapter_sha256(folder: str | Path | None) -> str | None:
    """sha256 over an adapter folder's files (relative name + bytes), None without an adapter: the
    identity that evaluation fingerprints and saved memory sessions record."""
    if folder is None:
        return None
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"adapter folder {root} does not exist")
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------- our format
def save_adapter(model: DeltaMemModel, folder: str | Path) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: p.detach().cpu().contiguous() for k, p in model.memory_parameters()}
    save_file(tensors, str(folder / OUR_WEIGHTS))
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "memory": model.memory_config.to_dict(),
        "backbone": _backbone_fingerprint(model),
    }
    (folder / OUR_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def read_adapter_config(folder: str | Path) -> DeltaMemConfig:
    """The memory config stored in one of our adapter folders (or a release folder)."""
    folder = Path(folder)
    if (folder / OUR_CONFIG).is_file():
        meta = json.loads((folder / OUR_CONFIG).read_text())
        if meta.get("format") != FORMAT_NAME:
            raise AdapterMismatchError(f"{folder / OUR_CONFIG}: not a {FORMAT_NAME} file")
        return DeltaMemConfig.from_dict(meta["memory"])
    if (folder / RELEASE_CONFIG).is_file():
        return release_config_to_ours(json.loads((folder / RELEASE_CONFIG).read_text()))
    raise FileNotFoundError(f"{folder}: neither {OUR_CONFIG} nor {RELEASE_CONFIG} found")


def load_adapter(model: DeltaMemModel, folder: str | Path) -> None:
    """Load an adapter folder of either format into an attached model (format auto-detected)."""
    folder = Path(folder)
    if (folder / RELEASE_WEIGHTS).is_file() and not (folder / OUR_WEIGHTS).is_file():
        load_release_adapter(model, folder)
        return
    source = str(folder / OUR_WEIGHTS)
    meta = json.loads((folder / OUR_CONFIG).read_text())
    stored = read_adapter_config(folder)
    _check_and_copy(model, _read_safetensors(source), source, stored, str(folder / OUR_CONFIG), meta.get("backbone"))


# ---------------------------------------------------------------------- the release's format
# Release fields whose non-default values switch on mechanisms δ-mem's paper variants do not use.
_RELEASE_REQUIRED = {
    "normalize_qk": True,
    "couple_lambda": True,
    "state_update_mode": "standard",
    "rankwise_gates": True,
    "memory_readout_mode": "delta",
    "memory_write_source": "learned_hidden",
    "num_memory_partitions": 1,
    "num_global_memory_partitions": 0,
    "memory_reader_layers": [],
    "latent_memory_layers": [],
    "delta_o_rmsnorm": False,
    "trainable_delta_scale": False,
}


def release_config_to_ours(data: dict[str, Any]) -> DeltaMemConfig:
    for name, required in _RELEASE_REQUIRED.items():
        if name in data and data[name] != required:
            raise ConfigError(
                f"release config field '{name}' = {data[name]!r} selects a mechanism this harness does not "
                f"implement (supported: {required!r})"
            )
    granularity = data.get("memory_write_granularity", "token")
    heads = int(data.get("num_state_heads", 1))
    found = from_release(granularity, heads)
    if found is None:
        raise ConfigError(f"release memory_write_granularity {granularity!r} is not supported")
    strategy, unit = found
    output_init = data.get("output_init", "zero")
    layers = data.get("target_layers") or None
    return DeltaMemConfig(
        write=strategy.name,
        rank=int(data.get("rank", 8)),
        num_state_heads=heads,
        alpha=float(data.get("alpha", 16.0)),
        targets=tuple(data.get("delta_heads", ("q", "o"))),
        layers=None if layers in (None, "off") else tuple(layers),
        beta_bias_init=float(data.get("beta_bias_init", -1.5)),
        b_init="zero" if output_init == "zero" else "base_slice",
        base_slice_scale=float(data.get("online_gain", 0.05)),
        segment_unit=unit,
    )


def ours_to_release_config(config: DeltaMemConfig) -> dict[str, Any]:
    granularity = config.strategy.release_granularity(config.segment_unit)
    return {
        "rank": config.rank,
        "alpha": config.alpha,
        "beta_bias_init": config.beta_bias_init,
        "output_init": "base_slice_fixed" if config.b_init == "base_slice" else "zero",
        "base_slice_ref_width": config.rank,
        "online_gain": config.base_slice_scale,
        "num_state_heads": config.num_state_heads,
        "memory_write_granularity": granularity,
        "target_modules": ["self_attn"],
        "target_layers": [] if config.layers is None else list(config.layers),
        "delta_heads": list(config.targets),
        "delta_scale_parameterization": "alpha_over_rank",
        **{k: v for k, v in _RELEASE_REQUIRED.items()},
    }


_RELEASE_NAMES = {  # release key suffix -> (our parameter, row block of in_proj or None)
    "memory_q_proj": ("in_proj", 0),
    "memory_k_proj": ("in_proj", 1),
    "memory_v_proj": ("in_proj", 2),
    "beta_proj": ("in_proj", 3),
    "beta_bias": ("beta_bias", None),
    "delta_q_proj": ("B_q", None),
    "delta_k_proj": ("B_k", None),
    "delta_v_proj": ("B_v", None),
    "delta_o_proj": ("B_o", None),
}


def _release_prefix(i: int) -> str:
    return f"model.layers.{i}.self_attn."


def save_release_adapter(model: DeltaMemModel, folder: str | Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write the release's two files (bf16 by default, as the release stores them)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    D = model.memory_config.memory_dim
    out: dict[str, Tensor] = {}
    for i, memory in model.memory_layers.items():
        for suffix, (name, block) in _RELEASE_NAMES.items():
            if block is not None:
                tensor = memory.in_proj[block * D : (block + 1) * D]
            elif hasattr(memory, name):
                tensor = getattr(memory, name)
            else:  # corrections that are off are stored as zeros, as the release does
                tensor = memory.in_proj.new_zeros(_correction_rows(model, i, name[-1]), D)
            out[_release_prefix(i) + suffix] = tensor.detach().to("cpu", dtype).clone()
    torch.save(out, folder / RELEASE_WEIGHTS)
    (folder / RELEASE_CONFIG).write_text(json.dumps(ours_to_release_config(model.memory_config), indent=2) + "\n")
    return folder


def _correction_rows(model: DeltaMemModel, index: int, target: str) -> int:
    """Output width of the base projection `target` (q, k, v or o) of decoder layer `index`."""
    from .attach import decoder_layers

    proj = getattr(decoder_layers(model.base_model)[index].self_attn, f"{target}_proj")
    return getattr(proj, "base_layer", proj).out_features


def load_release_adapter(model: DeltaMemModel, folder: str | Path) -> None:
    """Load `delta_mem_config.json` + `delta_mem_adapter.pt` into an attached model."""
    folder = Path(folder)
    config_path, weights_path = folder / RELEASE_CONFIG, folder / RELEASE_WEIGHTS
    stored = release_config_to_ours(json.loads(config_path.read_text()))
    raw = _read_release_pt(weights_path)
    if not isinstance(raw, dict):
        raise AdapterMismatchError(f"{weights_path}: expected a dict of tensors, got {type(raw).__name__}")
    D = model.memory_config.memory_dim
    tensors: dict[str, Tensor] = {}
    for i, memory in model.memory_layers.items():
        d = memory.in_proj.shape[1]
        blocks = []
        for suffix, (name, block) in _RELEASE_NAMES.items():
            key = _release_prefix(i) + suffix
            if key not in raw:
                raise AdapterMismatchError(f"{weights_path}: missing tensor '{key}'")
            if block is not None:
                expected: tuple[int, ...] = (D, d)
            elif name == "beta_bias":
                expected = (D,)
            else:
                expected = (_correction_rows(model, i, name[-1]), D)
            if tuple(raw[key].shape) != expected:
                raise AdapterMismatchError(
                    f"{weights_path}: tensor '{key}' has shape {tuple(raw[key].shape)}, the model expects {expected}"
                )
            if block is not None:
                blocks.append(raw[key])
            elif name == "beta_bias" or name[-1] in model.memory_config.targets:
                tensors[f"layers.{i}.{name}"] = raw[key]
        tensors[f"layers.{i}.in_proj"] = torch.cat(blocks, dim=0)
    _check_and_copy(model, tensors, str(weights_path), stored, str(config_path))
