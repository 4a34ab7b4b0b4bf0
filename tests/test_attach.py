"""Model-level behaviour of an attached δ-mem: identity at init, padding, isolation, state control."""

from __future__ import annotations

import pytest
import torch

from deltamem import MemoryState, MissingSegmentsError, StateBatchError, attach_memory, preset
from deltamem.attach import UnsupportedModelError

from conftest import tiny_model
from test_memory_math import randomise_memory

GEN = torch.Generator().manual_seed(0)


def ids_and_left_padded_mask(B=3, T=10, pad=(0, 3, 6)):
    ids = torch.randint(3, 250, (B, T), generator=GEN)
    mask = torch.ones(B, T, dtype=torch.long)
    for b, p in enumerate(pad[:B]):
        mask[b, :p] = 0
    return ids, mask


@pytest.mark.parametrize("variant", ["tsw", "msw"])
def test_identity_at_init_left_padded(family, variant):
    """S₀ = 0: before any write the wrapped model is the frozen model, bit for bit."""
    ids, mask = ids_and_left_padded_mask()
    model = tiny_model(family)
    with torch.no_grad():
        frozen = model(input_ids=ids, attention_mask=mask).logits
        wrapped = attach_memory(model, preset(variant))  # base_slice init: B ≠ 0
        assert any(p.abs().sum() > 0 for n, p in wrapped.memory_parameters() if n.endswith("B_q"))
        with wrapped.writes(False):
            unwritten = wrapped(input_ids=ids, attention_mask=mask).logits
        written = wrapped(input_ids=ids, attention_mask=mask).logits  # writes happen during this call
    real = mask.bool()
    assert torch.equal(unwritten[real], frozen[real])
    assert not torch.allclose(written[real], frozen[real])  # the memory does act once written


