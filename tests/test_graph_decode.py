"""GraphDecoder: static-cache greedy decoding (eager on CPU, CUDA-graph replays on GPU) against HF `generate`.

The eager static path is the oracle of the graph path; both must give HF greedy `generate`'s
tokens and, for δ-mem, its final memory state — for the frozen model and TSW/MSW/SSW, with left
padding. On GPU the graph is reused across calls of the same shape and stays correct.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_attach import ids_and_left_padded_mask

from deltamem import attach_memory, preset
from deltamem.backbones import build_random
from deltamem.graph_decode import GraphDecoder

from conftest import tiny_spec
from test_memory_math import randomise_memory

NEW = 6


def _models(variant: str | None, device: str, attention: str = "eager"):
    model = build_random(replace(tiny_spec("qwen3"), attn_implementation=attention)).eval().to(device)
    model.generation_config.pad_token_id = 0
    if variant is None:
        return model
    wrapped = attach_memory(model, preset(variant))
    randomise_memory(wrapped, seed=9, scale=0.2)
    return wrapped


def _segments(variant: str | None, ids: torch.Tensor) -> dict:
    if variant != "ssw":
        return {}
    return {"segment_ids": torch.arange(ids.shape[1], device=ids.device).div(3, rounding_mode="floor").expand_as(ids)}


def _hf_generate(model, ids, mask, variant):
    if variant is not None:
        model.reset_state()
    with torch.no_grad():
        return model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=NEW,
            min_new_tokens=NEW,
            do_sample=False,
            **_segments(variant, ids),
        )


def _states(model) -> dict[int, torch.Tensor]:
    return {i: s.clone() for i, s in model.get_state().layers.items()}


def _assert_matches_hf_generate(model, decoder: GraphDecoder, variant, ids, mask, calls: int, tol: float) -> None:
    """`calls` decoder runs on one shape (the later ones reuse cache, buffers and graph) give HF
    greedy `generate`'s tokens and, for δ-mem, its final memory state."""
    want = _hf_generate(model, ids, mask, variant)
    want_state = _states(model) if variant else None
    for _ in range(calls):
        if variant is not None:
            model.reset_state()
        got = decoder.generate(ids, mask, max_new_tokens=NEW, **_segments(variant, ids))
        assert torch.equal(got, want)
        if variant is not None:
            for i, s in _states(model).items():
                assert torch.allclose(s, want_state[i], atol=tol, rtol=10 * tol), f"layer {i} state differs"


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", [None, "tsw", "msw", "ssw"])
def test_static_eager_equals_hf_generate(variant, attention):
    ids, mask = ids_and_left_padded_mask(B=3)
    model = _models(variant, "cpu", attention)
    _assert_matches_hf_generate(model, GraphDecoder(model, use_graph=False), variant, ids, mask, calls=2, tol=1e-6)


def test_memory_off_prefill_keeps_decode_read_only():
    """write=False at prefill (memory_only questions) also holds for every decode step."""
    ids, mask = ids_and_left_padded_mask(B=2, pad=(0, 2))
    model = _models("tsw", "cpu")
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)  # some history in the state
    before = _states(model)
    decoder = GraphDecoder(model, use_graph=False)
    out = decoder.generate(ids, mask, max_new_tokens=NEW, write=False)
    assert out.shape == (2, ids.shape[1] + NEW)
    for i, s in _states(model).items():
        assert torch.equal(s, before[i])


def test_eos_pads_the_rest_of_the_row():
    ids, mask = ids_and_left_padded_mask(B=3)
    model = _models(None, "cpu")
    plain = GraphDecoder(model, use_graph=False).generate(ids, mask, max_new_tokens=NEW)
    eos = int(plain[0, ids.shape[1] + 1])  # row 0's second generated token
    got = GraphDecoder(model, use_graph=False).generate(ids, mask, max_new_tokens=NEW, eos_token_id=eos, pad_token_id=0)
    row = got[0, ids.shape[1] :]
    assert int(row[1]) == eos and torch.all(row[2:] == 0)


