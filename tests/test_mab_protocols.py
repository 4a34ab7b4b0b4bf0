"""MemoryAgentBench's two protocols end to end: the official harness's prompts as it builds them
(chunks of sentences, memorize and query templates, the system message), both protocols built from
the config (constants are data there), `benchmark=mab_rebuild` under both, and task=rescore of one
set of outputs under each protocol, recorded in results.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

from evals.mab_prompts import ChunkerUnavailableError, chunk_sentences, counter
from evals.memory_agent_bench import MemoryAgentBench, config_defaults
from evals.types import Item

from conftest import compose_config

FIXTURES = Path(__file__).parent / "fixtures"
MAB_JSON = FIXTURES / "mab_fixture.json"
ENTITIES = FIXTURES / "mab_entity2id.json"
SYSTEM = "You are a helpful assistant that can read the context and memorize it for future retrieval."


def official(chunk_tokens: int = 4096) -> MemoryAgentBench:
    settings = config_defaults()["official"]
    settings["prompts"].update(chunk_tokenizer="words", chunk_tokens=chunk_tokens)  # tiktoken's BPE is not offline
    return MemoryAgentBench(source=str(MAB_JSON), protocol="official", official=settings)


def test_chunks_pack_sentences_and_a_long_first_sentence_leaves_an_empty_chunk():
    words = counter("words")
    assert chunk_sentences(["a b", "c d", "e f g"], words, 4) == ["a b c d", "e f g"]
    # 5 words > 4: the empty chunk so far is closed first (as upstream); then 5 + 1 > 4 closes it again
    assert chunk_sentences(["a b c d e", "f"], words, 4) == ["", "a b c d e", "f"]
    with pytest.raises(ValueError, match="chunk_tokenizer"):
        counter("sentencepiece:x")


def test_the_official_chunker_without_tiktoken_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    with pytest.raises(ChunkerUnavailableError, match="TIKTOKEN_CACHE_DIR"):
        counter("tiktoken:gpt-4o-mini")


def test_the_official_prompt_as_the_harness_builds_it():
    bench = official(chunk_tokens=12)
    contexts, items = bench.load()
    messages = bench.prompt(items[0], contexts[0], "full_context")
    stamp = ("Dialogue between User and Assistant 2025-01-01 00:00:00\\n<User> The following context is the documents "
             "I have read: \n")
    tail = "\n <Assistant> I have learned the documents and I will answer the question you ask."
    # nltk: sentence 1 = "Document 1:\nThe lighthouse ... Marsh." (14 words > 12), sentence 2 = "Document 2:\n..."
    chunks = [stamp + tail,  # the empty first chunk
              stamp + "Document 1:\nThe lighthouse of Varnholm was painted teal in 1911 by the keeper Odile Marsh."
              + tail,
              stamp + "Document 2:\nVarnholm's ferry, the Brisk Heron, crosses to Pellin Isle twice a day." + tail]
    memory = "\n".join(chunks)
    query = ("Answer the question based on the memorized documents. Only give me the answer and do not output any "
             "other words. \n\nQuestion: Who painted the lighthouse of Varnholm? \n\n Answer:")
    assert messages == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": memory + "\n" + query}]
    assert bench.history_messages(contexts[0]) == [{"role": "user", "content": chunk} for chunk in chunks]
    assert bench.prompt(items[0], contexts[0], "no_context") == [{"role": "system", "content": SYSTEM},
                                                                {"role": "user", "content": query}]


def test_official_templates_keep_their_quirks():
    bench = official()
    contexts, items = bench.load()
    by_source = {i.meta["source"]: (i, next(c for c in contexts if c.id == i.context_id)) for i in items}
    icl, icl_context = by_source["icl_banking77_5900shot_balance"]
    user = bench.prompt(icl, icl_context, "full_context")[1]["content"]
    assert user.startswith("Dialogue between User and Assistant 2025-01-01 00:00:00 \\n<User> The following context is "
                           "the examples I have learned: \n")
    assert user.endswith('Only output "label: {label}" and nothing else. \n\ntext: the atm kept my card\nlabel: '
                         "\n\n label:")
    assert "label: 0" not in user.split("<Assistant>")[-1]  # the gold label is never filled in (the release's leak)
    lme, lme_context = by_source["longmemeval_s*"]
    assert bench.prompt(lme, lme_context, "full_context")[1]["content"].startswith(
        "Dialogue between User and Assistant \\n<User> The following context is the conversation")  # no time stamp
    raw = Item("q", "  Who?  ", ["x"], contexts[0].id, "c", items[0].meta)
    # the question is not stripped
    assert "Question:   Who?   \n\n Answer:" in bench.prompt(raw, contexts[0], "no_context")[1]["content"]
    unknown = Item("u", "q", ["x"], None, "c", {"source": "mystery", "dataset": "mystery", "scored_as": "mystery"})
    with pytest.raises(ValueError, match="no official MemoryAgentBench template"):
        bench.prompt(unknown, None, "no_context")


def test_both_protocols_come_from_the_config_and_results_name_them():
    for protocol in ("paper", "official"):
        cfg = compose_config("task=eval", "benchmark=memory_agent_bench", f"benchmark.loader.protocol={protocol}",
                             f"benchmark.loader.source={MAB_JSON}", f"benchmark.loader.recsys_entities={ENTITIES}")
        bench = instantiate(cfg.benchmark.loader)
        aggregate = bench.aggregate([{"category": "c", "score": 1.0}])
        assert bench.protocol == aggregate["protocol"] == protocol
        assert aggregate["protocol_source"] == cfg.benchmark.loader[protocol].source  # the config names the spec
    assert config_defaults()["paper"]["source"].startswith("declare-lab/delta-Mem@5cd5d91")
    assert config_defaults()["official"]["source"].startswith("HUST-AI-HYZ/MemoryAgentBench@455306d")
    defaults = config_defaults()
    assert defaults["max_new_tokens"]["default"] == 4096
    assert defaults["paper"]["prompts"]["marker"] == "\n\n[... context truncated ...]\n\n"
    with pytest.raises(ValueError, match="unknown MemoryAgentBench protocol"):
        MemoryAgentBench(source=str(MAB_JSON), protocol="nope")


def test_the_rebuild_runs_under_both_protocols(tmp_path):
    from test_mab_rebuild import write_intents

    write_intents(tmp_path, per_label=60)
    for protocol, label_score in (("paper", 1.0), ("official", 0.0)):
        cfg = compose_config("task=eval", "benchmark=mab_rebuild", f"paths.data_dir={tmp_path}",
                             f"benchmark.loader.protocol={protocol}")
        bench = instantiate(cfg.benchmark.loader)
        contexts, items = bench.load()
        icl = items[0]
        assert icl.meta["scored_as"] == "icl_banking77_5900shot_balance" and bench.generation(icl).max_new_tokens == 20
        assert bench.generation(items[-1]).max_new_tokens == 10  # scored as factconsolidation_sh_6k
        gold = icl.answers[0]
        # paper Acc: the label is a substring of "label 7"; official ICL: EM of the parsed "label: 7" is 0
        assert bench.score(f"label: {gold}", icl)["score"] == label_score
        assert bench.prompt(icl, contexts[0], "no_context")


def test_rescore_puts_one_run_under_each_protocol(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    outputs = {"Accurate_Retrieval:0:0": "Odile Marsh painted it.", "Test_Time_Learning:0:0": "label: 0"}
    rows = [{"id": qid, "condition": "full_context", "context_id": qid.rsplit(":", 1)[0], "category": qid.split(":")[0],
             "output": out, "scores": {"score": -1.0}, "prompt_tokens": 1, "output_tokens": 1, "truncated_tokens": 0,
             "answer_seconds": 0.0, "memorize_seconds": 0.0,
             "item_meta": {"dataset": "ruler_qa1" if qid.startswith("Acc") else "icl_banking77"}}
            for qid, out in outputs.items()]
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "results.json").write_text(json.dumps({"benchmark": "memory_agent_bench", "protocol": "paper"}))
    overall = {}
    for protocol in ("paper", "official"):
        cfg = compose_config("task=rescore", "benchmark=memory_agent_bench", f"benchmark.loader.source={MAB_JSON}",
                             f"benchmark.loader.protocol={protocol}", f"task.run={run}",
                             f"task.out={tmp_path / protocol}")
        results = instantiate(cfg.task)(cfg)
        assert results["protocol"] == protocol
        overall[protocol] = results["conditions"]["full_context"]["overall"]
    # paper: Acc 1 (substring) and 1 ("0" in "label 0"), question-weighted 100;
    # official: SH-QA substring 1 -> AR 100, MCC EM of "label: 0" is 0 -> TTL 0; mean of categories 50
    assert overall == {"paper": 100.0, "official": 50.0}


def test_task_eval_fits_the_prompts_to_the_backbone(tmp_path, monkeypatch):
    from evals.tasks import evaluate

    seen = []
    monkeypatch.setattr(MemoryAgentBench, "fit_to", lambda self, tokenizer, window, kwargs: seen.append(window))
    cfg = compose_config("task=eval", "benchmark=memory_agent_bench", f"benchmark.loader.source={MAB_JSON}",
                         "method=vanilla", "backbone=tiny", "logger=none", "task.default_run_dir=null",
                         "task.wandb_name=null", f"paths.output_dir={tmp_path / 'run'}")
    results = evaluate(cfg, conditions=["no_context"], limit=1, progress=False)
    assert seen == [4096] and results["protocol"] == "paper"  # the tiny backbone's max_position_embeddings
