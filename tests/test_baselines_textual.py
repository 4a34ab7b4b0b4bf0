"""Textual baselines (BM25 RAG, LLMLingua-2, MemoryBank) on the tiny backbone: retrieval, budgets, forgetting, runs."""

from __future__ import annotations

import json
import math
import re
import string
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from baselines.bm25_rag import (
    BLOCK_HEADER,
    BM25RAG,
    BM25Index,
    chunk_history,
    evidence_recall,
    normalise_dia_ids,
    retrieval_recall,
)
from baselines.llmlingua2 import LLMLingua2
from baselines.memorybank import MemoryBank, MemoryStore, SentenceEncoder, retention, split_sessions
from deltamem.backbones import load_backbone
from evals.locomo import LoCoMo
from evals.methods import History, Query
from evals.runner import EvalRunner
from evals.synthetic import SyntheticBenchmark
from evals.types import Generation

from conftest import compose_config

CONF = str(Path(__file__).resolve().parents[1] / "conf")
PLANTED = "Zephyrine keeps a pet axolotl named Bubbles in her kitchen."


def compose_cfg(*overrides: str):
    return compose_config(*overrides)


@pytest.fixture(scope="module")
def loaded():
    return load_backbone(instantiate(compose_cfg().backbone))


def chat_history() -> list[dict[str, str]]:
    filler = [
        "I might repaint the hallway soon.",
        "Do you have advice for staying focused?",
        "The weather was nice on the weekend.",
        "My brother likes cooking pasta on Sundays.",
    ]
    messages = []
    for i, text in enumerate([*filler[:2], PLANTED, *filler[2:]]):
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": f"Noted {i}."}]
    return messages


def query(question: str, qid: str = "q0") -> Query:
    messages = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": question}]
    return Query(qid, messages, question, Generation(max_new_tokens=4))


def run_synthetic(method, conditions, tmp_path: Path) -> dict:
    runner = EvalRunner(SyntheticBenchmark(num_episodes=3), method, conditions, tmp_path / "run", progress=False)
    runner.run()
    return json.loads((tmp_path / "run" / "results.json").read_text())


# ---------------------------------------------------------------------- a LoCoMo fixture (upstream schema)
LOCOMO_SAMPLE = {
    "sample_id": "conv-test",
    "conversation": {
        "speaker_a": "Mira",
        "speaker_b": "Theo",
        "session_1_date_time": "1:00 pm on 3 March, 2023",
        "session_1": [
            {"speaker": "Mira", "dia_id": "D1:1", "text": "Hi Theo, how was your week?"},
            {"speaker": "Theo", "dia_id": "D1:2", "text": "Busy! I started pottery classes on Tuesday."},
            {"speaker": "Mira", "dia_id": "D1:3", "text": "Nice. I adopted a greyhound called Pickle."},
        ],
        "session_2_date_time": "9:30 am on 20 March, 2023",
        "session_2": [
            {"speaker": "Theo", "dia_id": "D2:1", "text": "How is Pickle doing?\nStill chewing shoes?"},
            {"speaker": "Mira", "dia_id": "D2:2", "text": "Pickle loves the beach near Brighton."},
            {
                "speaker": "Theo",
                "dia_id": "D2:3",
                "text": "I finished my first pottery vase.",
                "blip_caption": "a photo of a blue vase",
            },
        ],
    },
    "qa": [
        {"question": "What did Mira call her greyhound?", "answer": "Pickle", "evidence": ["D1:3"], "category": 4},
        {
            "question": "When did Theo start pottery classes?",
            "answer": "March 2023",
            "evidence": ["D1:2"],
            "category": 2,
        },
        {"question": "Where does Pickle like to go?", "answer": "the beach", "evidence": ["D2:2"], "category": 4},
    ],
}


@pytest.fixture
def locomo_file(tmp_path: Path) -> Path:
    path = tmp_path / "locomo_fixture.json"
    path.write_text(json.dumps([LOCOMO_SAMPLE]))
    return path


