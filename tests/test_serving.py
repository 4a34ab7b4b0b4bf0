"""task=serve as a client uses it: a real uvicorn server on localhost (src/run.py), a real HTTP client.

Two users hit it concurrently and their memories equal each user's alone; malformed requests get a
4xx and leave every state as it was; without the token every route is 401; after a restart each
user's memory is still there. Plus the request parser's refusals, in-process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi", reason="task=serve needs fastapi and uvicorn (pip install -e '.[serve]')")

from deltamem.serving import BadRequest, parse_chat_request  # noqa: E402
from deltamem.state_store import StateStore  # noqa: E402

from conftest import REPO_ROOT, compose_config, tiny_adapter  # noqa: E402

TOKEN = "s3cret-token"
FACTS = {
    "alice": [f"alice {w} is {c}" for w, c in zip(["city", "pet", "food", "job", "color"] * 10,
                                                  ["paris", "cat", "soup", "pilot", "red"] * 10)],
    "bob": [f"bob {w} is {c}" for w, c in zip(["city", "pet", "food", "job", "color"] * 10,
                                              ["oslo", "dog", "rice", "chef", "blue"] * 10)],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp: Path, adapter: Path, store: Path, token: str | None):
        self.port = free_port()
        env = {**os.environ, "DELTAMEM_TRACEBACK": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
        env.pop("DELTAMEM_SERVE_TOKEN", None)
        if token:
            env["DELTAMEM_SERVE_TOKEN"] = token
        self.log = (tmp / f"server_{self.port}.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "src" / "run.py"), "task=serve", "backbone=tiny", f"adapter={adapter}",
             f"task.store={store}", f"task.port={self.port}", "task.max_new_tokens=8", "task.max_body_bytes=4096",
             f"hydra.run.dir={tmp / 'hydra'}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("the server did not start in 120 s")

    def request(self, method: str, path: str, body: bytes | dict | None = None, token: str | None = TOKEN,
                headers: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        request.add_header("content-type", "application/json")
        if token:
            request.add_header("authorization", f"Bearer {token}")
        for k, v in (headers or {}).items():
            request.add_header(k, v)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def chat_body(user: str, text: str, **extra) -> dict:
    return {"user": user, "messages": [{"role": "user", "content": text}], "max_tokens": 4, **extra}


def state_files(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((store / "states").glob("*"))}


def test_the_service_end_to_end(tmp_path):
    adapter = tiny_adapter(tmp_path / "adapter")
    store = tmp_path / "store"
    server = Server(tmp_path, adapter, store, TOKEN)
    try:
        # the token guards every route
        assert server.request("GET", "/healthz", token=None)[0] == 401
        assert server.request("GET", "/healthz", token="wrong")[0] == 401
        assert server.request("POST", "/v1/chat/completions", chat_body("alice", "hi"), token=None)[0] == 401
        status, health = server.request("GET", "/healthz")
        assert status == 200 and health["backbone"] == "tiny" and len(health["adapter_sha256"]) == 64

        # two users, 100 interleaved requests: each user's requests in order, the two users at once
        def one_user(user: str) -> list[str]:
            answers = []
            for fact in FACTS[user]:
                status, reply = server.request("POST", "/v1/chat/completions", chat_body(user, fact))
                assert status == 200, reply
                answers.append(reply["choices"][0]["message"]["content"])
            return answers

        started = time.time()
        with ThreadPoolExecutor(2) as pool:
            served = dict(zip(FACTS, pool.map(one_user, FACTS)))
        assert time.time() - started < 300
        assert sum(map(len, served.values())) == 100
        for user in FACTS:
            assert server.request("GET", f"/v1/memory/{user}")[1]["turns"] == 50

        # malformed requests: a 4xx each, and no state changes
        before = state_files(store)
        bad = [
            (b"{not json", 400), (json.dumps({"user": "alice"}).encode(), 400),
            (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 400),
            (json.dumps(chat_body("../x", "hello")).encode(), 400),
            (json.dumps(chat_body("alice", "hello", model="gpt-4")).encode(), 404),
            (json.dumps({"user": "alice", "messages": [{"role": "user", "content": "a"},
                                                       {"role": "assistant", "content": "b"},
                                                       {"role": "user", "content": "c"}]}).encode(), 400),
            (json.dumps(chat_body("alice", "x" * 5000)).encode(), 413),
            (json.dumps(chat_body("alice", "hello", max_tokens=10_000)).encode(), 400),
        ]
        for body, status in bad:
            code, reply = server.request("POST", "/v1/chat/completions", body)
            assert code == status and reply["error"]["message"], (body[:60], code, reply)
        assert server.request("GET", "/v1/memory/..%2Fx")[0] in (400, 404)
        assert state_files(store) == before
    finally:
        server.stop()

    # the same memories, replayed user by user in this process
    expected = replay(adapter, tmp_path / "replay")
    for user in FACTS:
        assert served[user] == expected[user][0]
        saved = StateStore(store).load(user, health["adapter_sha256"], "tiny")[0]
        for layer, tensor in saved.layers.items():
            assert torch.allclose(tensor, expected[user][1].layers[layer], atol=1e-5), (user, layer)

    # a restarted server still has both memories; DELETE forgets one
    server = Server(tmp_path, adapter, store, TOKEN)
    try:
        assert server.request("GET", "/v1/memory/alice")[1]["turns"] == 50
        assert server.request("DELETE", "/v1/memory/bob")[1] == {"user": "bob", "deleted": True}
        assert server.request("GET", "/v1/memory/bob")[0] == 404
        status, reply = server.request("POST", "/v1/chat/completions", chat_body("alice", "what is the city"))
        assert status == 200 and reply["usage"]["completion_tokens"] <= 4
        assert server.request("GET", "/v1/memory/alice")[1]["turns"] == 51
    finally:
        server.stop()


def replay(adapter: Path, store: Path) -> dict:
    from hydra.utils import instantiate  # noqa: F401  (compose below needs Hydra initialised fresh)

    from deltamem.session_runtime import open_manager

    cfg = compose_config("backbone=tiny", f"adapter={adapter}")
    manager = open_manager(cfg, {"store": str(store), "window": None, "system": None, "recent_turns": 0})
    out = {}
    for user, facts in FACTS.items():
        answers = [manager.chat(user, fact, max_new_tokens=4).answer for fact in facts]
        out[user] = (answers, manager.open(user).state)
    return out


@pytest.mark.parametrize(
    "body, message",
    [
        (b"[1, 2]", "JSON object"),
        (json.dumps({"user": 3, "messages": []}).encode(), "'user'"),
        (json.dumps({"user": "a", "messages": [{"role": "tool", "content": "x"}]}).encode(), "role in"),
        (json.dumps({"user": "a", "messages": [{"role": "user", "content": "  "}]}).encode(), "empty"),
        (json.dumps({"user": "a", "messages": [{"role": "user", "content": "x"}], "max_tokens": True}).encode(),
         "max_tokens"),
    ],
)
def test_the_parser_names_what_is_wrong(body, message):
    with pytest.raises(BadRequest, match=message):
        parse_chat_request(body, "deltamem", 64)


def test_the_parser_takes_the_new_user_message_and_refuses_a_system_one():
    body = {"user": "alice", "model": "deltamem", "max_tokens": 7, "messages": [{"role": "user", "content": "hello"}]}
    assert parse_chat_request(json.dumps(body).encode(), "deltamem", 64) == ("alice", "hello", 7)
    body["messages"].insert(0, {"role": "system", "content": "be brief"})
    with pytest.raises(BadRequest, match="task.system"):
        parse_chat_request(json.dumps(body).encode(), "deltamem", 64)
