"""Exact trainable-parameter counts on the real architectures (meta device: no weights, no download)."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from deltamem import attach_memory
from deltamem.backbones import build_random

from conftest import compose_config


def compose_cfg(*overrides: str):
    """The composed config; without `experiment=...` among the overrides, no experiment (not the
    quickstart default) is applied."""
    return compose_config(*overrides)


@pytest.mark.parametrize(
    "backbone, memory, expected",
    [
        ("qwen3_4b", "tsw", 4_866_336),  # the paper's 4.87M (0.12%)
        ("qwen3_4b", "ssw", 4_866_336),
        ("qwen3_4b", "msw", 19_465_344),  # the paper's 19.47M (0.48%)
        ("qwen3_8b", "tsw", 7_078_176),
        ("qwen3_8b", "msw", 28_312_704),
        ("smollm3_3b", "msw", 14_156_928),
        ("smollm3_3b", "tsw", 3_539_232),
        # Qwen2.5-Coder-0.5B: d = 896, q_out = 14·64 = 896, 24 layers.
        # TSW, D = 8:  3·8·896 + (8·896 + 8) + 896·8 + 896·8
        #            = 21,504 + 7,176 + 7,168 + 7,168 = 43,016 per layer; ×24
        ("qwen25_coder_0p5b", "tsw", 1_032_384),
        # MSW, D = 32: 3·32·896 + (32·896 + 32) + 896·32 + 896·32
        #            = 86,016 + 28,704 + 28,672 + 28,672 = 172,064 per layer; ×24
        ("qwen25_coder_0p5b", "msw", 4_129_536),
        # Qwen2.5-Coder-1.5B: d = 1536, q_out = 12·128 = 1536, 28 layers.
        # TSW: 36,864 + 12,296 + 12,288 + 12,288 = 73,736 per layer; ×28
        ("qwen25_coder_1p5b", "tsw", 2_064_608),
        # MSW: 147,456 + 49,184 + 49,152 + 49,152 = 294,944 per layer; ×28
        ("qwen25_coder_1p5b", "msw", 8_258_432),
    ],
)
def test_trainable_counts_match_the_paper(backbone, memory, expected):
    cfg = compose_cfg(f"backbone={backbone}", f"memory={memory}")
    model = build_random(instantiate(cfg.backbone), device="meta")
    wrapped = attach_memory(model, instantiate(cfg.memory))
    summary = wrapped.parameter_summary()
    assert summary.trainable == expected
    # formula of METHOD.md §2, per layer: 3·D·d + (D·d + D) + q_out·D + d·D
    arch = cfg.backbone.architecture
    D = cfg.memory.rank * cfg.memory.num_state_heads
    d, q_out = (
        arch.hidden_size,
        arch.num_attention_heads * arch.get("head_dim", arch.hidden_size // arch.num_attention_heads),
    )
    assert expected == arch.num_hidden_layers * (3 * D * d + D * d + D + q_out * D + d * D)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "delta_mem" not in n)


def test_qwen3_4b_share_is_the_papers():
    cfg = compose_cfg("backbone=qwen3_4b", "memory=tsw")
    wrapped = attach_memory(build_random(instantiate(cfg.backbone), device="meta"), instantiate(cfg.memory))
    assert round(100 * wrapped.parameter_summary().trainable_fraction, 2) == 0.12


def test_kv_targets_and_layer_subsets_change_the_count():
    cfg = compose_cfg("backbone=qwen3_4b", "memory=tsw", "memory.targets=[q,k,v,o]", "memory.layers=[10,11,12]")
    wrapped = attach_memory(build_random(instantiate(cfg.backbone), device="meta"), instantiate(cfg.memory))
    D, d, q_out, kv_out = 8, 2560, 4096, 1024
    assert wrapped.parameter_summary().trainable == 3 * (4 * D * d + D + q_out * D + 2 * kv_out * D + d * D)
