"""task=chat (deltamem/chat_cli.py) on the tiny backbone: turns stream and are remembered across runs,
the slash commands do what they say, and the state is saved at end of input and on Ctrl-C."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from deltamem.errors import UserError
from deltamem.state_store import StateStore

from conftest import REPO_ROOT, compose_config, tiny_adapter


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return tiny_adapter(tmp_path_factory.mktemp("chat") / "adapter")


def run_chat(adapter, store, lines, user="alice", **settings):
    from deltamem.chat_cli import chat

    cfg = compose_config("backbone=tiny", f"adapter={adapter}")
    feed = iter(lines)

    def read_line(prompt: str) -> str:
        item = next(feed, None)
        if item is None:
            raise EOFError
        if isinstance(item, BaseException):
            raise item
        return item

    shown: list[str] = []
    stats = chat(cfg, user=user, store=str(store), max_new_tokens=4, read_line=read_line, write=shown.append,
                 **settings)
    return stats, "".join(shown)


def test_turns_are_remembered_across_runs_and_commands_work(adapter, tmp_path):
    stats, shown = run_chat(adapter, tmp_path, ["alice lives in paris", "", "her pet is a cat", "/stats"])
    assert stats["turns"] == 2 and "δ-mem> " in shown and "saved 'alice': 2 turns" in shown
    shown_stats = json.loads(next(line for line in shown.splitlines() if line.startswith("{")))
    assert shown_stats["turns"] == 2 and shown_stats["tokens_written"] > 0
    stats, shown = run_chat(adapter, tmp_path, ["where does alice live", "/quit", "never read"])
    assert "2 turns remembered" in shown and stats["turns"] == 3
    stats, shown = run_chat(adapter, tmp_path, ["/reset", "/save", "/bogus"])
    assert stats["turns"] == 0 and "unknown command '/bogus'" in shown
    assert StateStore(tmp_path).users() == []  # an empty memory is saved as no file
    run_chat(adapter, tmp_path, ["bob is a chef"], user="bob")
    _, shown = run_chat(adapter, tmp_path, ["/forget"], user="bob")
    assert "saved memory deleted" in shown and StateStore(tmp_path).users() == []


def test_ctrl_c_saves_before_leaving(adapter, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_chat(adapter, tmp_path, ["carol likes tea", KeyboardInterrupt()], user="carol")
    assert StateStore(tmp_path).users() == ["carol"]


def test_recent_turns_stay_in_the_prompt_only_when_asked(adapter, tmp_path):
    run_chat(adapter, tmp_path / "on", ["dave is a pilot", "he has a dog"], user="dave", recent_turns=1)
    run_chat(adapter, tmp_path / "off", ["dave is a pilot", "he has a dog"], user="dave")
    sha = json.loads((tmp_path / "on" / "states" / "dave.json").read_text())["adapter_sha256"]
    on = StateStore(tmp_path / "on").load("dave", sha, "tiny")[1]
    off = StateStore(tmp_path / "off").load("dave", sha, "tiny")[1]
    assert [m["content"] for m in on.recent][0] == "he has a dog" and len(on.recent) == 2 and off.recent == []


def test_the_command_line_refuses_a_missing_adapter_or_a_bad_user(tmp_path):
    from deltamem.chat_cli import chat

    with pytest.raises(UserError, match="needs adapter="):
        chat(compose_config("backbone=tiny"), user="alice", store=str(tmp_path))
    with pytest.raises(UserError, match="is not allowed"):
        chat(compose_config("backbone=tiny"), user="../x", store=str(tmp_path))
    done = subprocess.run([sys.executable, str(REPO_ROOT / "src" / "run.py"), "task=chat", "backbone=tiny"],
                          capture_output=True, text=True, cwd=REPO_ROOT, input="")
    assert done.returncode == 1 and done.stderr.strip().endswith("this command needs task.user=...")
