"""The paper's data path: `train_data=qasper` (hub chat rows), `train_data=qasper_raw` (raw Qasper in
three schemas), the exact `datasets.load_dataset` calls, the offline fast-fail and the configs."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra.utils import instantiate

from deltamem import backbones
from deltamem.train_data import HubChats, QasperRawEpisodes
from deltamem.train_data.hub_chats import HubUnavailableError

from test_param_counts import compose_cfg

FIXTURES = Path(__file__).parent / "fixtures"
HF_ROWS = FIXTURES / "qasper_mini.json"  # HF columnar rows (a JSON list)
RAW = FIXTURES / "qasper_raw_mini.json"  # raw AllenAI: a dict keyed by paper id
CHATS = FIXTURES / "qasper_chats.jsonl"  # hub chat rows {"messages": [...], "id"?, "meta"?}
HUB_ID = "huaXiaKyrie/delta-mem-qasper-data"
IDS = [
    "9001.00001:qa-a1",
    "9001.00001:qa-a2",
    "9001.00001:qa-a3",
    "9001.00001:qa-a5",
    "9001.00002:qa-b1",
    "9001.00002:qa-b2",
]
REVISIONS = {
    "qwen4b": "cdbee75f17c01a7cc42f958dc650907174af0554",
    "qwen8b": "b968826d9c46dd6066d109eabc6255188de91218",
    "smollm3": "a07cc9a04f16550a088caea529712d1d335b0ac1",
}


def _chat_rows() -> list[dict]:
    return [json.loads(line) for line in CHATS.read_text().splitlines() if line.strip()]


ROWS_BY_ID = {HUB_ID: _chat_rows, "allenai/qasper": lambda: json.loads(HF_ROWS.read_text())}


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple, dict]]:
    """The hub looks reachable and `datasets.load_dataset` is a recorder that serves `ROWS_BY_ID[hub_id]()`
    as a real `datasets.Dataset` (no network). Returns the recorded (args, kwargs) calls."""
    calls: list[tuple[tuple, dict]] = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(backbones, "hub_reachable", lambda timeout=3.0: True)

    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_list(copy.deepcopy(ROWS_BY_ID[args[0]]()))

    monkeypatch.setattr(datasets, "load_dataset", fake)
    return calls


# ------------------------------------------------------------------------------------ three schemas
def test_raw_and_hf_row_schemas_give_the_same_episodes(tmp_path: Path) -> None:
    from_hf, from_raw = list(QasperRawEpisodes(source=str(HF_ROWS))), list(QasperRawEpisodes(source=str(RAW)))
    assert [r["id"] for r in from_hf] == IDS and from_raw == from_hf
    parquet = tmp_path / "train-00000.parquet"  # the parquet conversion's own file type
    pq.write_table(pa.Table.from_pylist(json.loads(HF_ROWS.read_text())), parquet)
    assert list(QasperRawEpisodes(source=str(parquet))) == from_hf
    assert from_raw[4]["messages"][-2:] == [
        {"role": "user", "content": "What sampling rate do the recorders use?"},
        {"role": "assistant", "content": "22 kHz"},
    ]


def test_hub_chat_rows_match_the_built_episodes_of_the_same_paper() -> None:
    built = {r["id"]: r for r in QasperRawEpisodes(source=str(RAW))}
    chats = HubChats(hub_id=HUB_ID, path=str(CHATS))
    assert len(chats) == 3 and chats.loaded_from == f"path:{CHATS}"
    for k, episode_id in enumerate(["9001.00002:qa-b1", "9001.00002:qa-b2"]):
        record, same = chats[k], built[episode_id]
        assert (record["id"], record["messages"], record["answer"]) == (same["id"], same["messages"], same["answer"])
        assert record["meta"] == {
            "paper_id": "9001.00002",
            "question_id": episode_id.split(":")[1],
            "source": HUB_ID,
            "split": "train",
            "row": k,
        }
    release_style = chats[2]  # one user turn holds the paper, then several questions; no id, no meta
    assert release_style["id"] == f"{HUB_ID}[train]:2" and release_style["answer"] == "No"
    assert release_style["meta"] == {"source": HUB_ID, "split": "train", "row": 2}
    assert [m["role"] for m in release_style["messages"]] == ["user", "assistant"] * 3


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_hub_chats_local_copies_in_every_file_type(tmp_path: Path, suffix: str) -> None:
    rows = _chat_rows()
    path = tmp_path / f"rows{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(rows))
    else:  # a column only some rows fill is null in the others
        pq.write_table(pa.Table.from_pylist(rows), path)
    assert list(HubChats(hub_id=HUB_ID, path=str(path))) == list(HubChats(hub_id=HUB_ID, path=str(CHATS)))


# ------------------------------------------------------------------------------ exact hub arguments
def test_train_data_qasper_loads_exactly_the_papers_hub_rows(online: list) -> None:
    source = instantiate(compose_cfg("train_data=qasper").train_data)
    assert isinstance(source, HubChats) and online == []  # construction is free
    records = list(source)
    assert online == [((HUB_ID,), {"split": "train", "revision": None})]
    assert source.loaded_from == f"hub:{HUB_ID}@main"
    assert records == list(HubChats(hub_id=HUB_ID, path=str(CHATS)))  # the local copy is the same episodes
    len(source)
    assert len(online) == 1  # loaded once


def test_hub_chats_passes_split_and_revision(online: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ROWS_BY_ID, "someone/chats", _chat_rows)
    source = HubChats(hub_id="someone/chats", split="validation", revision="abc123")
    assert len(source) == 3 and source[2]["id"] == "someone/chats[validation]:2"
    assert source.loaded_from == "hub:someone/chats@abc123"
    assert online == [(("someone/chats",), {"split": "validation", "revision": "abc123"})]


def test_raw_builder_reads_the_parquet_conversion(online: list) -> None:
    source = instantiate(compose_cfg("train_data=qasper_raw").train_data)
    assert isinstance(source, QasperRawEpisodes)
    records = list(source)
    assert online == [(("allenai/qasper",), {"split": "train", "revision": "refs/convert/parquet"})]
    assert records == list(QasperRawEpisodes(source=str(HF_ROWS)))


def test_hub_errors_are_one_line_naming_the_hub_id(online: list, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(*args, **kwargs):
        raise FileNotFoundError("Dataset 'nobody/none' doesn't exist on the Hub\nor cannot be accessed.")

    monkeypatch.setattr(datasets, "load_dataset", missing)
    with pytest.raises(HubUnavailableError) as info:
        len(HubChats(hub_id="nobody/none"))
    assert str(info.value) == (
        "cannot load 'nobody/none' (split 'train', revision None) from the hub: FileNotFoundError: "
        "Dataset 'nobody/none' doesn't exist on the Hub; pass path=<a local .jsonl/.json/.parquet copy "
        "of its train rows> (train_data.path=...) instead"
    )


# ------------------------------------------------------------------------------------ offline
def _never(*args, **kwargs):
    raise AssertionError("must not be called")


def test_offline_fails_fast_naming_the_hub_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", _never)
    monkeypatch.setattr(backbones, "hub_reachable", _never)  # offline: not even a TCP connect
    with pytest.raises(HubUnavailableError) as info:
        len(instantiate(compose_cfg("train_data=qasper").train_data))
    assert str(info.value) == (
        f"cannot load '{HUB_ID}' (split 'train', revision None) from the hub: HF_HUB_OFFLINE=1 is set; "
        "pass path=<a local .jsonl/.json/.parquet copy of its train rows> (train_data.path=...) instead"
    )
    with pytest.raises(HubUnavailableError) as info:
        len(QasperRawEpisodes())
    assert str(info.value) == (
        "cannot load 'allenai/qasper' (split 'train', revision 'refs/convert/parquet') from the hub: "
        "HF_HUB_OFFLINE=1 is set; pass source=<a local raw AllenAI JSON, HF-rows JSON or parquet file> instead"
    )


def test_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", _never)
    monkeypatch.setattr(backbones, "hub_reachable", lambda timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError) as info:
        len(HubChats(hub_id=HUB_ID))
    assert time.perf_counter() - start < 1.0
    assert str(info.value) == (
        f"cannot load '{HUB_ID}' (split 'train', revision None) from the hub: the hub cannot be reached "
        "(a TCP connect to it failed); pass path=<a local .jsonl/.json/.parquet copy of its train rows> "
        "(train_data.path=...) instead"
    )


# ------------------------------------------------------------------------------------ malformed data
GOOD = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


@pytest.mark.parametrize(
    "bad, problem",
    [
        ({"id": "x", "messages": None, "meta": None}, '"messages" must be a list, got NoneType'),
        (
            {"id": "x", "messages": [GOOD[0], {"role": "assistant", "content": None}], "meta": None},
            "message 2 content must be a string, got NoneType",
        ),
        (
            {"id": "x", "messages": GOOD[:1] + GOOD[:1], "meta": None},
            "last message must be from the assistant (the answer), got 'user'",
        ),
        ({"id": "x", "messages": GOOD, "meta": "note"}, '"meta" must be an object, got str'),
    ],
)
def test_malformed_hub_rows_name_the_row_and_field(
    online: list, monkeypatch: pytest.MonkeyPatch, bad: dict, problem: str
) -> None:
    monkeypatch.setitem(ROWS_BY_ID, "someone/bad", lambda: [{"id": "ok", "messages": GOOD, "meta": None}, bad])
    with pytest.raises(ValueError) as info:
        len(HubChats(hub_id="someone/bad"))
    assert str(info.value) == f"someone/bad[train] row 1: {problem}"


def test_malformed_local_rows_name_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"messages": GOOD}, {"messages": GOOD[::-1]}]))
    with pytest.raises(ValueError) as info:
        len(HubChats(hub_id=HUB_ID, path=str(path)))
    assert str(info.value) == f"{path} row 1: last message must be from the assistant (the answer), got 'user'"
    lines = tmp_path / "rows.jsonl"
    lines.write_text(json.dumps({"messages": GOOD}) + "\n\n" + json.dumps({"text": "hi"}) + "\n")
    with pytest.raises(ValueError) as info:
        len(HubChats(hub_id=HUB_ID, path=str(lines)))
    assert str(info.value) == f'{lines}:3: missing "messages"'
    table = tmp_path / "rows.csv"
    table.write_text("messages\n")
    with pytest.raises(ValueError) as info:
        len(HubChats(hub_id=HUB_ID, path=str(table)))
    assert str(info.value) == f"{table}: unknown file type '.csv' (expected .jsonl, .json or .parquet)"
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        len(HubChats(hub_id=HUB_ID, path=str(tmp_path / "nope.jsonl")))


def _raw() -> dict:
    return json.loads(RAW.read_text())


def _drop(node: dict, *keys: str | int) -> None:
    for key in keys[:-1]:
        node = node[key]
    del node[keys[-1]]


@pytest.mark.parametrize(
    "keys, message",
    [
        (("9001.00002", "qas"), "paper '9001.00002' is missing field 'qas'"),
        (("9001.00002", "full_text", 1, "paragraphs"), "paper '9001.00002' is missing field 'full_text[1].paragraphs'"),
        (("9001.00001", "qas", 2, "question_id"), "paper '9001.00001' is missing field 'qas[2].question_id'"),
        (
            ("9001.00001", "qas", 4, "answers", 1, "answer"),
            "paper '9001.00001' is missing field 'qas[4].answers[1].answer'",
        ),
    ],
)
def test_malformed_raw_papers_name_paper_and_field(tmp_path: Path, keys: tuple, message: str) -> None:
    raw = _raw()
    _drop(raw, *keys)
    path = tmp_path / "raw.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError) as info:
        len(QasperRawEpisodes(source=str(path)))
    assert str(info.value) == f"{path}: {message}"


def test_malformed_hf_row_names_row_and_field(tmp_path: Path) -> None:
    rows = json.loads(HF_ROWS.read_text())
    del rows[0]["qas"]["answers"][1]["answer"]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(ValueError) as info:
        len(QasperRawEpisodes(source=str(path)))
    assert str(info.value) == f"{path}: paper 0 (id '9001.00001') is missing field 'qas.answers[1].answer'"
    rows[0]["qas"]["answers"][1]["answer"] = "free text"
    path.write_text(json.dumps(rows))
    with pytest.raises(ValueError) as info:
        len(QasperRawEpisodes(source=str(path)))
    expected = f"{path}: paper 0 (id '9001.00001'): field 'qas.answers[1].answer' must be a list, got str"
    assert str(info.value) == expected


# ------------------------------------------------------------------------------------ configs
def test_train_data_configs_compose() -> None:
    cfg = compose_cfg("train_data=qasper")
    assert dict(cfg.train_data) == {
        "_target_": "deltamem.train_data.HubChats",
        "hub_id": HUB_ID,
        "split": "train",
        "revision": None,
        "path": None,
    }
    source = instantiate(cfg.train_data)
    assert (source.hub_id, source.split, source.revision, source.path) == (HUB_ID, "train", None, None)
    raw = compose_cfg("train_data=qasper_raw").train_data
    assert dict(raw) == {
        "_target_": "deltamem.train_data.QasperRawEpisodes",
        "source": "allenai/qasper",
        "split": "train",
        "revision": "refs/convert/parquet",
        "paragraphs_per_message": 4,
    }
    local = instantiate(compose_cfg("train_data=qasper", f"train_data.path={CHATS}").train_data)
    assert len(local) == 3


@pytest.mark.parametrize("memory", ["tsw", "ssw", "msw"])
@pytest.mark.parametrize("backbone", sorted(REVISIONS))
def test_paper_experiments_pin_seed_data_and_backbone_revision(memory: str, backbone: str) -> None:
    cfg = compose_cfg(f"experiment={memory}_{backbone}")
    assert cfg.seed == 42
    assert cfg.train_data._target_ == "deltamem.train_data.HubChats" and cfg.train_data.hub_id == HUB_ID
    assert cfg.backbone.revision == REVISIONS[backbone]
    assert isinstance(instantiate(cfg.train_data), HubChats)


def test_msw_qwen4b_composes_the_papers_run() -> None:
    cfg = compose_cfg("experiment=msw_qwen4b")
    assert (cfg.seed, cfg.backbone.hub_id, cfg.backbone.revision) == (
        42,
        "Qwen/Qwen3-4B-Instruct-2507",
        "cdbee75f17c01a7cc42f958dc650907174af0554",
    )
    assert cfg.memory.num_state_heads == 4 and cfg.training.max_write_length == 8192