# ---------------------------------------------------------------------- BM25 RAG
def test_bm25_returns_the_planted_fact_first():
    chunks = chunk_history(chat_history(), "message")
    index = BM25Index([c.text for c in chunks])
    top = index.top("What pet does Zephyrine keep in her kitchen?", 3)
    assert chunks[top[0][0]].text == f"User: {PLANTED}"
    assert top[0][1] > top[-1][1] or len(top) == 1
    assert index.top("completely unrelated xyzzy", 3) == []  # no shared word: nothing retrieved


def test_bm25_token_windows_overlap_and_cover_the_history(loaded):
    messages = chat_history()
    text = History("c", messages).text
    chunks = chunk_history(messages, "tokens", loaded.tokenizer, chunk_tokens=12, overlap=4)
    assert len(chunks) > 3
    ids = [loaded.tokenizer(c.text, add_special_tokens=False)["input_ids"] for c in chunks]
    assert all(len(i) <= 12 + 1 for i in ids)  # window text re-tokenises to about its window
    assert chunks[0].text == text[: len(chunks[0].text)] and text.endswith(chunks[-1].text)
    assert chunks[0].text[-6:] in chunks[1].text  # consecutive windows overlap


def test_locomo_dialog_ids_and_recall(locomo_file):
    contexts, items = LoCoMo(str(locomo_file)).load()
    turns = chunk_history(contexts[0].messages, "turn", sessions=contexts[0].sessions)  # the loader's structure
    assert [c.dia_ids for c in turns] == [["D1:1"], ["D1:2"], ["D1:3"], ["D2:1"], ["D2:2"], ["D2:3"]]
    assert turns[3].text.startswith("DATE: 9:30 am on 20 March, 2023\nTheo said") and "chewing" in turns[3].text
    sessions = chunk_history(contexts[0].messages, "message", sessions=contexts[0].sessions)
    assert sessions[1].dia_ids == ["D2:1", "D2:2", "D2:3"]
    assert evidence_recall(["D1:3", "D2:2"], ["D1:3"]) == 1.0
    assert evidence_recall(["D1:1"], ["D1:3", "D2:2"]) == 0.0
    assert evidence_recall(["D2:2"], ["D8:6; D2:2"]) == 0.5
    assert math.isnan(evidence_recall(["D1:1"], []))
    assert normalise_dia_ids(["D:11:26", "D9:1 D4:4", "D"]) == ["D11:26", "D9:1", "D4:4"]


def test_bm25_prompt_block_order_and_extra(loaded):
    method = BM25RAG(loaded, unit="message", k=2, order="chronological", batch_size=2)
    method.memorize(History("c", chat_history()))
    q = query("What pet does Zephyrine keep?")
    messages = method.prompt_messages(q)
    assert messages[0] == q.messages[0]
    assert messages[-1]["content"].startswith(BLOCK_HEADER + "\n") and messages[-1]["content"].endswith(q.question)
    answer = method.answer([q, query("xyzzy plugh", "q1")])
    chosen = answer[0].extra["retrieved_chunks"]
    assert chosen == sorted(chosen) and method.chunks[4].text.endswith(PLANTED) and 4 in chosen
    assert answer[1].extra["retrieved_chunks"] == []
    assert "retrieved_dia_ids" not in answer[0].extra  # no dialog ids outside LoCoMo
    method.reset()
    assert method.chunks == [] and method.prompt_messages(q) == q.messages


def test_bm25_runs_synthetic(loaded, tmp_path):
    method = BM25RAG(loaded, k=3, batch_size=4)
    results = run_synthetic(method, ["memory_only", "recent_window", "full_context"], tmp_path)
    assert results["conditions"]["memory_only"]["n"] == 3 and results["conditions"]["recent_window"]["n"] == 3
    assert results["skipped_conditions"] == ["full_context"]
    assert results["method"] == "bm25_rag" and results["method_cost"]["extra_trainable_params"] == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert all(r["extra"]["retrieved_chunks"] for r in rows)


