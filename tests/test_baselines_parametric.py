"""Context2LoRA, MLP memory and MemGen on the tiny backbone: pinned behaviours, runner, configs."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.utils import instantiate

from baselines.context2lora import Context2LoRA, EpisodeLoRA, history_token_ids, lm_loss
from baselines.memgen import MemGen
from baselines.mlp_memory import MLPMemory
from deltamem.backbones import load_backbone
from deltamem.train_data import SyntheticChats
from evals.chat_method import ChatModelMethod
from evals.methods import ALL_CONDITIONS, History, Query
from evals.runner import EvalRunner
from evals.synthetic import SyntheticBenchmark
from evals.types import Generation

from conftest import compose_config

SYSTEM = {"role": "system", "content": "You are a helpful assistant with a memory of earlier conversations."}
HISTORY = History(
    "ctx",
    [
        {"role": "user", "content": "My friend Alice just moved to Paris."},
        {"role": "assistant", "content": "Good to know!"},
        {"role": "user", "content": "Bob works as a teacher."},
        {"role": "assistant", "content": "Noted."},
    ],
)
QUESTIONS = ["Where does Alice live now?", "What is Bob's job now, and where does he work these days?"]


def compose_cfg(*overrides: str):
    return compose_config(*overrides)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls: one intra-op thread is many times faster than two on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cfg():
    return compose_cfg()


def fresh(cfg):
    """A new tiny backbone (Context2LoRA injects its LoRA into the model it is given)."""
    return load_backbone(instantiate(cfg.backbone))


@pytest.fixture(scope="module")
def shared(cfg):
    """A tiny backbone for methods that never modify the model (MLP memory, MemGen)."""
    return fresh(cfg)


def queries(questions=QUESTIONS, max_new_tokens=6):
    return [
        Query(f"q{i}", [SYSTEM, {"role": "user", "content": q}], q, Generation(max_new_tokens=max_new_tokens))
        for i, q in enumerate(questions)
    ]


def record(method):
    """Wrap the method's backend so every forward's (phase, logits) is kept."""
    calls = []
    backend = method.decoder.backend
    forward = backend.forward

    def recording(input_ids, attention_mask, position_ids, cache, phase, segment_ids=None):
        logits, cache = forward(input_ids, attention_mask, position_ids, cache, phase, segment_ids)
        calls.append((phase, logits.clone()))
        return logits, cache

    backend.forward = recording
    return calls


def answer_logits(method, qs=None):
    """(answer texts, logits of every non-prefix forward) for `qs`."""
    calls = record(method)
    method.decoder.forget_prefix()
    answers = method.answer(qs or queries())
    del method.decoder.backend.forward
    return [a.text for a in answers], [logits for phase, logits in calls if phase != "prefix"]


def assert_same(a, b):
    assert a[0] == b[0]
    assert len(a[1]) == len(b[1])
    for x, y in zip(a[1], b[1]):
        assert torch.equal(x, y)


def run_benchmark(method, conditions, tmp_path):
    benchmark = SyntheticBenchmark(num_episodes=3)
    runner = EvalRunner(benchmark, method, conditions, tmp_path / "run", progress=False)
    results = runner.run()
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["method"] == method.name
    for condition in conditions:
        if condition in method.conditions:
            assert saved["conditions"][condition]["n"] == 3
    return results


# ----------------------------------------------------------------- Context2LoRA
def test_context2lora_trains_only_the_lora_and_reset_restores_the_backbone(cfg):
    loaded = fresh(cfg)
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    frozen = answer_logits(ChatModelMethod(loaded))
    method = Context2LoRA(loaded, steps=4, lr=1e-2, max_length=32, train_batch_size=2)
    assert_same(answer_logits(method), frozen)  # B = 0: the identity
    initial = method.lora_state()

    ids = history_token_ids(method.builder, HISTORY.messages)
    t = torch.tensor([ids])
    with torch.no_grad():
        loss_before = float(lm_loss(loaded.model, t, t, torch.ones_like(t)))
    method.memorize(HISTORY)
    assert len(method.losses) == 4
    with torch.no_grad():
        assert float(lm_loss(loaded.model, t, t, torch.ones_like(t))) < loss_before
    after = dict(loaded.model.named_parameters())
    for name, param in after.items():
        if "lora_" in name:
            continue
        assert torch.equal(param, before[name.replace(".base_layer", "")]), name  # backbone bit-identical
    changed = [n for n, p in method.lora_params.items() if not torch.equal(p, initial[n])]
    assert any("lora_B" in n for n in changed) and all("lora_" in n for n in changed)
    assert not all(not p.requires_grad for p in method.lora_params.values())
    assert all(not p.requires_grad for n, p in after.items() if "lora_" not in n)
    assert answer_logits(method)[1][0].ne(frozen[1][0]).any()

    method.reset()
    assert all(torch.equal(p, initial[n]) for n, p in method.lora_params.items())
    assert_same(answer_logits(method), frozen)
    cost = method.cost()
    assert cost["extra_trainable_params"] == sum(p.numel() for p in method.lora_params.values()) > 0
    assert cost["memorize_train_steps"] == 4 and method.conditions == ("memory_only", "recent_window")
    with pytest.raises(ValueError, match="fresh backbone"):
        Context2LoRA(loaded)


def test_episode_lora_trains_once_is_fixed_and_round_trips(cfg, tmp_path):
    episodes = SyntheticChats(num_episodes=6, seed=0)
    method = EpisodeLoRA(
        fresh(cfg),
        episodes=episodes,
        episode_steps=2,
        train_batch_size=2,
        max_length=256,
        lr=1e-2,
        save_to=str(tmp_path / "lora"),
    )
    assert method.name == "episode_lora" and method.conditions == ALL_CONDITIONS
    assert len(method.losses) == 2
    trained = method.lora_state()
    assert any(v.abs().sum() > 0 for k, v in trained.items() if "lora_B" in k)
    ids, labels = method.episode_sequence(episodes[0])
    assert 0 < sum(label != -100 for label in labels) < len(ids)  # answer labels only
    method.memorize(HISTORY)  # nothing to learn per context
    method.reset()
    assert all(torch.equal(p, trained[n]) for n, p in method.lora_params.items())
    out = answer_logits(method)
    again = Context2LoRA(fresh(cfg), train_on="episodes", adapter=str(tmp_path / "lora"), max_length=256)
    assert_same(answer_logits(again), out)
    assert again.cost()["episode_train_steps"] == 2


def test_context2lora_runs_through_the_runner(cfg, tmp_path):
    method = Context2LoRA(fresh(cfg), steps=2, max_length=64)
    results = run_benchmark(method, ["memory_only", "recent_window", "full_context"], tmp_path)
    assert results["skipped_conditions"] == ["full_context"]
    assert results["method_cost"]["extra_trainable_params"] > 0


# ----------------------------------------------------------------- MLP memory
def test_mlp_memory_lambda_zero_is_the_frozen_backbone(shared):
    frozen = answer_logits(ChatModelMethod(shared))
    method = MLPMemory(shared, lam=0.0, steps=3)
    method.memorize(HISTORY)
    assert method.datastore is not None and len(method.datastore) > 10
    assert_same(answer_logits(method), frozen)


def test_untrained_mlp_with_embedding_head_predicts_p_lm(shared):
    frozen = answer_logits(ChatModelMethod(shared))
    method = MLPMemory(shared, lam=0.5, steps=0)
    method.memorize(HISTORY)
    texts, logits = answer_logits(method)
    assert texts == frozen[0]
    for mixed, raw in zip(logits, frozen[1]):
        torch.testing.assert_close(mixed, raw.log_softmax(-1), atol=1e-5, rtol=1e-5)


def test_mlp_training_imitates_the_knn_distribution(shared):
    method = MLPMemory(shared, lam=0.5, steps=40, lr=3e-3, train_batch_size=32, mlp_hidden=128)
    method.memorize(HISTORY)
    first, last = sum(method.losses[:5]) / 5, sum(method.losses[-5:]) / 5
    assert last < first
    assert method.cost()["extra_trainable_params"] == sum(p.numel() for p in method.mlp.parameters())
    assert answer_logits(method)[0]  # answers with the mixture
    method.reset()
    assert method.datastore is None and method.backend.memory_log_probs is None


def test_knn_mode_puts_a_planted_continuation_on_top(shared):
    planted = "Paris"
    history = History("plant", [{"role": "user", "content": QUESTIONS[0]}, {"role": "assistant", "content": planted}])
    method = MLPMemory(shared, mode="knn", lam=1.0, knn_temperature=0.01)
    method.memorize(history)
    prompt = method.decoder.encode([{"role": "user", "content": QUESTIONS[0]}])
    ids = history_token_ids(method.builder, history.messages)
    assert ids[: len(prompt)] == prompt  # the prompt's last state is a key; its value the planted token
    frozen_texts, frozen_logits = answer_logits(ChatModelMethod(shared), queries([QUESTIONS[0]]))
    q = [Query("p", [{"role": "user", "content": QUESTIONS[0]}], QUESTIONS[0], Generation(max_new_tokens=3))]
    texts, logits = answer_logits(method, q)
    assert int(logits[0].argmax()) == ids[len(prompt)]
    assert texts[0].startswith(planted)
    assert method.cost()["extra_trainable_params"] == 0


def test_mlp_memory_runs_through_the_runner(shared, tmp_path):
    method = MLPMemory(shared, steps=3, mlp_hidden=64)
    results = run_benchmark(method, ["memory_only", "recent_window"], tmp_path)
    assert results["method"] == "mlp_memory"


# ----------------------------------------------------------------- MemGen
def test_memgen_trigger_off_is_the_frozen_backbone_and_on_changes_logits(shared):
    frozen = answer_logits(ChatModelMethod(shared))
    off = MemGen(shared, trigger="never", num_latents=4, weaver_dim=32)
    off.memorize(HISTORY)
    assert off.backend.latents is not None and off.backend.latents.shape == (4, 64)
    assert_same(answer_logits(off), frozen)
    on = MemGen(shared, trigger="always", num_latents=4, weaver_dim=32)
    on.memorize(HISTORY)
    assert answer_logits(on)[1][0].ne(frozen[1][0]).any(dim=-1).all()
    on.reset()
    assert_same(answer_logits(on), frozen)  # nothing memorised: nothing inserted


def test_memgen_changes_only_the_rows_whose_trigger_fires(shared):
    frozen = answer_logits(ChatModelMethod(shared))
    method = MemGen(shared, trigger="learned", num_latents=4, weaver_dim=32)
    method.memorize(HISTORY)
    method.trigger_decision = lambda h: torch.arange(h.shape[0]) == 0  # row 0: the shortest tail
    texts, logits = answer_logits(method)
    assert texts[1] == frozen[0][1]
    assert logits[0][0].ne(frozen[1][0][0]).any()
    assert torch.equal(logits[0][1:], frozen[1][0][1:])  # at the prompt: exactly the frozen backbone
    for mine, theirs in zip(logits[1:], frozen[1][1:]):  # later steps: row 0's masked latent columns in the
        torch.testing.assert_close(mine[1:], theirs[1:], atol=1e-5, rtol=1e-5)  # cache change float rounding only


def test_memgen_insertions_match_a_full_sequence_forward(shared):
    """Latents after the prompt and after the first generated token (all tokens count as punctuation):
    the backend's cached, left-padded, position-shifted logits equal one plain forward per row."""
    method = MemGen(shared, trigger="always", num_latents=3, weaver_dim=32, decode_triggers=True, max_insertions=2)
    method.memorize(HISTORY)
    method.backend.punctuation = torch.arange(1024)
    prompts = [method.decoder.encode(q.messages) for q in queries()]
    assert len(prompts[0]) < len(prompts[1])  # decoder row order = this order
    calls = record(method)
    outs = method.decoder.generate(prompts, [Generation(max_new_tokens=3)] * 2)
    steps = [logits for phase, logits in calls if phase != "prefix"]
    embed = shared.model.get_input_embeddings()
    latents = method.backend.latents
    for row, (prompt, out) in enumerate(zip(prompts, outs)):
        tokens = method.tokenizer(out.text, add_special_tokens=False)["input_ids"]
        pieces = [embed(torch.tensor(prompt)), latents]
        for step, logits in enumerate(steps):
            if step > len(tokens):
                break
            with torch.no_grad():
                reference = shared.model(inputs_embeds=torch.cat(pieces)[None], logits_to_keep=1).logits[0, -1]
            torch.testing.assert_close(logits[row], reference, atol=1e-4, rtol=1e-4)
            if step < len(tokens):
                pieces.append(embed(torch.tensor([tokens[step]])))
                if step == 0:
                    pieces.append(latents)
    assert method.backend.inserted == 4


