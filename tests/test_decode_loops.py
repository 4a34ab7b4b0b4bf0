"""The two token loops of `ChatDecoder` (deltamem/decode_loops.py): the static-cache steps that CUDA
graphs replay give the eager loop's tokens, for the frozen model and δ-mem; and a batch the static
loop cannot decode is refused under `decode_loop=graph`, decoded eagerly under `auto`."""

from __future__ import annotations

import pytest
import torch

from evals.chat_method import FrozenBackbone
from evals.decoding import ChatDecoder
from evals.methods import History, Query
from evals.types import Generation

from test_eval_runner import SAMPLED, chat, memory_method, sharp_backbone


def decoder_like(decoder: ChatDecoder, loop: str, **kwargs) -> ChatDecoder:
    return ChatDecoder(decoder.backend, decoder.tokenizer, decoder.max_context_tokens, decoder.batch_size,
                       decode_loop=loop, **kwargs)


@pytest.fixture(scope="module")
def vanilla() -> FrozenBackbone:
    return FrozenBackbone(sharp_backbone(), batch_size=3)


def test_static_steps_give_the_eager_tokens_for_the_frozen_model(vanilla):
    eager, static = decoder_like(vanilla.decoder, "eager"), decoder_like(vanilla.decoder, "graph", graph_bucket=16)
    prompts = [eager.encode(chat(i, length=4 + i)) for i in range(5)]  # a shared head, tails of 5 lengths
    settings = [Generation(max_new_tokens=n) for n in (7, 3, 9, 1, 7)]  # rows end at different steps
    want = eager.generate(prompts, settings)
    got = static.generate(prompts, settings)
    assert [a.text for a in got] == [a.text for a in want]
    assert [a.output_tokens for a in got] == [a.output_tokens for a in want] == [7, 3, 9, 1, 7]
    assert len({a.text for a in want}) > 1  # outputs differ between prompts: the check means something
    assert static.loops_used == {"graph": 2} and eager.loops_used == {"eager": 2}  # batches of 3 and 2
    first = [a.text for a in static.generate(prompts[:3], settings[:3])]
    buffers = static._static._buffers
    again = [a.text for a in static.generate(prompts[:3], settings[:3])]  # the same shapes: buffers reused
    assert first == again == [a.text for a in want[:3]] and static._static._buffers is buffers


def test_a_stop_token_ends_a_row_in_both_loops(vanilla):
    eager = decoder_like(vanilla.decoder, "eager")
    prompts = [eager.encode(chat(i)) for i in range(3)]
    free = vanilla.model.generate(torch.tensor([prompts[0]]), max_new_tokens=8, do_sample=False, pad_token_id=0)
    stop = int(free[0, len(prompts[0]) + 2])  # row 0's third token (the decoder equals HF generate: test_eval_runner)
    results = []
    for loop in ("eager", "graph"):
        decoder = decoder_like(vanilla.decoder, loop)
        decoder.stop_ids = decoder.stop_ids | {stop}
        results.append(decoder.generate(prompts, [Generation(max_new_tokens=8)] * 3))
    assert [a.text for a in results[0]] == [a.text for a in results[1]]
    assert [a.output_tokens for a in results[0]] == [a.output_tokens for a in results[1]]
    generated = free[0, len(prompts[0]):].tolist()
    assert results[0][0].output_tokens == generated.index(stop)  # stopped at the stop token's first place


HISTORY = History("c", [{"role": "user", "content": "my cat is called Tom. " * 6},
                        {"role": "assistant", "content": "ok"}])


def answers_by_loop(method, loops: tuple[str, ...], queries: list[Query]) -> tuple[dict, dict]:
    """The method's answers after memorising HISTORY, and the loops that decoded them, per token
    loop asked for (each a fresh decoder)."""
    answers, used = {}, {}
    for loop in loops:
        method.decoder = decoder_like(method.decoder, loop)
        method.memorize(HISTORY)
        answers[loop] = [a.text for a in method.answer(queries)]
        used[loop] = method.decoder.loops_used
    return answers, used


@pytest.mark.parametrize("write", ["tsw", "ssw", "msw"])
def test_static_steps_give_the_eager_tokens_for_deltamem(write):
    method = memory_method(write=write)
    queries = [Query(f"q{i}", chat(i, 2), "", Generation(max_new_tokens=6)) for i in range(4)]
    answers, used = answers_by_loop(method, ("eager", "graph"), queries)
    assert answers["graph"] == answers["eager"] and used == {"eager": {"eager": 2}, "graph": {"graph": 2}}
    method.memorize(History("d", [{"role": "user", "content": "the weather was cold. " * 9}]))
    assert [a.text for a in method.answer(queries)] != answers["eager"]  # the memory changes the answers


def test_static_steps_give_the_eager_tokens_for_sampled_rows(vanilla):
    """LoCoMo's paper decoding samples: each row with its own seed, greedy rows beside them."""
    eager, static = decoder_like(vanilla.decoder, "eager"), decoder_like(vanilla.decoder, "graph", graph_bucket=16)
    prompts = [eager.encode(chat(i, length=4 + i)) for i in range(5)]
    settings = [Generation(max_new_tokens=8, seed=42 + i, **SAMPLED) for i in range(4)] + [Generation(max_new_tokens=8)]
    want = eager.generate(prompts, settings)
    assert [a.text for a in static.generate(prompts, settings)] == [a.text for a in want]
    assert static.loops_used == {"graph": 2}
    greedy = [Generation(max_new_tokens=8)] * 5  # the same shapes, greedy: the sampled buffers serve it
    assert [a.text for a in static.generate(prompts, greedy)] == [a.text for a in eager.generate(prompts, greedy)]
    assert [a.text for a in want] != [a.text for a in eager.generate(prompts, greedy)]  # sampling changed rows