def test_bm25_runs_locomo_with_evidence_recall(loaded, locomo_file, tmp_path):
    method = BM25RAG(loaded, unit="turn", k=2, batch_size=4)
    runner = EvalRunner(LoCoMo(str(locomo_file)), method, ["memory_only"], tmp_path / "run", progress=False)
    runner.run()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["conditions"]["memory_only"]["n"] == 3
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert all("retrieved_dia_ids" in r["extra"] and r["item_meta"]["evidence"] for r in rows)
    first = next(r for r in rows if r["id"].endswith(":q0"))
    assert first["extra"]["retrieved_dia_ids"][0] == "D1:3"  # "greyhound" only occurs there
    recall = retrieval_recall(rows)
    assert recall["n"] == 3 and recall["evidence_recall"] >= 2 / 3


# ---------------------------------------------------------------------- LLMLingua-2
def _xlmr_vocab() -> list[tuple[str, float]]:
    words = "the a of to and in is was for on with said user assistant session date pet noted".split()
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("<mask>", 0.0)]
    vocab += [("▁" + w, -2.0) for w in words] + [("▁", -3.0)]
    chars = string.ascii_letters + string.digits + string.punctuation
    return vocab + [(c, -5.0) for c in chars] + [("▁" + c, -5.5) for c in chars]


@pytest.fixture(scope="module")
def lingua_dir(tmp_path_factory) -> Path:
    """A tiny random XLM-R token classifier (2 labels) with a Unigram (sentencepiece-style) XLM-R tokenizer built here.

    llmlingua picks its word rules from the model name, so the folder name contains "xlm-roberta-large".
    """
    from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification, XLMRobertaTokenizer

    folder = tmp_path_factory.mktemp("lingua") / "llmlingua-2-xlm-roberta-large-tiny"
    tokenizer = XLMRobertaTokenizer(vocab=_xlmr_vocab())
    tokenizer.save_pretrained(folder)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=520,
        num_labels=2,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    XLMRobertaForTokenClassification(config).save_pretrained(folder)
    return folder


def test_llmlingua2_respects_the_token_budget(loaded, lingua_dir):
    method = LLMLingua2(loaded, model_name=str(lingua_dir), target_token=40, device_map="cpu")
    history = History("c", chat_history() * 4)
    method.memorize(history)
    assert 0 < method.count(method.compressed) <= 40
    assert method.last["original_tokens"] > 120
    cost = method.cost()
    assert cost["extra_trainable_params"] == 0 and cost["compressor_params"] > 0
    assert 0 < cost["compression_rate"] < 0.4
    prompt = method.prompt_messages(query("What pet?"))
    assert prompt[-1]["content"].startswith("Compressed history of the earlier conversation:\n" + method.compressed)
    rated = LLMLingua2(loaded, model_name=str(lingua_dir), rate=0.5, device_map="cpu")
    rated.compressor = method.compressor  # the same classifier; a rate budget this time
    rated.memorize(history)
    assert 0 < rated.last["compressed_tokens"] < 0.75 * rated.last["original_tokens"]
    rated.reset()
    assert rated.compressed == "" and rated.prompt_messages(query("x")) == query("x").messages


def test_llmlingua2_cuts_the_oldest_tokens_when_compression_overshoots(loaded, lingua_dir):
    method = LLMLingua2(loaded, model_name=str(lingua_dir), target_token=10, budget_retries=1)
    method.compressor = object()  # never called: the stub below stands in for a compressor that keeps everything
    targets = []
    method._run = lambda compressor, context, target: targets.append(target) or "\n\n".join(context)
    method.memorize(History("c", chat_history()))
    assert targets[0] == 10 and targets[1] < 10  # one retry with a tighter target
    assert method.last["hard_cut"] and 0 < method.count(method.compressed) <= 10
    assert method.compressed.endswith(": Noted 4.") and "Bubbles" not in method.compressed  # newest kept
    method.compressor = None
    assert method.cost()["hard_cut_contexts"] == 1


def test_llmlingua2_rejects_names_llmlingua_cannot_dispatch(loaded, tmp_path):
    with pytest.raises(ValueError, match="xlm-roberta-large"):
        LLMLingua2(loaded, model_name=str(tmp_path / "some-model"))


