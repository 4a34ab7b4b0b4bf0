"""Per-user δ-mem sessions (deltamem/session.py) and their store (deltamem/state_store.py), on the
tiny backbone: save/load is exact, users never mix, bad files and bad ids are refused, and a save
killed between write and rename leaves the previous state whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from deltamem.adapters import adapter_sha256, save_adapter
from deltamem.attach import attach_memory
from deltamem.backbones import BackboneSpec, load_backbone
from deltamem.config import DeltaMemConfig
from deltamem.episodes import EpisodeBuilder
from deltamem.session import MemorySession, SessionError, SessionManager
from deltamem.state import MemoryState
from deltamem.state_store import SessionMeta, SessionStoreError, StateStore, check_user_id

from conftest import REPO_ROOT, TINY_ARCHITECTURES

TALK = [
    ("alice lives in paris", "okay"),
    ("her pet is a cat", "sure"),
    ("what is the name of the city", None),
]


def tiny_loaded():
    arch = {**TINY_ARCHITECTURES["qwen3"], "vocab_size": 1024, "max_position_embeddings": 4096}
    spec = BackboneSpec(name="tiny", random_init=True, dtype="float32", device="cpu", attn_implementation="sdpa",
                        tokenizer="local_bpe", architecture=arch, seed=0)
    return load_backbone(spec)


@pytest.fixture(scope="module", params=["tsw", "ssw"])
def setup(request, tmp_path_factory):
    loaded = tiny_loaded()
    torch.manual_seed(0)
    model = attach_memory(loaded.model, DeltaMemConfig(write=request.param, beta_bias_init=0.0)).eval()
    with torch.no_grad():  # a memory that visibly changes the outputs
        for _, p in model.memory_parameters():
            p.add_(0.3 * torch.randn_like(p))
    folder = save_adapter(model, tmp_path_factory.mktemp("adapter") / "adapter")
    builder = EpisodeBuilder(loaded.tokenizer)
    return model, builder, adapter_sha256(folder)


def manager(setup, root, window: int = 512) -> SessionManager:
    model, builder, sha = setup
    return SessionManager(model, builder, StateStore(root), sha, "tiny", window=window)


def states_equal(a: MemoryState | None, b: MemoryState | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.layers.keys() == b.layers.keys() and all(
        (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
        for x, y in zip(a.layers.values(), b.layers.values())
    )


def next_logits(session: MemorySession, text: str) -> torch.Tensor:
    session._load_into_model()
    ids = torch.tensor([session.prompt_tokens(text)])
    with torch.no_grad(), session.model.writes(False):
        return session.model(input_ids=ids).logits[0, -1]


def test_save_then_load_gives_the_same_state_and_the_same_next_logits(setup, tmp_path):
    chats = manager(setup, tmp_path)
    first = chats.open("alice")
    for message, _ in TALK[:2]:
        first.turn(message, max_new_tokens=4)
    chats.save(first)
    again = chats.open("alice")
    assert states_equal(first.state, again.state) and again.meta.turns == 2
    assert again.meta.tokens_written == first.meta.tokens_written > 0
    assert torch.equal(next_logits(first, TALK[2][0]), next_logits(again, TALK[2][0]))
    empty = chats.open("bob")
    assert empty.state is None
    assert not torch.equal(next_logits(first, TALK[2][0]), next_logits(empty, TALK[2][0]))  # the memory matters


def test_two_users_interleaved_equal_each_user_alone(setup, tmp_path):
    alone = {}
    for user, facts in (("alice", ["alice lives in paris", "her pet is a cat"]),
                        ("bob", ["bob works as a chef", "his food is sushi"])):
        chats = manager(setup, tmp_path / f"alone_{user}")
        answers = [chats.chat(user, fact, max_new_tokens=5).answer for fact in facts]
        alone[user] = (answers, chats.open(user).state)
    chats = manager(setup, tmp_path / "together")
    mixed = {"alice": [], "bob": []}
    for a, b in zip(["alice lives in paris", "her pet is a cat"], ["bob works as a chef", "his food is sushi"]):
        mixed["alice"].append(chats.chat("alice", a, max_new_tokens=5).answer)
        mixed["bob"].append(chats.chat("bob", b, max_new_tokens=5).answer)
    for user in ("alice", "bob"):
        assert mixed[user] == alone[user][0]
        assert states_equal(chats.open(user).state, alone[user][1])


def test_a_chat_written_turn_by_turn_has_the_tokens_of_the_whole_chat(setup, tmp_path):
    model, builder, sha = setup
    session = manager(setup, tmp_path).open("carol")
    chat = [{"role": r, "content": c} for m, a in TALK[:2] for r, c in (("user", m), ("assistant", a))]
    pieces = []
    for k in range(0, len(chat), 2):
        ids, _ = session.continuation_tokens(chat[k : k + 2])
        pieces += ids
        session.meta.last_role = chat[k + 1]["role"]
    assert pieces == builder.write_part([], chat)[0]


def test_a_long_turn_is_written_in_window_sized_chunks(setup, tmp_path):
    model, builder, sha = setup
    session = manager(setup, tmp_path, window=16).open("dave")
    message = [{"role": "user", "content": "the city of alice is paris and the pet of bob is a dog " * 3}]
    written = session.write(message)
    ids, message_ids, _ = builder.write_part([], message)
    assert written == len(ids) > 3 * 16
    model.reset_state()
    segments = torch.tensor([message_ids]) if model.memory_config.write == "ssw" else None
    with torch.no_grad():
        model.write_history(torch.tensor([ids]), None, segments, chunk_size=16)
    assert states_equal(session.state, model.get_state().clone())


def test_a_question_longer_than_the_window_is_refused(setup, tmp_path):
    session = manager(setup, tmp_path, window=32).open("erin")
    with pytest.raises(SessionError, match="exceeds the 32-token window"):
        session.answer("alice " * 40, max_new_tokens=4)
    with pytest.raises(SessionError, match="empty"):
        session.answer("  ")


def test_a_truncated_or_corrupted_state_is_refused(setup, tmp_path):
    chats = manager(setup, tmp_path)
    chats.chat("frank", "frank likes tea", max_new_tokens=3)
    path = chats.store.path("frank")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SessionStoreError, match="unreadable"):
        chats.open("frank")
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF  # inside the last tensor's bytes
    path.write_bytes(bytes(flipped))
    with pytest.raises(SessionStoreError, match="checksum"):
        chats.open("frank")


def test_another_adapter_or_backbone_is_refused(setup, tmp_path):
    model, builder, sha = setup
    manager(setup, tmp_path).chat("grace", "grace is a pilot", max_new_tokens=3)
    other = SessionManager(model, builder, StateStore(tmp_path), "0" * 64, "tiny", window=512)
    with pytest.raises(SessionStoreError, match="saved under adapter"):
        other.open("grace")
    with pytest.raises(SessionStoreError, match="backbone 'tiny', not 'qwen3_4b'"):
        SessionManager(model, builder, StateStore(tmp_path), sha, "qwen3_4b").open("grace")


@pytest.mark.parametrize("user", ["../x", "", "a/b", "..", ".hidden", "x" * 129, "a\nb"])
def test_bad_user_ids_are_refused_before_any_path_is_built(user, tmp_path):
    with pytest.raises(SessionStoreError, match="is not allowed"):
        StateStore(tmp_path).path(user)
    assert check_user_id("alice.smith@example-1") == "alice.smith@example-1"


def test_a_save_killed_between_write_and_rename_leaves_the_previous_state(tmp_path):
    store = StateStore(tmp_path)
    old = MemoryState({0: torch.ones(1, 1, 8, 8), 1: None})
    store.save(old, SessionMeta("ivan", "a" * 64, "tiny", turns=1))
    script = textwrap.dedent(f"""
        import sys, time, torch
        from deltamem.state import MemoryState
        from deltamem.state_store import SessionMeta, StateStore
        store = StateStore({str(tmp_path)!r})
        new = MemoryState({{0: torch.full((1, 1, 8, 8), 7.0), 1: None}})
        def stall():
            print("written", flush=True)
            time.sleep(60)
        store.save(new, SessionMeta("ivan", "a" * 64, "tiny", turns=2), before_rename=stall)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")})
    try:
        assert child.stdout.readline().strip() == "written"
        assert list(tmp_path.glob("states/.ivan.safetensors.*.partial"))  # the new file is fully written
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    state, meta = store.load("ivan", "a" * 64, "tiny")
    assert torch.equal(state.layers[0], old.layers[0]) and state.layers[1] is None and meta.turns == 1
    assert store.users() == ["ivan"]


def test_forget_deletes_the_state_and_its_json(setup, tmp_path):
    chats = manager(setup, tmp_path)
    chats.chat("judy", "judy likes soup", max_new_tokens=3)
    assert chats.stats("judy")["turns"] == 1 and (tmp_path / "states" / "judy.json").is_file()
    assert chats.forget("judy") and not chats.forget("judy")
    assert chats.stats("judy") is None and not list((tmp_path / "states").iterdir())
