"""Shared fixtures: tiny random backbones of each supported family, offline hub, markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
if not torch.cuda.is_available():  # before any kernel module is imported: @triton.jit reads it once
    os.environ.setdefault("TRITON_INTERPRET", "1")

from deltamem.backbones import BackboneSpec, build_random  # noqa: E402
from evals.fingerprint import register_resolver  # noqa: E402

register_resolver()  # as src/run.py does: ${eval_fingerprint:} and ${join:} resolve in composed configs

REPO_ROOT = Path(__file__).resolve().parents[1]

# A few-layer random model per attention family δ-mem supports (fp32 so equalities are exact).
TINY_ARCHITECTURES = {
    "qwen3": dict(
        model_type="qwen3",
        vocab_size=256,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        rope_theta=10000.0,
    ),
    "llama": dict(
        model_type="llama",
        vocab_size=256,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=3,
        num_key_value_heads=1,
        rope_theta=10000.0,
    ),
    "qwen2": dict(  # q/k/v projections carry biases (Qwen2's default)
        model_type="qwen2",
        vocab_size=256,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=10000.0,
    ),
    "smollm3": dict(
        model_type="smollm3",
        vocab_size=256,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        no_rope_layer_interval=2,
        rope_theta=10000.0,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    ),
}


def compose_config(*overrides: str):
    """The composed config with no experiment and no task settings beyond the overrides: without
    `task=...` among them, `task=attach` (the default task, quickstart, brings its own settings);
    `~experiment` in the overrides is accepted and dropped (the default experiment is none)."""
    from hydra import compose, initialize_config_dir

    overrides = tuple(o for o in overrides if o != "~experiment")
    task = [] if any(o.startswith(("task=", "experiment=")) for o in overrides) else ["task=attach"]
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[*task, *overrides])


def tiny_spec(family: str = "qwen3", seed: int = 0, **overrides) -> BackboneSpec:
    arch = {**TINY_ARCHITECTURES[family], **overrides}
    return BackboneSpec(
        name=f"tiny_{family}",
        random_init=True,
        dtype="float32",
        device="cpu",
        attn_implementation="eager",
        architecture=arch,
        seed=seed,
    )


def tiny_model(family: str = "qwen3", seed: int = 0, **overrides) -> torch.nn.Module:
    return build_random(tiny_spec(family, seed, **overrides)).eval()


def tiny_adapter(folder: Path) -> Path:
    """A TSW adapter for `backbone=tiny` whose memory visibly changes the outputs (random, seeded)."""
    from hydra.utils import instantiate

    from deltamem.adapters import save_adapter
    from deltamem.attach import attach_memory
    from deltamem.backbones import load_backbone

    cfg = compose_config("backbone=tiny", "memory=tsw", "memory.beta_bias_init=0.0")
    loaded = load_backbone(instantiate(cfg.backbone))
    torch.manual_seed(0)
    model = attach_memory(loaded.model, instantiate(cfg.memory))
    with torch.no_grad():
        for _, p in model.memory_parameters():
            p.add_(0.3 * torch.randn_like(p))
    return save_adapter(model, folder)


@pytest.fixture(params=sorted(TINY_ARCHITECTURES))
def family(request) -> str:
    return request.param


@pytest.fixture
def data_dir() -> Path:
    """Real benchmark data (never committed): $DELTAMEM_DATA_DIR or ../shared/data."""
    path = Path(os.environ.get("DELTAMEM_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"benchmark data directory {path} not found (set DELTAMEM_DATA_DIR)")
    return path


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--runslow") or os.environ.get("DELTAMEM_RUN_SLOW") == "1"
    has_gpu = torch.cuda.is_available()
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --runslow or DELTAMEM_RUN_SLOW=1"))
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