def test_llmlingua2_runs_synthetic(loaded, lingua_dir, tmp_path):
    method = LLMLingua2(loaded, model_name=str(lingua_dir), rate=0.5, device_map="cpu", batch_size=4)
    results = run_synthetic(method, ["memory_only", "full_context"], tmp_path)
    assert results["conditions"]["memory_only"]["n"] == 3 and results["skipped_conditions"] == ["full_context"]
    assert results["method"] == "llmlingua2" and 0 < results["method_cost"]["compression_rate"] < 1


# ---------------------------------------------------------------------- MemoryBank
class HashEncoder:
    """A deterministic bag-of-words encoder: each lowercase word hashed (stably) into one of 257 dimensions."""

    source = "hash-stub"

    def encode(self, texts):
        out = torch.zeros(len(texts), 257)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                out[row, sum(ord(c) * 31**i for i, c in enumerate(word)) % 257] += 1.0
        return torch.nn.functional.normalize(out + 1e-6, dim=-1)


def test_forgetting_lowers_retention_of_an_unrecalled_memory():
    store = MemoryStore(initial_strength=1.0)
    store.add("old fact", "fact", 1, "session 1", torch.tensor([1.0, 0.0]), time=1)
    values = [store.retention(0, now) for now in (1, 2, 3, 5)]
    assert values[0] == 1.0 and all(a > b for a, b in zip(values, values[1:]))
    assert values[1] == pytest.approx(math.exp(-1.0)) and values[3] == pytest.approx(math.exp(-4.0))
    assert retention(2.0, 4.0) == pytest.approx(math.exp(-0.5))
    assert store.forget(0.1, now=5) == 1 and len(store) == 0  # forgotten once below the threshold


def test_recall_raises_strength_and_resets_elapsed_time():
    store = MemoryStore(initial_strength=1.0, strength_increment=1.0, retention_floor=0.5)
    for i in range(2):
        store.add(f"memory {i}", "fact", 1, "session 1", torch.tensor([1.0, float(i)]), time=1)
    store.recall([0], now=3)
    assert store.memories[0].strength == 2.0 and store.memories[1].strength == 1.0
    assert store.retention(0, now=3) == 1.0
    assert store.retention(0, now=5) == pytest.approx(math.exp(-2.0 / 2.0))  # slower decay after the recall
    assert store.retention(1, now=5) == pytest.approx(math.exp(-4.0))
    # the reinforced memory outranks a slightly more similar one that has faded more
    query_vector = torch.tensor([1.0, 0.5])
    cos = store.similarities(query_vector).tolist()
    assert cos[1] > cos[0]
    assert store.search(query_vector, 2, now=5)[0][0] == 0
    expected = [c * (0.5 + 0.5 * store.retention(i, now=5)) for i, c in enumerate(cos)]
    assert store.scores(query_vector, now=5) == pytest.approx(expected)  # cos · (ρ + (1 - ρ) R), ρ = 0.5
    store.retention_floor = 1.0  # similarity only: the more similar memory wins
    assert store.search(query_vector, 2, now=5)[0][0] == 1


def test_memorybank_retrieves_the_planted_fact_first(loaded):
    method = MemoryBank(
        loaded,
        encoder=HashEncoder(),
        raw_memories=True,
        top_k=3,
        summary_max_new_tokens=4,
        facts_max_new_tokens=4,
        portrait_max_new_tokens=4,
        messages_per_session=4,
        batch_size=4,
    )
    method.memorize(History("c", chat_history()))
    assert [m.session for m in method.store.memories][-1] == 3  # 10 messages in sessions of 4
    assert method.store.now == 3.0
    q = query("What pet does Zephyrine keep in her kitchen?")
    answer = method.answer([q])[0]
    best = method.store.memories[answer.extra["memories"][0]]
    assert best.kind == "raw" and best.text == f"User: {PLANTED}"
    content = method.prompt_messages(q)[-1]["content"]
    assert "Memories from earlier conversations (most relevant first):\n- [session 2, raw] User: " + PLANTED in content
    assert content.endswith(q.question)
    assert method.cost()["memories_per_context_mean"] == len(method.store) > 3
    method.reset()
    assert len(method.store) == 0 and method.portrait == "" and method.prompt_messages(q) == q.messages


