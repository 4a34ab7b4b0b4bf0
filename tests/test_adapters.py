"""Adapter files: both formats round-trip bit-identically; mismatches name the first bad tensor."""

from __future__ import annotations

import json

import pytest
import torch

from deltamem import attach_memory, preset
from deltamem.adapters import (
    AdapterFileError,
    AdapterMismatchError,
    load_adapter,
    read_adapter_config,
    release_config_to_ours,
    save_adapter,
    save_release_adapter,
)
from deltamem.config import ConfigError

from conftest import tiny_model
from test_memory_math import randomise_memory

IDS = torch.randint(3, 250, (2, 9), generator=torch.Generator().manual_seed(0))


def run(wrapped):
    wrapped.reset_state()
    with torch.no_grad():
        wrapped(input_ids=IDS)  # write
        return wrapped(input_ids=IDS, write=False).logits  # read


@pytest.mark.parametrize("variant", ["tsw", "ssw", "msw"])
@pytest.mark.parametrize("fmt", ["ours", "release"])
def test_round_trip_gives_bit_identical_outputs(tmp_path, variant, fmt):
    config = preset(variant)
    trained = attach_memory(tiny_model("qwen3"), config)
    randomise_memory(trained, seed=1)
    if fmt == "release":  # the release stores bf16: round the source so both sides hold the same values
        with torch.no_grad():
            for _, p in trained.memory_parameters():
                p.copy_(p.to(torch.bfloat16).float())
        save_release_adapter(trained, tmp_path)
        assert sorted(f.name for f in tmp_path.iterdir()) == ["delta_mem_adapter.pt", "delta_mem_config.json"]
    else:
        save_adapter(trained, tmp_path)
        assert sorted(f.name for f in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert read_adapter_config(tmp_path) == config
    fresh = attach_memory(tiny_model("qwen3"), read_adapter_config(tmp_path))
    load_adapter(fresh, tmp_path)
    for (name, a), (_, b) in zip(trained.memory_parameters(), fresh.memory_parameters()):
        assert torch.equal(a, b), name
    if variant == "ssw":
        return  # SSW needs segment ids to write; parameters equal is the whole claim
    assert torch.equal(run(trained), run(fresh))


def test_release_layout_keys_and_shapes(tmp_path):
    wrapped = attach_memory(tiny_model("qwen3"), preset("msw"))
    save_release_adapter(wrapped, tmp_path)
    tensors = torch.load(tmp_path / "delta_mem_adapter.pt", weights_only=True)
    p = "model.layers.1.self_attn."
    D, d, q_out, kv_out = 32, 64, 64, 32
    assert tensors[p + "memory_q_proj"].shape == (D, d) and tensors[p + "beta_proj"].shape == (D, d)
    assert tensors[p + "beta_bias"].shape == (D,)
    assert tensors[p + "delta_q_proj"].shape == (q_out, D) and tensors[p + "delta_o_proj"].shape == (d, D)
    assert tensors[p + "delta_k_proj"].shape == (kv_out, D) and torch.all(tensors[p + "delta_k_proj"] == 0)
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    cfg = json.loads((tmp_path / "delta_mem_config.json").read_text())
    assert cfg["num_state_heads"] == 4 and cfg["memory_write_granularity"] == "token"
    assert cfg["delta_heads"] == ["q", "o"] and cfg["output_init"] == "base_slice_fixed"


def test_release_config_variants():
    assert release_config_to_ours({"memory_write_granularity": "message_mean"}).write == "ssw"
    sentence = release_config_to_ours({"memory_write_granularity": "sentence_mean"})
    assert sentence.write == "ssw" and sentence.segment_unit == "sentence"
    assert release_config_to_ours({"num_state_heads": 4}).write == "msw"
    assert release_config_to_ours({"target_layers": []}).layers is None
    with pytest.raises(ConfigError, match="couple_lambda"):
        release_config_to_ours({"couple_lambda": False})


def test_shape_mismatch_names_the_first_tensor(tmp_path):
    save_adapter(attach_memory(tiny_model("qwen3"), preset("tsw")), tmp_path / "ours")
    save_release_adapter(attach_memory(tiny_model("qwen3"), preset("tsw")), tmp_path / "release")
    wider = attach_memory(tiny_model("qwen3", hidden_size=96, head_dim=24), preset("tsw"))
    with pytest.raises(AdapterMismatchError, match=r"'layers\.0\.in_proj' has shape \(32, 64\)"):
        load_adapter(wider, tmp_path / "ours")
    with pytest.raises(AdapterMismatchError, match=r"'model\.layers\.0\.self_attn\.memory_q_proj' has shape \(8, 64\)"):
        load_adapter(wider, tmp_path / "release")
    other_rank = attach_memory(tiny_model("qwen3"), preset("tsw", rank=4))
    with pytest.raises(AdapterMismatchError, match=r"'layers\.0\.in_proj'"):
        load_adapter(other_rank, tmp_path / "ours")


def test_config_mismatch_without_shape_change_is_named(tmp_path):
    save_adapter(attach_memory(tiny_model("qwen3"), preset("tsw")), tmp_path)
    ssw = attach_memory(tiny_model("qwen3"), preset("ssw"))  # same shapes, other write strategy
    with pytest.raises(AdapterMismatchError, match="'write' is 'tsw' in the file but 'ssw'"):
        load_adapter(ssw, tmp_path)


def test_missing_tensor_is_named_and_nothing_is_loaded(tmp_path):
    from safetensors.torch import load_file, save_file

    source = attach_memory(tiny_model("qwen3"), preset("tsw"))
    randomise_memory(source)
    save_adapter(source, tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    del tensors["layers.1.B_o"]
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    target = attach_memory(tiny_model("qwen3"), preset("tsw"))
    before = {n: p.clone() for n, p in target.memory_parameters()}
    with pytest.raises(AdapterMismatchError, match="missing tensor 'layers.1.B_o'"):
        load_adapter(target, tmp_path)
    assert all(torch.equal(before[n], p) for n, p in target.memory_parameters())


def test_release_weights_are_read_without_executing_code(tmp_path):
    wrapped = attach_memory(tiny_model("qwen3"), preset("tsw"))
    save_release_adapter(wrapped, tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "delta_mem_adapter.pt")
    with pytest.raises(AdapterFileError, match="refused, the pickle holds executable code"):
        load_adapter(wrapped, tmp_path)