def test_zero_init_is_identity_even_while_writing(family):
    ids, mask = ids_and_left_padded_mask()
    model = tiny_model(family)
    with torch.no_grad():
        frozen = model(input_ids=ids, attention_mask=mask).logits
        wrapped = attach_memory(model, preset("tsw", b_init="zero"))
        out = wrapped(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(out[mask.bool()], frozen[mask.bool()])
    assert all(s.abs().sum() > 0 for s in wrapped.get_state().layers.values())


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_changes_neither_state_nor_real_outputs(side):
    model = tiny_model("qwen3")
    wrapped = attach_memory(model, preset("msw"))
    randomise_memory(wrapped, seed=1)
    ids = torch.randint(3, 250, (1, 7), generator=GEN)
    with torch.no_grad():
        alone = wrapped(input_ids=ids).logits
        state_alone = wrapped.get_state().clone()
        wrapped.reset_state()
        pad = torch.zeros(1, 4, dtype=torch.long)
        padded = torch.cat([pad, ids], 1) if side == "left" else torch.cat([ids, pad], 1)
        mask = (
            torch.cat([torch.zeros(1, 4), torch.ones(1, 7)], 1)
            if side == "left"
            else torch.cat([torch.ones(1, 7), torch.zeros(1, 4)], 1)
        )
        out = wrapped(input_ids=padded, attention_mask=mask.long()).logits
    real = mask.bool()[0]
    if side == "right":  # positions are unchanged with right padding: logits must match exactly
        assert torch.allclose(out[0, real], alone[0], atol=1e-5)
    for i, s in wrapped.get_state().layers.items():
        if side == "right":
            assert torch.allclose(s, state_alone.layers[i], atol=1e-5)
    # Left padding shifts RoPE positions in HF unless position_ids are given; give them and compare.
    if side == "left":
        wrapped.reset_state()
        pos = (mask.long().cumsum(-1) - 1).clamp_min(0)
        with torch.no_grad():
            out = wrapped(input_ids=padded, attention_mask=mask.long(), position_ids=pos).logits
        assert torch.allclose(out[0, real], alone[0], atol=1e-5)
        for i, s in wrapped.get_state().layers.items():
            assert torch.allclose(s, state_alone.layers[i], atol=1e-5)


def test_pad_token_content_is_irrelevant():
    """Whatever sits under a padding position, the state and the real tokens are the same."""
    model = tiny_model("llama")
    wrapped = attach_memory(model, preset("tsw"))
    randomise_memory(wrapped, seed=2)
    ids, mask = ids_and_left_padded_mask(B=2, pad=(0, 5))
    other = ids.clone()
    other[1, :5] = torch.randint(3, 250, (5,), generator=GEN)
    with torch.no_grad():
        a = wrapped(input_ids=ids, attention_mask=mask).logits
        sa = wrapped.get_state().clone()
        wrapped.reset_state()
        b = wrapped(input_ids=other, attention_mask=mask).logits
        sb = wrapped.get_state().clone()
    assert torch.allclose(a[mask.bool()], b[mask.bool()], atol=1e-5)
    assert all(torch.allclose(sa.layers[i], sb.layers[i], atol=1e-6) for i in sa.layers)


def test_writes_off_keeps_state_fixed():
    model = tiny_model("qwen3")
    wrapped = attach_memory(model, preset("tsw"))
    randomise_memory(wrapped)
    ids, mask = ids_and_left_padded_mask()
    with torch.no_grad():
        wrapped(input_ids=ids, attention_mask=mask)
        before = wrapped.get_state().clone()
        wrapped(input_ids=ids, attention_mask=mask, write=False)
        with wrapped.writes(False):
            wrapped(input_ids=ids, attention_mask=mask)
    after = wrapped.get_state()
    assert all(torch.equal(before.layers[i], after.layers[i]) for i in before.layers)


def test_samples_never_mix():
    """A sample's state and outputs do not depend on which other samples share its batch."""
    model = tiny_model("qwen3")
    wrapped = attach_memory(model, preset("msw"))
    randomise_memory(wrapped, seed=3)
    ids, mask = ids_and_left_padded_mask()
    with torch.no_grad():
        batch = wrapped(input_ids=ids, attention_mask=mask).logits
        batch_state = wrapped.get_state().clone()
        for b in range(3):
            wrapped.reset_state()
            single = wrapped(input_ids=ids[b : b + 1], attention_mask=mask[b : b + 1]).logits
            real = mask[b].bool()
            assert torch.allclose(single[0, real], batch[b, real], atol=1e-5)
            for i, s in wrapped.get_state().layers.items():
                assert torch.allclose(s[0], batch_state.layers[i][b], atol=1e-5)


def test_per_sample_reset():
    model = tiny_model("qwen3")
    wrapped = attach_memory(model, preset("tsw"))
    randomise_memory(wrapped)
    ids, mask = ids_and_left_padded_mask()
    with torch.no_grad():
        wrapped(input_ids=ids, attention_mask=mask)
    before = wrapped.get_state().clone()
    wrapped.reset_state(samples=torch.tensor([1]))
    for i, s in wrapped.get_state().layers.items():
        assert torch.all(s[1] == 0)
        assert torch.equal(s[0], before.layers[i][0]) and torch.equal(s[2], before.layers[i][2])


def test_snapshot_restore_and_batching_one_state_for_many_questions():
    model = tiny_model("qwen3")
    wrapped = attach_memory(model, preset("tsw"))
    randomise_memory(wrapped, seed=4)
    histories = torch.randint(3, 250, (2, 9), generator=GEN)
    questions = torch.randint(3, 250, (6, 4), generator=GEN)  # 3 questions per history
    with torch.no_grad():
        wrapped(input_ids=histories)
        snapshot = wrapped.get_state().clone()
        wrapped.set_state(snapshot.expand(3))
        batched = wrapped(input_ids=questions, write=False).logits
        for q in range(6):
            wrapped.set_state(snapshot.select([q // 3]))
            alone = wrapped(input_ids=questions[q : q + 1], write=False).logits
            assert torch.allclose(alone[0], batched[q], atol=1e-5)
        # restoring gives back exactly the snapshot, untouched by later writes
        wrapped.set_state(snapshot.clone())
        wrapped(input_ids=histories)
    assert not torch.equal(wrapped.get_state().layers[0], snapshot.layers[0])
    assert MemoryState.cat([snapshot, snapshot]).batch_size == 4


def test_state_batch_mismatch_is_an_error():
    model = tiny_model("qwen3")
    wrapped = attach_memory(model, preset("tsw"))
    with torch.no_grad():
        wrapped(input_ids=torch.randint(3, 250, (1, 5)))
        with pytest.raises(StateBatchError, match="expand"):
            wrapped(input_ids=torch.randint(3, 250, (2, 5)))


def test_history_in_chunks_carries_state_beyond_the_context_window():
    model = tiny_model("qwen3", max_position_embeddings=16)
    wrapped = attach_memory(model, preset("tsw"))
    randomise_memory(wrapped, seed=5)
    history = torch.randint(3, 250, (2, 50), generator=GEN)  # > 3× the context window
    with torch.no_grad():
        wrapped.write_history(history, chunk_size=16)
        chunked = wrapped.get_state().clone()
        wrapped.reset_state()
        for start in range(0, 50, 16):  # the same thing by hand: one call per chunk, state carried
            wrapped(input_ids=history[:, start : start + 16], use_cache=False)
        by_hand = wrapped.get_state().clone()
        wrapped.reset_state()
        wrapped.write_history(history[:, :16], chunk_size=16)
        first_only = wrapped.get_state().clone()
    assert all(torch.allclose(chunked.layers[i], by_hand.layers[i], atol=1e-6) for i in chunked.layers)
    assert not torch.allclose(chunked.layers[0], first_only.layers[0])  # later chunks did write


def test_decode_with_cache_equals_one_pass_and_generate_carries_state():
    model = tiny_model("qwen3")
    wrapped = attach_memory(model, preset("msw", targets=("q", "k", "v", "o")))
    randomise_memory(wrapped, seed=6, scale=0.2)
    ids, mask = ids_and_left_padded_mask(B=2, pad=(0, 3))
    with torch.no_grad():
        out = wrapped.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
        after_generate = wrapped.get_state().clone()
        wrapped.reset_state()
        # generate fed the prompt and every generated token but the last
        full = out[:, :-1]
        full_mask = torch.cat([mask, torch.ones(2, 3, dtype=torch.long)], 1)
        wrapped(input_ids=full, attention_mask=full_mask)
        one_pass = wrapped.get_state()
    for i in one_pass.layers:
        assert torch.allclose(after_generate.layers[i], one_pass.layers[i], atol=1e-5)


def test_ssw_needs_segment_ids_to_write():
    model = tiny_model("qwen3")
    wrapped = attach_memory(model, preset("ssw"))
    ids = torch.randint(3, 250, (1, 6))
    with pytest.raises(MissingSegmentsError, match="segment ids"):
        wrapped(input_ids=ids)
    with torch.no_grad():
        wrapped(input_ids=ids, write=False)  # reading needs no segments
        wrapped(input_ids=ids, segment_ids=torch.tensor([[-1, 0, 0, 1, 1, 1]]))
    assert wrapped.get_state().layers[0].abs().sum() > 0


def test_ssw_generate_writes_prompt_then_only_reads():
    model = tiny_model("qwen3")
    wrapped = attach_memory(model, preset("ssw"))
    randomise_memory(wrapped, seed=7)
    ids = torch.randint(3, 250, (1, 6), generator=GEN)
    segments = torch.tensor([[0, 0, 0, 1, 1, -1]])
    with torch.no_grad():
        wrapped(input_ids=ids, segment_ids=segments)
        after_prefill = wrapped.get_state().clone()
        wrapped.reset_state()
        wrapped.generate(input_ids=ids, segment_ids=segments, max_new_tokens=3, do_sample=False)
    assert torch.allclose(wrapped.get_state().layers[0], after_prefill.layers[0])


def test_layer_subset_and_targets():
    model = tiny_model("qwen3")
    wrapped = attach_memory(model, preset("tsw", layers=[1], targets=["q", "k", "v", "o"]))
    assert list(wrapped.memory_layers) == [1]
    names = {n for n, _ in wrapped.memory_parameters()}
    assert names == {f"layers.1.{p}" for p in ("in_proj", "beta_bias", "B_q", "B_k", "B_v", "B_o")}
    attn0 = model.model.layers[0].self_attn
    assert not hasattr(attn0, "delta_mem") and isinstance(attn0.q_proj, torch.nn.Linear)
    with pytest.raises(ValueError, match="out of range"):
        attach_memory(tiny_model("qwen3"), preset("tsw", layers=[5]))


def test_bf16_between_calls_is_a_reproduction_switch():
    ids = torch.randint(3, 250, (1, 12), generator=GEN)
    states = {}
    for dtype in ("float32", "bfloat16"):
        model = tiny_model("qwen3")
        wrapped = attach_memory(model, preset("tsw", state_dtype_between_calls=dtype))
        randomise_memory(wrapped, seed=8)
        with torch.no_grad():
            for t in range(12):  # decode-like: one call per token
                wrapped(input_ids=ids[:, : t + 1][:, -1:], use_cache=False)
        states[dtype] = wrapped.get_state().layers[0]
    assert states["float32"].dtype == torch.float32
    assert states["bfloat16"].dtype == torch.bfloat16
    assert not torch.equal(states["float32"], states["bfloat16"].float())


def test_detach_restores_the_original_model():
    model = tiny_model("qwen3")
    ids = torch.randint(3, 250, (1, 6))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        wrapped = attach_memory(model, preset("msw"))
        randomise_memory(wrapped)
        wrapped(input_ids=ids)
        original = wrapped.detach()
        after = original(input_ids=ids).logits
    assert torch.equal(before, after)
    assert not any("delta_mem" in n for n, _ in original.named_parameters())


def test_unsupported_model_is_named():
    class NoDecoder(torch.nn.Module):
        pass

    with pytest.raises(UnsupportedModelError, match="NoDecoder"):
        attach_memory(NoDecoder(), preset("tsw"))


def test_four_d_mask_is_rejected():
    model = tiny_model("qwen3")
    wrapped = attach_memory(model, preset("tsw"))
    with pytest.raises(ValueError, match="2-D"):
        wrapped(input_ids=torch.randint(3, 250, (1, 4)), attention_mask=torch.ones(1, 1, 4, 4, dtype=torch.bool))


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["tsw", "msw", "ssw"])
def test_fused_gpu_decode_equals_the_pytorch_path(variant, monkeypatch):
    import deltamem.layer as layer_module

    ids, mask = ids_and_left_padded_mask(B=3)
    runs = {}
    for fused in (True, False):
        monkeypatch.setattr(layer_module, "decode_kernel_available", lambda fused=fused: fused)
        model = tiny_model("qwen3").cuda()
        wrapped = attach_memory(model, preset(variant))
        randomise_memory(wrapped, seed=9, scale=0.2)
        segments = torch.arange(ids.shape[1]).div(3, rounding_mode="floor").expand(3, -1).cuda()
        with torch.no_grad():
            out = wrapped.generate(
                input_ids=ids.cuda(),
                attention_mask=mask.cuda(),
                max_new_tokens=6,
                do_sample=False,
                segment_ids=segments if variant == "ssw" else None,
            )
        runs[fused] = (out, {i: s.clone() for i, s in wrapped.get_state().layers.items()})
    assert torch.equal(runs[True][0], runs[False][0])
    for i, s in runs[False][1].items():
        assert torch.allclose(runs[True][1][i], s, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", ["tsw", "ssw"])
def test_right_padded_write_runs_without_a_key_mask_and_equals_each_row_alone(family, variant):
    """write_history on a right-padded batch calls the decoder with no attention mask (is_causal; the
    memory still skips padding); states and gradients equal writing every row alone. Left padding
    keeps the mask."""
    model = tiny_model(family)
    wrapped = attach_memory(model, preset(variant))
    randomise_memory(wrapped, seed=4)
    lengths = [12, 7, 0, 12]
    ids = torch.randint(3, 250, (4, 12), generator=GEN)
    mask = torch.zeros(4, 12, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    segments = torch.where(mask.bool(), torch.arange(12) // 4, -1)
    seen = []
    hook = wrapped.base_model.get_decoder().register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw.get("attention_mask")), with_kwargs=True
    )
    params = [p for _, p in wrapped.memory_parameters()]

    def write(rows: slice, width: int) -> tuple[dict, list]:
        wrapped.reset_state()
        wrapped.write_history(ids[rows, :width], mask[rows, :width], segments[rows, :width])
        states = wrapped.get_state().layers
        weights = {i: torch.arange(1, s[0].numel() + 1).view(s[0].shape) for i, s in states.items()}  # unequal
        loss = sum((s.square() * weights[i]).sum() for i, s in states.items())
        return {i: s.detach().clone() for i, s in states.items()}, torch.autograd.grad(loss, params, allow_unused=True)

    batched, batched_grads = write(slice(0, 4), 12)
    assert seen[-1] is None
    summed = [torch.zeros_like(p) for p in params]
    for b, n in enumerate(lengths):
        if n == 0:
            continue
        alone, grads = write(slice(b, b + 1), n)
        for i, s in alone.items():
            assert torch.allclose(batched[i][b], s[0], atol=1e-5), (b, i)
        summed = [acc + (g if g is not None else 0) for acc, g in zip(summed, grads)]
    for i, s in batched.items():
        assert torch.equal(s[2], torch.zeros_like(s[2]))  # the empty history writes nothing
    for got, want in zip(batched_grads, summed):  # fp32 sums in another order: relative norm error
        got = got if got is not None else torch.zeros_like(want)
        assert (got - want).norm() <= 1e-5 * want.norm().clamp_min(1e-6)
    hook.remove()


@pytest.mark.parametrize("chunk_size", [4, 5, 16])
def test_a_rows_state_never_depends_on_its_batch_partners_padding(chunk_size):
    """Left padding (or holes) in a batched write: every row's state equals writing its own tokens
    alone, for several paddings and chunk sizes (chunks start at each row's first token)."""
    model = tiny_model("qwen3")
    wrapped = attach_memory(model, preset("msw"))
    randomise_memory(wrapped, seed=5)
    T = 20
    ids = torch.randint(3, 250, (4, T), generator=GEN)
    mask = torch.ones(4, T, dtype=torch.long)
    mask[1, :3] = 0  # left padded by 3
    mask[2, :7] = 0  # by 7
    mask[3, 5:9] = 0  # a hole
    with torch.no_grad():
        wrapped.write_history(ids, mask, chunk_size=chunk_size)
        batched = wrapped.get_state().clone()
        for b in range(4):
            wrapped.reset_state()
            wrapped.write_history(ids[b : b + 1, mask[b].bool()], chunk_size=chunk_size)
            alone = wrapped.get_state()
            for i, s in alone.layers.items():
                assert torch.allclose(batched.layers[i][b], s[0], atol=1e-5), (b, i)