def test_memorybank_labels_locomo_memories_with_session_dates(loaded, locomo_file):
    contexts, _ = LoCoMo(str(locomo_file)).load()
    method = MemoryBank(loaded, encoder=HashEncoder(), raw_memories=True, write_facts=False, portrait=False)
    method.max_new["summary"] = 2
    method.memorize(History(contexts[0].id, contexts[0].messages, contexts[0].sessions))
    raw = [m for m in method.store.memories if m.kind == "raw"]
    assert [m.session for m in raw] == [1, 1, 1, 2, 2, 2] and method.store.now == 2.0
    assert raw[2].label == "session 1, 1:00 pm on 3 March, 2023, raw"
    assert raw[2].text == 'Mira said, "Nice. I adopted a greyhound called Pickle."'  # the date is in the label only
    q = query("What did Mira call her greyhound?")
    assert method.store.memories[method.answer([q])[0].extra["memories"][0]] is raw[2]


def test_sessions_follow_the_synthetic_chats_structure_not_their_text():
    from evals.synthetic import SyntheticBenchmark

    contexts, _ = SyntheticBenchmark(num_episodes=4, seed=3, sessions=3).load()
    for context in contexts:
        groups = split_sessions(context.messages, 10, context.sessions)
        assert len(groups) == 3 and [g[0] for g in groups] == [s.message for s in context.sessions]
        for number, group in enumerate(groups, start=1):  # each starts at the message carrying its marker
            assert context.messages[group[0]]["content"].startswith(f"(Session {number}) ")
    chat = [{"role": "user", "content": t} for t in ("(Session 1) a", "b", "(Session 2) c", "d", "e")]
    assert split_sessions(chat, messages_per_session=3) == [[0, 1, 2], [3, 4]]  # no structure: markers are text
    assert split_sessions([{"role": "user", "content": "x"}] * 5, messages_per_session=2) == [[0, 1], [2, 3], [4]]


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random BertModel with a WordPiece tokenizer, saved locally: the real encoder code path."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("encoder") / "tiny-bert"
    words = sorted(set(re.findall(r"[a-z]+", " ".join(m["content"] for m in chat_history()).lower())))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.ascii_lowercase, *string.digits, *words]
    vocab += ["##" + c for c in string.ascii_lowercase + string.digits] + list(string.punctuation)
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))})
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def test_sentence_encoder_loads_a_local_folder(tiny_bert_dir):
    encoder = SentenceEncoder(str(tiny_bert_dir), device="cpu")
    vectors = encoder.encode(["the weather was nice", "the weather was nice", "", "pasta on sundays"])
    assert vectors.shape == (4, 32) and torch.allclose(vectors.norm(dim=-1), torch.ones(4))
    assert torch.allclose(vectors[0], vectors[1]) and not torch.allclose(vectors[0], vectors[3])
    assert encoder.parameters() > 0 and encoder.loaded_from.startswith("path:")


def test_memorybank_runs_synthetic_with_a_real_encoder(loaded, tiny_bert_dir, tmp_path):
    method = MemoryBank(
        loaded,
        encoder=str(tiny_bert_dir),
        encoder_device="cpu",
        raw_memories=True,  # the random backbone's notes may come out empty (not stored); raw messages never do
        summary_max_new_tokens=8,
        facts_max_new_tokens=8,
        portrait_max_new_tokens=8,
        recall_threshold=-1.0,  # random encoder: let every new session recall something
        batch_size=4,
    )
    results = run_synthetic(method, ["memory_only", "recent_window", "no_context"], tmp_path)
    assert results["conditions"]["memory_only"]["n"] == 3 and results["conditions"]["recent_window"]["n"] == 3
    assert results["skipped_conditions"] == ["no_context"]
    cost = results["method_cost"]
    assert cost["extra_trainable_params"] == 0 and cost["encoder_params"] > 0
    assert cost["memories_per_context_mean"] >= 2 and cost["generated_tokens_per_context_mean"] > 0
    assert cost["recalls_per_context_mean"] > 0  # synthetic chats have ≥2 sessions: the second recalls the first
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert all(r["extra"]["memories"] for r in rows)


