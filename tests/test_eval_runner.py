"""The evaluation pipeline: shared-prefix decoding, the runner (resume, isolation, sharding), tables, configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from deltamem.backbones import load_backbone
from deltamem.config import DeltaMemConfig
from evals.chat_method import ChatModelMethod, FrozenBackbone
from evals.deltamem_method import DeltaMemMethod
from evals.methods import History, Query
from evals.runner import EvalRunner, NoCommonConditionError, Shard
from evals.synthetic import SyntheticBenchmark
from evals.tables import build_tables
from evals.types import Generation

from conftest import compose_config

CONF = str(Path(__file__).resolve().parents[1] / "conf")
SAMPLED = dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9)


def compose_cfg(*overrides: str):
    return compose_config(*overrides)


def sharp_backbone():
    """The tiny random backbone with weights scaled up, so greedy outputs vary from prompt to prompt."""
    loaded = load_backbone(instantiate(compose_cfg().backbone))
    with torch.no_grad():
        for p in loaded.model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    return loaded


def chat(i: int, length: int = 10) -> list[dict[str, str]]:
    return [{"role": "user", "content": "alpha beta gamma " * length + f"question {i} " * (i + 1)}]


@pytest.fixture(scope="module")
def vanilla() -> ChatModelMethod:
    return FrozenBackbone(sharp_backbone(), batch_size=3)


def memory_method(**kwargs) -> DeltaMemMethod:
    memory = DeltaMemConfig(write=kwargs.pop("write", "tsw"), b_init="base_slice", base_slice_scale=2.0)
    batch_size = kwargs.pop("batch_size", 3)
    return DeltaMemMethod(sharp_backbone(), memory=memory, batch_size=batch_size, untrained=True, **kwargs)


# ---------------------------------------------------------------------- decoding
def test_shared_prefix_batches_equal_hf_generate(vanilla):
    prompts = [vanilla.decoder.encode(chat(i)) for i in range(5)]
    model = vanilla.model
    expected = []
    for p in prompts:
        out = model.generate(torch.tensor([p]), max_new_tokens=6, do_sample=False, pad_token_id=0)
        expected.append(vanilla.tokenizer.decode(out[0, len(p) :], skip_special_tokens=True))
    answers = vanilla.decoder.generate(prompts, [Generation(max_new_tokens=6)] * 5)
    assert [a.text for a in answers] == expected
    assert len(set(expected)) > 1  # the check means something: outputs differ between prompts
    assert [a.prompt_tokens for a in answers] == [len(p) for p in prompts]
    assert vanilla.decoder._prefix is not None and len(vanilla.decoder._prefix.ids) > 30  # history shared


def test_sampling_is_per_row_and_batch_independent(vanilla):
    prompts = [vanilla.decoder.encode(chat(i)) for i in range(4)]
    settings = [Generation(max_new_tokens=8, seed=100 + i, **SAMPLED) for i in range(4)]
    together = [a.text for a in vanilla.decoder.generate(prompts, settings)]
    vanilla.decoder.forget_prefix()
    alone = [vanilla.decoder.generate([p], [s])[0].text for p, s in zip(prompts, settings)]
    assert together == alone
    reseeded = [Generation(max_new_tokens=8, seed=7, **SAMPLED) for _ in range(4)]
    assert [a.text for a in vanilla.decoder.generate(prompts, reseeded)] != together


def test_overlong_prompts_lose_the_middle_of_the_shared_prefix(vanilla):
    window = 64
    decoder = type(vanilla.decoder)(vanilla.decoder.backend, vanilla.tokenizer, window, batch_size=2)
    prompts = [decoder.encode(chat(i, length=30)) for i in range(3)]
    assert min(len(p) for p in prompts) > window
    answers = decoder.generate(prompts, [Generation(max_new_tokens=4)] * 3)
    for p, a in zip(prompts, answers):
        assert a.truncated_tokens == len(p) - a.prompt_tokens > 0
        assert a.prompt_tokens + 4 <= window
    with pytest.raises(ValueError, match="leaves no room"):
        decoder.generate(prompts[:1], [Generation(max_new_tokens=window)])


# ---------------------------------------------------------------------- δ-mem as a method
def test_deltamem_question_independent_of_batch_and_order():
    method = memory_method()
    history = History(
        "c", [{"role": "user", "content": "my cat is called Tom. " * 6}, {"role": "assistant", "content": "ok"}]
    )
    queries = [Query(f"q{i}", chat(i, 2), "", Generation(max_new_tokens=6, seed=i, **SAMPLED)) for i in range(4)]
    method.memorize(history)
    together = [a.text for a in method.answer(queries)]
    other = History("d", [{"role": "user", "content": "the weather was cold. " * 9}])
    method.memorize(other)  # another context in between must leave no trace
    method.answer(queries[:2])
    method.memorize(history)
    alone = [method.answer([q])[0].text for q in reversed(queries)][::-1]
    assert together == alone
    method.memorize(other)
    assert [a.text for a in method.answer(queries)] != together  # the memory does change answers
    method.reset()
    assert method.backend.base_state is None and not method.memorized


def test_deltamem_full_context_prefix_shared_equals_unshared():
    method = memory_method(write="tsw")
    queries = [Query(f"q{i}", chat(i, 6), "", Generation(max_new_tokens=5)) for i in range(4)]
    shared = [a.text for a in method.answer(queries)]
    method.reset()
    singles = [method.answer([q])[0].text for q in queries]
    assert shared == singles


def test_ssw_method_runs_with_segments():
    method = memory_method(write="ssw")
    method.memorize(History("c", [{"role": "user", "content": "one. two."}, {"role": "assistant", "content": "ok"}]))
    ids, segments = method.encode(chat(1, 2))
    assert len(ids) == len(segments) and max(segments) >= 0
    assert len(method.answer([Query("q", chat(1, 2), "", Generation(max_new_tokens=3))])) == 1


def test_untrained_deltamem_with_zero_corrections_equals_vanilla(vanilla):
    memory = DeltaMemConfig(write="tsw", b_init="zero")
    method = DeltaMemMethod(sharp_backbone(), memory=memory, batch_size=3, untrained=True)
    queries = [Query(f"q{i}", chat(i), "", Generation(max_new_tokens=6)) for i in range(3)]
    vanilla.reset()
    assert [a.text for a in method.answer(queries)] == [a.text for a in vanilla.answer(queries)]


# ---------------------------------------------------------------------- the runner
def bench() -> SyntheticBenchmark:
    return SyntheticBenchmark(num_episodes=6, seed=3, sessions=[1, 2], facts=2, distractor_turns=1)


class Crash(RuntimeError):
    pass


class CrashAfter:
    """Delegates to a method and raises after `calls` answer calls (a killed run)."""

    def __init__(self, method, calls: int):
        self.method, self.calls = method, calls
        self.name, self.conditions = method.name, method.conditions

    def answer(self, queries):
        if self.calls == 0:
            raise Crash("killed")
        self.calls -= 1
        return self.method.answer(queries)

    def __getattr__(self, name):
        return getattr(self.method, name)


def strip_timing(results: dict) -> dict:
    return {k: v for k, v in results.items() if k != "timing"}


def test_resume_after_crash_equals_uninterrupted(tmp_path):
    method = memory_method()
    conditions = ["memory_only", "full_context"]
    full = EvalRunner(bench(), method, conditions, tmp_path / "a", questions_per_call=1, progress=False).run()
    with pytest.raises(Crash):
        EvalRunner(
            bench(), CrashAfter(method, 5), conditions, tmp_path / "b", questions_per_call=1, progress=False
        ).run()
    path = tmp_path / "b" / "predictions.jsonl"
    assert len(path.read_text().splitlines()) == 5
    with path.open("a") as handle:
        handle.write('{"id": "synthetic-heldout-3-5", "cond')  # a line cut by the crash
    resumed = EvalRunner(bench(), method, conditions, tmp_path / "b", questions_per_call=1, progress=False).run()
    assert strip_timing(resumed) == strip_timing(full)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    keys = [(r["id"], r["condition"]) for r in rows]
    assert len(keys) == len(set(keys)) == 12
    assert resumed["conditions"]["memory_only"]["n"] == 6
    first = [json.loads(line) for line in (tmp_path / "a" / "predictions.jsonl").read_text().splitlines()]
    assert {(r["id"], r["condition"]): r["output"] for r in rows} == {
        (r["id"], r["condition"]): r["output"] for r in first
    }


def test_a_damaged_line_is_quarantined_and_reruns_never_duplicate(tmp_path, vanilla, capsys):
    """A non-JSON line inside predictions.jsonl (and a repeated row): the rerun names the file and
    lines, moves them to predictions.quarantine.jsonl, answers those questions again and counts every
    question; further reruns change nothing."""
    conditions = ["no_context", "full_context"]
    full = EvalRunner(bench(), vanilla, conditions, tmp_path / "a", questions_per_call=4, progress=False).run()
    run = tmp_path / "b"
    EvalRunner(bench(), vanilla, conditions, run, questions_per_call=4, progress=False).run()
    path = run / "predictions.jsonl"
    lines = path.read_text().splitlines()
    assert len(lines) == 12
    lines[8] = "this is not json"
    lines.insert(3, lines[2])  # a duplicated row
    path.write_text("\n".join(lines) + "\n")
    resumed = EvalRunner(bench(), vanilla, conditions, run, questions_per_call=4, progress=False).run()
    err = capsys.readouterr().err
    assert f"{path}: 2 damaged line(s) (4, 10" in err and "predictions.quarantine.jsonl" in err
    assert strip_timing(resumed) == strip_timing(full)
    assert resumed["conditions"]["full_context"]["n"] == resumed["conditions"]["no_context"]["n"] == 6
    quarantined = [json.loads(x) for x in (run / "predictions.quarantine.jsonl").read_text().splitlines()]
    assert [(q["line"], q["text"][:8]) for q in quarantined] == [(4, lines[2][:8]), (10, "this is ")]
    for _ in range(2):
        EvalRunner(bench(), vanilla, conditions, run, questions_per_call=4, progress=False).run()
        keys = [(r["id"], r["condition"]) for r in map(json.loads, path.read_text().splitlines())]
        assert len(keys) == len(set(keys)) == 12
    assert len((run / "predictions.quarantine.jsonl").read_text().splitlines()) == 2


def test_sharded_runs_merge_to_the_unsharded_predictions(tmp_path):
    method = memory_method()
    conditions = ["memory_only", "no_context"]
    single = EvalRunner(bench(), method, conditions, tmp_path / "one", progress=False).run()
    for rank in (1, 0):  # rank 0 merges once every rank is done
        out = EvalRunner(bench(), method, conditions, tmp_path / "two", shard=Shard(rank, 2), progress=False).run()
    assert strip_timing(out) == strip_timing(single)
    merged = (tmp_path / "two" / "predictions.jsonl").read_text().splitlines()
    unsharded = (tmp_path / "one" / "predictions.jsonl").read_text().splitlines()
    strip = lambda line: {k: v for k, v in json.loads(line).items() if not k.endswith("seconds")}  # noqa: E731
    assert [strip(line) for line in merged] == [strip(line) for line in unsharded]


def test_unknown_condition_and_wrong_answer_count_are_errors(tmp_path, vanilla):
    with pytest.raises(ValueError, match="unknown condition"):
        EvalRunner(bench(), vanilla, ["memory_first"], tmp_path)

    class Short(ChatModelMethod):
        def answer(self, queries):
            return super().answer(queries)[:-1]

    short = Short(sharp_backbone())
    with pytest.raises(RuntimeError, match="returned 0 answers for 1 questions"):
        EvalRunner(bench(), short, ["no_context"], tmp_path, questions_per_call=1, progress=False).run()


def test_a_method_with_no_condition_in_common_is_an_error(tmp_path, vanilla, capsys):
    """`bm25_rag` on IFEval used to exit 0 with `{}`: now nothing to run is an error naming both sides."""

    class RetrievalOnly:
        name, conditions = "retrieval", ("memory_only",)

    with pytest.raises(NoCommonConditionError, match=r"retrieval runs none of.*\['no_context'\] on synthetic"):
        EvalRunner(bench(), RetrievalOnly(), ["no_context"], tmp_path / "none", progress=False).run()
    assert not (tmp_path / "none" / "results.json").exists()
    narrow = CountingCalls(vanilla)
    narrow.conditions = ("no_context",)
    EvalRunner(bench(), narrow, ["no_context", "memory_only"], tmp_path / "some", progress=False, limit=2).run()
    assert "vanilla does not run ['memory_only']; running ['no_context']" in capsys.readouterr().err


def test_table_from_run_directories(tmp_path, vanilla):
    EvalRunner(bench(), vanilla, ["no_context", "full_context"], tmp_path / "v", progress=False).run()
    EvalRunner(bench(), memory_method(), ["memory_only", "full_context"], tmp_path / "d", progress=False).run()
    markdown, csv_text = build_tables([tmp_path / "v", tmp_path / "d"])
    assert "### synthetic" in markdown
    lines = [line for line in markdown.splitlines() if line.startswith("| vanilla") or line.startswith("| deltamem")]
    assert len(lines) == 4  # (method, condition) rows
    assert markdown.splitlines()[2].endswith("| n | ×frozen |")
    assert csv_text.splitlines()[0] == "benchmark,method,backbone,condition,metric,value,run_dir"
    with pytest.raises(FileNotFoundError, match="results.json"):
        build_tables([tmp_path / "missing"])


def test_table_cells_are_hand_checked(tmp_path):
    """Other metrics beside overall, a lone `None` category bucket dropped, real categories kept,
    ratios to the frozen run under the same condition, and every paper metric in the footer."""

    def run_dir(name: str, method: str, benchmark: str, conditions: dict, paper: dict | None = None) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        results = {"benchmark": benchmark, "protocol": "official", "method": method, "backbone": {"name": "b"}}
        results.update(conditions=conditions, paper_numbers=paper or {})
        (folder / "results.json").write_text(json.dumps(results))
        return folder

    def hotpot(em: float, f1: float) -> dict:
        return {"overall": em, "em": em, "f1": f1, "n": 4, "per_category": {"None": {"em": em, "n": 4}}}

    def locomo(f1: float, c1: float, c5: float) -> dict:
        return {"overall": f1, "f1": f1, "n": 3, "per_category": {"1": {"f1": c1, "n": 2}, "5": {"f1": c5, "n": 1}}}

    paper = {"frozen": {"em": 42.35, "f1": 56.0}}
    runs = [
        run_dir("hv", "vanilla", "hotpotqa", {"full_context": hotpot(10.0, 20.0)}, paper),
        run_dir("hd", "deltamem_tsw", "hotpotqa", {"full_context": hotpot(15.0, 30.0), "no_context": hotpot(1.0, 2.0)}),
        run_dir("lv", "vanilla", "locomo", {"no_context": locomo(8.0, 6.0, 30.0)}),
    ]
    markdown, csv_text = build_tables(runs)
    assert "| method | backbone | protocol | condition | overall | f1 | n | ×frozen |" in markdown
    assert "| vanilla | b | official | full_context | 10.00 | 20.00 | 4 | 1.00 |" in markdown
    assert "| deltamem_tsw | b | official | full_context | 15.00 | 30.00 | 4 | 1.50 |" in markdown
    assert "| deltamem_tsw | b | official | no_context | 1.00 | 2.00 | 4 | – |" in markdown  # no frozen run for it
    assert "Paper (Qwen3-4B-Instruct-2507, full context): frozen em 42.35 / f1 56.00" in markdown
    # LoCoMo's categories are always named, and the overall policy is stated (category 5 apart)
    named = "| cat 1 multi_hop | cat 5 adversarial | n | ×frozen |"
    assert f"| method | backbone | protocol | condition | overall {named}" in markdown
    assert "| vanilla | b | official | no_context | 8.00 | 6.00 | 30.00 | 3 | 1.00 |" in markdown
    assert "Overall: question-weighted F1 over categories 1-4; category 5 (adversarial) is reported apart." in markdown
    assert f"hotpotqa,deltamem_tsw,b,full_context,f1,30.0,{runs[1]}" in csv_text.splitlines()

    # two runs of one method are told apart by their run folder
    runs.append(run_dir("hd360", "deltamem_tsw", "hotpotqa", {"full_context": hotpot(20.0, 40.0)}))
    markdown, _ = build_tables(runs)
    assert "| deltamem_tsw [hd] | b | official | full_context | 15.00 | 30.00 | 4 | 1.50 |" in markdown
    assert "| deltamem_tsw [hd360] | b | official | full_context | 20.00 | 40.00 | 4 | 2.00 |" in markdown
    assert "| vanilla | b | official | full_context | 10.00 | 20.00 | 4 | 1.00 |" in markdown


# ---------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", ["synthetic", "locomo", "hotpotqa", "ifeval", "gpqa", "memory_agent_bench"])
def test_every_benchmark_config_instantiates(name):
    cfg = compose_cfg("task=eval", f"benchmark={name}")
    loader = instantiate(cfg.benchmark.loader)
    assert loader.name == name
    assert set(cfg.benchmark.conditions) <= {"full_context", "no_context", "memory_only", "recent_window"}


@pytest.mark.parametrize("method", ["vanilla", "deltamem"])
def test_method_configs_instantiate(method):
    extra = ["method.untrained=true"] if method == "deltamem" else []
    cfg = compose_cfg("task=eval", f"method={method}", *extra)
    loaded = load_backbone(instantiate(cfg.backbone))
    built = instantiate(cfg.method)(loaded=loaded)
    assert built.name == ("deltamem_tsw_untrained" if method == "deltamem" else "vanilla")
    assert built.answer([Query("q", chat(0, 1), "", Generation(max_new_tokens=2))])[0].output_tokens <= 2


def test_deltamem_without_an_adapter_is_refused_unless_asked_for(tmp_path):
    """`method=deltamem` with no `adapter=` would score an untrained memory under a trained name."""
    cfg = compose_cfg("task=eval", "method=deltamem")
    loaded = load_backbone(instantiate(cfg.backbone))
    with pytest.raises(ValueError, match=r"needs adapter=<folder>.*method.untrained=true"):
        instantiate(cfg.method)(loaded=loaded)
    (tmp_path / "adapter").mkdir()
    both = compose_cfg("task=eval", "method=deltamem", "method.untrained=true", f"adapter={tmp_path / 'adapter'}")
    with pytest.raises(ValueError, match="contradict"):
        instantiate(both.method)(loaded=loaded)


class CountingCalls:
    """Delegates to a method and records the size of every answer call and every memorised context."""

    def __init__(self, method):
        self.method, self.calls, self.memorized = method, [], []
        self.name, self.conditions = method.name, method.conditions
        self.memorizes = getattr(method, "memorizes", True)

    def answer(self, queries):
        self.calls.append(len(queries))
        return self.method.answer(queries)

    def memorize(self, history):
        self.memorized.append(history.context_id)
        return self.method.memorize(history)

    def __getattr__(self, name):
        return getattr(self.method, name)


class CountingPacked(CountingCalls):
    def memorize_many(self, histories):
        self.memorized.extend(h.context_id for h in histories)
        return self.method.memorize_many(histories)


class OneMemoryAtATime(CountingCalls):
    def __getattr__(self, name):
        if name == "memorize_many":
            raise AttributeError(name)
        return getattr(self.method, name)


def test_contexts_are_packed_unless_the_method_holds_one_memory_at_a_time(tmp_path, vanilla):
    frozen = CountingCalls(vanilla)
    EvalRunner(bench(), frozen, ["memory_only"], tmp_path / "v", questions_per_call=4, progress=False).run()
    assert frozen.calls == [4, 2] and frozen.memorized == []  # six one-question contexts, packed
    memory = CountingPacked(memory_method())
    EvalRunner(bench(), memory, ["memory_only"], tmp_path / "d", questions_per_call=4, progress=False).run()
    assert memory.calls == [4, 2] and memory.memorized == [f"synthetic-heldout-3-{i}" for i in range(6)]
    single = OneMemoryAtATime(memory_method())
    EvalRunner(bench(), single, ["memory_only"], tmp_path / "s", questions_per_call=4, progress=False).run()
    assert single.calls == [1] * 6 and len(set(single.memorized)) == 6  # one memory per context


def outputs(run_dir: Path, condition: str) -> dict[str, str]:
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    return {r["id"]: r["output"] for r in rows if r["condition"] == condition}


def test_packed_memories_answer_as_memories_written_one_at_a_time(tmp_path):
    method = memory_method(batch_size=4)
    conditions = ["memory_only", "memory_only_wrong_history"]
    EvalRunner(bench(), method, conditions, tmp_path / "packed", questions_per_call=6, progress=False).run()
    EvalRunner(bench(), method, conditions, tmp_path / "alone", questions_per_call=1, progress=False).run()
    for condition in conditions:
        packed, alone = outputs(tmp_path / "packed", condition), outputs(tmp_path / "alone", condition)
        assert len(packed) == 6 and packed == alone
    assert outputs(tmp_path / "packed", "memory_only") != outputs(tmp_path / "packed", "memory_only_wrong_history")


def test_memorize_many_states_equal_writing_each_history_alone():
    method = memory_method()
    histories = [
        History("a", [{"role": "user", "content": "my cat is called Tom. " * 9}]),
        History("b", [{"role": "user", "content": "cold weather"}, {"role": "user", "content": "in May."}]),
        History("c", [{"role": "user", "content": "the train leaves at nine. " * 3}]),
    ]
    method.memorize_many(histories)
    together = method.backend.base_state
    rows = method.backend.base_rows
    for history in histories:
        method.memorize(history)
        alone = method.backend.base_state
        for layer, state in alone.layers.items():
            row = together.layers[layer][rows[history.context_id]]
            torch.testing.assert_close(row, state[0], rtol=1e-5, atol=1e-6)
    method.memorize_many(histories)
    with pytest.raises(KeyError, match="no memory was written for context 'zz'"):
        method.answer([Query("q", chat(0, 1), "", Generation(max_new_tokens=2), "zz")])
    with pytest.raises(ValueError, match="same context id"):
        method.memorize_many([histories[0], histories[0]])


def test_wrong_history_control_reads_the_next_contexts_history(tmp_path):
    method = memory_method()
    benchmark = bench()
    conditions = ["memory_only", "memory_only_wrong_history"]
    EvalRunner(benchmark, method, conditions, tmp_path, questions_per_call=1, progress=False).run()
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    control = [r for r in rows if r["condition"] == "memory_only_wrong_history"]
    ids = [f"synthetic-heldout-3-{i}" for i in range(6)]
    assert [r["history_from"] for r in control] == ids[1:] + ids[:1]  # the next context, cyclically
    hashes = {(r["id"], r["condition"]): r["prompt_hash"] for r in rows}
    assert all(hashes[(i, "memory_only")] == hashes[(i, "memory_only_wrong_history")] for i in ids)  # same prompt
    contexts, items = benchmark.load()
    by_id = {c.id: c for c in contexts}
    item = items[2]
    method.memorize(History(item.context_id, benchmark.history_messages(by_id[ids[3]])))
    prompt = benchmark.prompt(item, by_id[item.context_id], "memory_only")
    query = Query(item.id, prompt, "", benchmark.generation(item))
    assert control[2]["output"] == method.answer([query])[0].text
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["conditions"]) == set(conditions)


def test_wrong_history_needs_two_contexts(tmp_path, vanilla):
    one = SyntheticBenchmark(num_episodes=1, seed=3, sessions=[1, 1], facts=1, distractor_turns=0)
    runner = EvalRunner(one, memory_method(), ["memory_only_wrong_history"], tmp_path, progress=False)
    with pytest.raises(ValueError, match="needs at least two contexts"):
        runner.run()


def test_rank_device_spreads_hand_launched_ranks_over_visible_gpus():
    from evals.tasks import rank_device

    assert [rank_device(r, None, 1) for r in range(4)] == [0, 0, 0, 0]  # RANK by hand, one GPU visible
    assert [rank_device(r, None, 2) for r in range(4)] == [0, 1, 0, 1]
    assert rank_device(5, "1", 4) == 1  # torchrun's LOCAL_RANK wins over the global rank


def test_a_missing_data_file_fails_before_the_model_is_loaded(tmp_path):
    """task=eval reads the benchmark first: the error names the data file, not the (unloadable) backbone."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "src" / "run.py"), "task=eval", "benchmark=locomo", "method=vanilla",
         f"benchmark.loader.source={tmp_path / 'absent.json'}", "backbone=tiny", "backbone.random_init=false",
         f"backbone.path={tmp_path / 'no_model_here'}", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )
    assert done.returncode == 1
    assert "absent.json" in done.stderr.strip().splitlines()[-1] and "no_model_here" not in done.stderr


@pytest.mark.parametrize("bench", ["hotpotqa", "ifeval", "episode_qa", "memory_agent_bench", "locomo", "gpqa"])
def test_task_limit_is_the_only_item_limit_in_the_configs(bench):
    cfg = compose_cfg("task=eval", f"benchmark={bench}")
    assert not [k for k in cfg.benchmark.loader if "limit" in k], "loader limits: use task.limit"
    assert "limit" in cfg.task