@pytest.mark.parametrize("write", ["tsw", "msw"])
def test_static_steps_give_the_eager_tokens_for_sampled_deltamem_rows(write):
    method = memory_method(write=write)
    queries = [Query(f"q{i}", chat(i, 2), "", Generation(max_new_tokens=6, seed=i, **SAMPLED)) for i in range(4)]
    answers, used = answers_by_loop(method, ("eager", "graph"), queries)
    assert answers["graph"] == answers["eager"] and used["graph"] == {"graph": 2}


def test_what_the_static_loop_cannot_decode_is_refused_or_decoded_eagerly(vanilla):
    prompts = [vanilla.decoder.encode(chat(i)) for i in range(2)]
    auto = decoder_like(vanilla.decoder, "auto")
    auto.generate(prompts, [Generation(max_new_tokens=4)] * 2)
    assert auto.loops_used == {"eager": 1}  # auto decodes eagerly off CUDA

    class Unsafe(type(vanilla.decoder.backend)):
        graph_safe = False

    unsafe = ChatDecoder(Unsafe(vanilla.model), vanilla.tokenizer, 4096, decode_loop="graph")
    with pytest.raises(ValueError, match="Unsafe is not graph-safe"):
        unsafe.generate(prompts, [Generation(max_new_tokens=4)] * 2)
    with pytest.raises(ValueError, match="decode_loop must be one of"):
        ChatDecoder(vanilla.decoder.backend, vanilla.tokenizer, 4096, decode_loop="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("sampled", [False, True])
def test_graph_replays_give_the_eager_tokens_on_gpu(sampled):
    """Sampled rows: the generators registered with the graph advance on each replay as in eager steps,
    and a second batch reseeds them (two batches, one capture)."""
    loaded = sharp_backbone()
    loaded.model.to("cuda")
    method = FrozenBackbone(loaded, batch_size=4)
    prompts = [method.decoder.encode(chat(i)) for i in range(8)]
    extra = SAMPLED if sampled else {}
    settings = [Generation(max_new_tokens=12, seed=42 + i if sampled else None, **extra) for i in range(8)]
    want = decoder_like(method.decoder, "eager").generate(prompts, settings)
    graph = decoder_like(method.decoder, "auto")
    assert [a.text for a in graph.generate(prompts, settings)] == [a.text for a in want]
    assert graph.loops_used == {"graph": 2} and graph._static.captures == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("write", ["tsw", "msw"])
def test_graph_replays_give_the_eager_tokens_for_deltamem_on_gpu(write):
    """δ-mem on CUDA: the pinned state, the fused decode step and the graph replays against eager."""
    from deltamem.config import DeltaMemConfig
    from evals.deltamem_method import DeltaMemMethod

    loaded = sharp_backbone()
    loaded.model.to("cuda")
    memory = DeltaMemConfig(write=write, b_init="base_slice", base_slice_scale=2.0)
    method = DeltaMemMethod(loaded, memory=memory, batch_size=4, untrained=True)
    queries = [Query(f"q{i}", chat(i, 2), "", Generation(max_new_tokens=10)) for i in range(4)]
    queries += [Query(f"s{i}", chat(i, 2), "", Generation(max_new_tokens=10, seed=i, **SAMPLED)) for i in range(4)]
    answers, used = answers_by_loop(method, ("eager", "auto"), queries)
    assert answers["auto"] == answers["eager"] and used["auto"] == {"graph": 2}  # a greedy and a sampled batch


def test_the_eval_task_applies_config_decoding_and_records_the_loops(tmp_path):
    """`decoding.loop` reaches the method's decoder; results.json says which loop decoded each batch;
    a run with another loop has the same fingerprint (an execution setting) and the same answers."""
    from test_fingerprint import eval_cfg

    from evals.tasks import evaluate

    run = tmp_path / "run"
    eager = evaluate(eval_cfg(run, "decoding.loop=eager"), conditions=["no_context"], progress=False)
    assert eager["timing"]["decode_loop"] == "eager" and set(eager["timing"]["decode_loops_this_process"]) == {"eager"}
    graph = evaluate(eval_cfg(tmp_path / "graph", "decoding.loop=graph", "decoding.graph_bucket=64"),
                     conditions=["no_context"], progress=False)
    assert graph["timing"]["decode_loop"] == "graph" and set(graph["timing"]["decode_loops_this_process"]) == {"graph"}
    assert graph["fingerprint"] == eager["fingerprint"]
    assert graph["conditions"]["no_context"] == eager["conditions"]["no_context"]
    with pytest.raises(ValueError, match="decode_loop must be one of"):
        evaluate(eval_cfg(tmp_path / "bad", "decoding.loop=fast"), conditions=["no_context"], progress=False)


def test_a_low_precision_state_between_calls_is_not_pinned():
    from deltamem.config import DeltaMemConfig
    from evals.deltamem_method import DeltaMemMethod

    memory = DeltaMemConfig(write="tsw", b_init="base_slice", state_dtype_between_calls="bfloat16")
    method = DeltaMemMethod(sharp_backbone(), memory=memory, batch_size=2, untrained=True)
    method.decoder.use_loop("graph")
    with pytest.raises(ValueError, match="keeps its state in low precision between calls"):
        method.answer([Query("q", chat(1, 2), "", Generation(max_new_tokens=3))])