def test_bad_arguments_fail_clearly():
    model = _models(None, "cpu")
    ids, mask = ids_and_left_padded_mask(B=1, pad=(0,))
    with pytest.raises(ValueError, match="max_new_tokens"):
        GraphDecoder(model, use_graph=False).generate(ids, mask, max_new_tokens=0)
    with pytest.raises(ValueError, match="CUDA"):
        GraphDecoder(model, use_graph=True)
    decoder = GraphDecoder(model, use_graph=False)
    decoder.prefill(ids, mask, max_new_tokens=3)
    with pytest.raises(ValueError, match="room for 2"):
        decoder.decode(5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("variant", [None, "tsw", "msw", "ssw"])
def test_graph_equals_hf_generate_on_gpu(variant):
    """SDPA attention, as the real backbones use (transformers 5.17's eager-attention mask copies a
    host tensor, which a CUDA graph cannot capture; `GraphDecoder` then says so)."""
    ids, mask = ids_and_left_padded_mask(B=3)
    ids, mask = ids.cuda(), mask.cuda()
    model = _models(variant, "cuda", attention="sdpa")
    decoder = GraphDecoder(model)
    assert decoder.use_graph
    _assert_matches_hf_generate(model, decoder, variant, ids, mask, calls=3, tol=1e-5)
    assert decoder.captures == 1  # captured in the first call, replayed in the later ones


@pytest.mark.parametrize("variant", ["tsw", "msw", "ssw"])
def test_fused_decode_step_gives_the_same_tokens(variant, monkeypatch):
    """The fused step (Triton kernel, ρ in the model dtype, one GEMV for every s·B ρ, the correction
    as the GEMM bias at batch 1) against the PyTorch step — on CUDA when present, else on CPU through
    Triton's interpreter."""
    from deltamem.kernels.decode_step import triton_available
    from deltamem.layer import DeltaMemLayer

    if not triton_available():
        pytest.skip("triton not installed (and no CUDA, or TRITON_INTERPRET unset)")
    ids, mask = ids_and_left_padded_mask(B=3)
    runs = {}
    for fused in (False, True):
        if fused:
            monkeypatch.setattr(
                DeltaMemLayer,
                "_fused_decode_applies",
                lambda self, x, write: (
                    x.shape[1] == 1 and not torch.is_grad_enabled() and not (write and self.config.write == "ssw")
                ),
            )
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = _models(variant, device)
        ids, mask = ids.to(device), mask.to(device)
        outs = []
        for b in (1, 3):  # batch 1 takes the bias path, batch 3 the addmm path
            model.reset_state()
            decoder = GraphDecoder(model, use_graph=False)
            outs.append(decoder.generate(ids[:b], mask[:b], NEW, **_segments(variant, ids[:b])))
        runs[fused] = (outs, _states(model))
    for got, want in zip(runs[True][0], runs[False][0]):
        assert torch.equal(got, want)
    for i, s in runs[False][1].items():
        assert torch.allclose(runs[True][1][i], s, atol=1e-5, rtol=1e-4)


def test_pinned_state_is_written_in_place_and_unpinned_by_reset():
    """pin_state keeps each layer's state in one buffer that later writes update; reset unpins."""
    ids, mask = ids_and_left_padded_mask(B=2, pad=(0, 2))
    model = _models("tsw", "cpu")
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    written = _states(model)
    buffers = model.pin_state(2)
    for i, buffer in buffers.items():
        assert model.memory_layers[i].state is buffer and torch.equal(buffer, written[i])
    with torch.no_grad():
        model(input_ids=ids[:, :4], attention_mask=mask[:, :4])  # a second write lands in the same buffers
    for i, buffer in buffers.items():
        assert model.memory_layers[i].state is buffer and not torch.equal(buffer, written[i])
    assert model.pin_state(2, buffers) == buffers  # shapes fit: the same buffers are reused
    model.reset_state(torch.tensor([0]))  # forgetting one sample keeps the buffers
    assert all(model.memory_layers[i].state is b and not b[0].any() for i, b in buffers.items())
    model.reset_state()
    assert all(m.state is None and m.pinned is None for m in model.memory_layers.values())
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    assert all(model.memory_layers[i].state is not b for i, b in buffers.items())
