"""Replay a micro-batch that made training's gradients non-finite, under every kernel choice.

    python scripts/gpu/nan_probe.py RUN/nonfinite/step11_batch46.pt [--out probe.json]

The dump (deltamem.guards) holds the micro-batch and the memory parameters before the bad step;
the run's `config.yaml` (two folders up) rebuilds the backbone and memory. The loss and the memory
gradients are computed again as Lightning's bf16-mixed step does (autocast bf16 forward, backward
outside it), once per kernel choice below, and once per row of the micro-batch under the default
choice. For each it reports: the loss, which memory parameters got non-finite gradients, the
gradient norm, the relative gradient difference from the PyTorch scan (`pytorch_scan`), and, per
memory layer, the largest |v|, |ρ| and state entry and the β range of the write pass, with the first
decoder layer whose output is non-finite. Nothing here trains; the JSON goes to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path[:0] = [str(Path(__file__).resolve().parents[2] / "src")]

from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

from deltamem.lightning import DeltaMemLightning  # noqa: E402
from deltamem.train import build_model  # noqa: E402

CHOICES: dict[str, dict[str, str]] = {  # environment of each kernel choice (read at call time)
    "default": {},
    "rows": {"DELTAMEM_SCAN_PARALLEL": "0"},
    "chunks_one_pass": {"DELTAMEM_SCAN_PARALLEL": "1", "DELTAMEM_CHAIN_GROUPS": "0"},
    "chunks_two_levels": {"DELTAMEM_SCAN_PARALLEL": "1", "DELTAMEM_CHAIN_GROUPS": "1"},
    "pytorch_activate": {"DELTAMEM_FUSED_ACTIVATE": "0"},
    "pytorch_scan": {"DELTAMEM_TRITON_SCAN": "0", "DELTAMEM_FUSED_ACTIVATE": "0"},
    # SDPA limited to its math backend (the dumps of session 9 named it masked_write_sdpa_math: writes
    # then still passed the padding mask, which write_history no longer does)
    "sdpa_math": {"_sdpa_math": "1"},
}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU runs the PyTorch paths only
KNOBS = sorted({key for env in CHOICES.values() for key in env if not key.startswith("_")})


def finite_max(x: torch.Tensor) -> float:
    x = x.detach().float()
    return float(x.abs().max()) if torch.isfinite(x).all() else float("nan")


class Watch:
    """Forward hooks: per memory layer, |v|, β range, |ρ| and |state| of the last call; per decoder
    layer, whether its output is finite."""

    def __init__(self, model):
        self.layers, self.decoder = {}, {}
        self.handles = []
        for index, memory in model.memory_layers.items():
            self.handles.append(memory.register_forward_hook(self._memory_hook(str(index))))
        blocks = model.base_model.model.layers  # the HF decoder blocks (Qwen2, Llama, SmolLM)
        for index, block in enumerate(blocks):
            self.handles.append(block.register_forward_hook(self._block_hook(index)))

    def _memory_hook(self, name: str):
        def hook(module, inputs, output):
            x = inputs[0]
            entry = {"x_max": finite_max(x), "reads_max": finite_max(output)}
            if module.last_beta is not None:
                entry.update(
                    beta_min=float(module.last_beta.detach().min()), beta_max=float(module.last_beta.detach().max())
                )
            if module.state is not None:
                entry["state_max"] = finite_max(module.state)
            self.layers.setdefault(name, []).append(entry)

        return hook

    def _block_hook(self, index: int):
        def hook(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            self.decoder.setdefault(index, []).append(bool(torch.isfinite(hidden).all()))

        return hook

    def first_bad_block(self) -> str | None:
        for index, flags in sorted(self.decoder.items()):
            for call, ok in enumerate(flags):
                if not ok:
                    return f"layer {index}, call {call} ({'write' if call == 0 else 'read'})"
        return None

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def replay(module: DeltaMemLightning, memory: dict, batch: dict, env: dict[str, str]) -> dict:
    for key in KNOBS:
        os.environ.pop(key, None)
    os.environ.update({k: v for k, v in env.items() if not k.startswith("_")})
    params = dict(module.model.memory_parameters())
    with torch.no_grad():
        for name, value in memory.items():
            params[name].copy_(value)
    for param in params.values():
        param.grad = None
    watch = Watch(module.model)
    every = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]
    try:
        with (
            torch.autocast(DEVICE, dtype=torch.bfloat16),
            sdpa_kernel([SDPBackend.MATH] if env.get("_sdpa_math") else every),
        ):
            parts = module.episode_loss(batch)
        parts["loss"].backward()
    finally:
        watch.close()
    grads = {n: p.grad.detach().float().clone() for n, p in params.items() if p.grad is not None}
    bad = [n for n, g in grads.items() if not torch.isfinite(g).all()]
    norm = math.sqrt(sum(float(g.double().square().sum()) for g in grads.values()))
    return {
        "loss": float(parts["loss"]),
        "ce": float(parts["ce"]),
        "grad_norm": norm,
        "nonfinite_parameters": bad[:8],
        "nonfinite_count": len(bad),
        "layers": watch.layers,
        "first_nonfinite_block": watch.first_bad_block(),
        "_grads": grads,
    }


def relative_difference(a: dict, b: dict) -> float:
    num = sum(float((a[n].double() - b[n].double()).square().sum()) for n in a if n in b)
    den = sum(float(b[n].double().square().sum()) for n in b)
    return math.sqrt(num / den) if den > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dump", type=Path)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "probe.json")
    parser.add_argument("overrides", nargs="*", help="dotlist overrides of the run's config (backbone.path=...)")
    args = parser.parse_intermixed_args()
    saved = torch.load(args.dump, weights_only=True)
    cfg = OmegaConf.load(args.dump.parent.parent / "config.yaml")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(args.overrides))
    _, model = build_model(cfg)
    module = DeltaMemLightning(model).to(DEVICE)
    batch = {k: v.to(DEVICE) for k, v in saved["batch"].items()}
    lengths = batch["write_attention_mask"].sum(1).tolist()
    report = {
        "event": saved["event"],
        "write_lengths": lengths,
        "read_lengths": batch["read_attention_mask"].sum(1).tolist(),
    }
    results = {name: replay(module, saved["memory"], batch, env) for name, env in CHOICES.items()}
    reference = results["pytorch_scan"]["_grads"]
    for name, result in results.items():
        result["grad_rel_diff_vs_pytorch_scan"] = relative_difference(result.pop("_grads"), reference)
    report["choices"] = results
    rows = {}
    for row in range(batch["read_input_ids"].shape[0]):
        one = {k: v[row : row + 1] for k, v in batch.items()}
        width = int(one["write_attention_mask"].sum())  # right padding: keep the row's own tokens
        for key in ("write_input_ids", "write_attention_mask", "write_segment_ids"):
            if key in one:
                one[key] = one[key][:, : max(width, 1)]
        result = replay(module, saved["memory"], one, {})
        result.pop("_grads")
        rows[row] = {k: result[k] for k in ("loss", "grad_norm", "nonfinite_count", "first_nonfinite_block")}
    report["rows_default"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    for name, result in results.items():
        print(
            f"{name:>18}: loss {result['loss']:.4f} grad_norm {result['grad_norm']:.4g} "
            f"nonfinite {result['nonfinite_count']} rel_diff {result['grad_rel_diff_vs_pytorch_scan']:.3g} "
            f"first_bad_block {result['first_nonfinite_block']}"
        )
    for row, result in rows.items():
        print(f"row {row} (write {lengths[row]}): {result}")


if __name__ == "__main__":
    main()