# ---------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "method,cls,overrides",
    [
        ("bm25_rag", BM25RAG, []),
        ("llmlingua2", LLMLingua2, []),  # the compressor loads lazily: no download at construction
        ("memorybank", MemoryBank, []),  # so does the encoder
    ],
)
def test_method_configs_compose_and_instantiate(loaded, method, cls, overrides):
    cfg = compose_cfg(f"method={method}", *overrides)
    built = instantiate(cfg.method)(loaded=loaded)
    assert isinstance(built, cls) and built.name == method
    assert set(built.conditions) <= {"memory_only", "recent_window"} and "memory_only" in built.conditions
    assert built.cost()["extra_trainable_params"] == 0
    if method == "llmlingua2":
        assert built.force_tokens == ["\n", "?"] and built.compressor is None


def test_passage_chunks_come_from_the_loaders_spans_and_need_them(tmp_path):
    """HotpotQA's loader records each passage block's span (no method parses the text back); BM25's
    `passage` unit cuts one chunk per passage, skipped empty passages keeping their numbers."""
    from evals.hotpotqa import HotpotQA

    record = {"_id": "h1", "question": "Which city is the capital?", "answer": "Oslo",
              "context": [["Alpha", ["Alpha is a town."]], ["Empty", []], ["Beta", ["Beta is", " a capital."]]],
              "supporting_facts": [["Beta", 0]]}
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps([record]))
    for protocol, numbers in (("paper", [1, 3]), ("official", [1, 2, 3])):  # paper skips the empty passage
        (context,), _ = HotpotQA(source=str(path), protocol=protocol).load()
        assert [p.index for p in context.passages] == numbers
        assert {p.message for p in context.passages} == {0}  # the history is one user message
        chunks = chunk_history(context.messages, "passage", passages=context.passages)
        assert [c.text.split(" - ")[0].split(":")[0] for c in chunks] == [f"Passage {n}" for n in numbers]
        assert "\n\n".join(c.text for c in chunks) == context.text  # the blocks tile the history
    assert chunks[-1].text == "Passage 3 - Beta: Beta is a capital."
    with pytest.raises(ValueError, match="unit=passage needs a history with passages"):
        chunk_history(chat_history(), "passage")
    history = History("h1", context.messages, passages=context.passages)
    assert history.passages == context.passages


class KeepsHistories:
    """A method that answers "x" and keeps every history the runner gives it."""

    name, conditions = "keeps", ("memory_only", "memory_only_wrong_history")

    def __init__(self):
        self.histories = []

    def memorize(self, history):
        self.histories.append(history)

    def answer(self, queries):
        from evals.methods import Answer

        return [Answer("x", 1, 1) for _ in queries]

    def reset(self):
        pass

    def cost(self):
        return {}


def test_the_runner_hands_a_history_its_passages_the_wrong_one_included(tmp_path):
    from evals.hotpotqa import HotpotQA

    records = [{"_id": f"h{i}", "question": f"Question {i}?", "answer": "a", "supporting_facts": [],
                "context": [[f"T{i}{j}", [f"Text {i} {j}."]] for j in range(i + 2)]} for i in range(2)]
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps(records))
    bench = HotpotQA(source=str(path))
    contexts, _ = bench.load()
    method = KeepsHistories()
    EvalRunner(bench, method, ["memory_only", "memory_only_wrong_history"], tmp_path / "run", progress=False).run()
    by_id = {c.id: c for c in contexts}
    for history in method.histories:
        source = next(c for c in contexts if c.messages == history.messages)  # the right or the wrong context
        assert list(history.passages) == by_id[source.id].passages and history.passages
    assert {len(h.passages) for h in method.histories} == {2, 3}