def test_memgen_fit_trains_and_checkpoint_round_trips(shared, tmp_path):
    episodes = SyntheticChats(num_episodes=4, seed=0)
    method = MemGen(
        shared,
        num_latents=4,
        weaver_dim=32,
        episodes=episodes,
        fit_steps=2,
        fit_batch_size=2,
        lr=1e-3,
        save_to=str(tmp_path / "memgen"),
    )
    assert len(method.losses) == 2 and all(loss == loss for loss in method.losses)
    fresh_weaver = MemGen(shared, num_latents=4, weaver_dim=32)
    history, prompt, answer = method.episode_parts(episodes[0])
    assert history and prompt and method.tokenizer.decode(answer).strip().startswith(episodes[0]["answer"])
    assert not torch.equal(method.weaver.out.weight, fresh_weaver.weaver.out.weight)
    method.memorize(HISTORY)
    loaded = MemGen(shared, num_latents=4, weaver_dim=32, checkpoint=str(tmp_path / "memgen"))
    loaded.memorize(HISTORY)
    assert torch.equal(loaded.backend.latents, method.backend.latents)
    cost = loaded.cost()
    assert cost["fit_steps"] == 2 and cost["extra_trainable_params"] == cost["weaver_params"] + cost["trigger_params"]
    with pytest.raises(ValueError, match="dimensions"):
        MemGen(shared, num_latents=5, weaver_dim=32, checkpoint=str(tmp_path / "memgen"))
    # the same settings again (a resumed sweep job): the saved weights, not a second fit
    again = MemGen(shared, num_latents=4, weaver_dim=32, episodes=episodes, fit_steps=2, fit_batch_size=2, lr=1e-3,
                   save_to=str(tmp_path / "memgen"))
    assert again.losses == [] and again.fit_steps_done == 2
    assert torch.equal(again.weaver.out.weight, method.weaver.out.weight)
    longer = MemGen(shared, num_latents=4, weaver_dim=32, episodes=episodes, fit_steps=3, fit_batch_size=2, lr=1e-3,
                    save_to=str(tmp_path / "memgen"))
    assert len(longer.losses) == 3  # other fit settings: fitted (and saved) again


def test_memgen_runs_through_the_runner(shared, tmp_path):
    method = MemGen(shared, num_latents=4, weaver_dim=32)
    run_benchmark(method, ["memory_only", "recent_window"], tmp_path)


# ----------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "overrides, kind, name",
    [
        (["method=context2lora", "method.steps=1", "method.max_length=64"], Context2LoRA, "context2lora"),
        (
            ["method=context2lora", "method.train_on=episodes", "method.episode_steps=1", "method.train_batch_size=1"],
            Context2LoRA,
            "episode_lora",
        ),
        (["method=mlp_memory", "method.steps=1", "method.mlp_hidden=32"], MLPMemory, "mlp_memory"),
        (["method=mlp_memory", "method.mode=knn"], MLPMemory, "mlp_memory_knn"),
        (["method=memgen", "method.weaver_dim=32"], MemGen, "memgen"),
    ],
)
def test_method_configs_compose_and_instantiate(overrides, kind, name):
    cfg = compose_cfg(*overrides)
    method = instantiate(cfg.method)(loaded=fresh(cfg))
    assert isinstance(method, kind) and method.name == name
    method.memorize(HISTORY)
    assert len(method.answer(queries(max_new_tokens=2))) == 2
    json.dumps(method.cost())
