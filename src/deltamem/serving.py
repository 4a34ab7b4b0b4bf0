"""`python src/run.py task=serve adapter=<folder> [task.port=8000] [task.token=...]`: δ-mem memory
sessions over HTTP (FastAPI + uvicorn), bound to 127.0.0.1 unless `task.host` says otherwise.

Routes (every one needs `Authorization: Bearer <token>` when a token is set):
* `POST /v1/chat/completions`: OpenAI-style. `user` selects the memory. `messages` is the new user
  message only: δ-mem remembers the earlier turns itself, so a request that resends them is refused,
  and the system message is the server's (`task.system`). The reply is answered from the user's state, then the
  exchange is written into it and saved before the response.
* `GET /v1/memory/{user}`: that memory's stats (404 if none). `DELETE /v1/memory/{user}`: forget it.
* `GET /healthz`: the backbone and adapter served.

Bad input gets a 4xx with `{"error": {"message", "type"}}` and never touches a state. That covers
malformed JSON, a missing or bad `messages` or `user`, a body over `max_body_bytes`, an unknown
`model`, and a state saved under another adapter. Requests for different users interleave turn by
turn and never share a state; requests for one user run one at a time (`SessionManager`'s locks).
"""

# no `from __future__ import annotations`: FastAPI reads the route annotations (Request) at definition time

import hmac
import json
import time
import uuid
from typing import Any

from omegaconf import DictConfig

from .errors import UserError
from .session import SessionManager
from .session_runtime import open_manager
from .state_store import check_user_id

ROLES = ("system", "user")


class BadRequest(UserError, ValueError):
    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.kind = status, kind


def parse_chat_request(body: bytes, model_name: str, max_new_tokens: int) -> tuple[str, str, int]:
    """(user, message, max new tokens) of a chat-completions body, or BadRequest naming the problem."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadRequest(f"the body is not JSON ({error})") from error
    if not isinstance(request, dict):
        raise BadRequest("the body must be a JSON object")
    user = request.get("user")
    if not isinstance(user, str):
        raise BadRequest("'user' (the memory to use) is required and must be a string")
    check_user_id(user)
    if request.get("model") not in (None, model_name):
        raise BadRequest(f"unknown model {request['model']!r}; this server serves {model_name!r}", 404, "not_found")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required: a list ending with the new user message")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise BadRequest(f"each message needs a role in {ROLES} and a string content, got {str(m)[:80]!r}")
    if any(m["role"] == "system" for m in messages):
        raise BadRequest("system messages are the server's (task.system); send only the new user message")
    if len(messages) != 1:
        raise BadRequest(
            "send only the new user message: δ-mem remembers the earlier turns itself "
            "(resending them would write them twice)"
        )
    users = messages
    if not users[0]["content"].strip():
        raise BadRequest("the user message is empty")
    asked = request.get("max_tokens", request.get("max_completion_tokens", max_new_tokens))
    if not isinstance(asked, int) or isinstance(asked, bool) or not 1 <= asked <= max_new_tokens:
        raise BadRequest(f"'max_tokens' must be an integer from 1 to {max_new_tokens}")
    return user, users[0]["content"], asked


def create_app(
    manager: SessionManager, token: str | None = None, max_body_bytes: int = 1 << 20,
    max_new_tokens: int = 512, model_name: str = "deltamem",
) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse

    app = FastAPI(title="δ-mem sessions", docs_url=None, redoc_url=None)

    def error(status: int, message: str, kind: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return error(401, "missing or wrong bearer token", "authentication_error")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            return error(413, f"the body is over {max_body_bytes} bytes", "invalid_request_error")
        return await call_next(request)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, "backbone": manager.backbone,
                "adapter_sha256": manager.adapter_sha256}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        body = await request.body()
        if len(body) > max_body_bytes:  # a chunked body has no content-length to check first
            return error(413, f"the body is over {max_body_bytes} bytes", "invalid_request_error")
        try:
            user, message, asked = parse_chat_request(body, model_name, max_new_tokens)
            turn = await run_in_threadpool(manager.chat, user, message, asked)
        except BadRequest as bad:
            return error(bad.status, str(bad), bad.kind)
        except UserError as bad:  # a bad id, a state of another adapter, a message over the window
            return error(400, str(bad), "invalid_request_error")
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": turn.answer},
                         "finish_reason": "length" if turn.answer_tokens >= asked else "stop"}],
            "usage": {"prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.answer_tokens,
                      "total_tokens": turn.prompt_tokens + turn.answer_tokens},
            "deltamem": {"user": user, "tokens_written": turn.tokens_written, "seconds": round(turn.seconds, 4)},
        }

    @app.get("/v1/memory/{user}")
    async def memory_stats(user: str) -> Any:
        try:
            stats = await run_in_threadpool(manager.stats, user)
        except UserError as bad:
            return error(400, str(bad), "invalid_request_error")
        return stats if stats is not None else error(404, f"no memory saved for {user!r}", "not_found")

    @app.delete("/v1/memory/{user}")
    async def forget(user: str) -> Any:
        try:
            return {"user": user, "deleted": await run_in_threadpool(manager.forget, user)}
        except UserError as bad:
            return error(400, str(bad), "invalid_request_error")

    return app


def serve(
    cfg: DictConfig, store: str, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
    window: int | None = None, system: str | None = None, recent_turns: int = 0, max_new_tokens: int = 512,
    max_body_bytes: int = 1 << 20, model_name: str = "deltamem",
) -> None:
    import uvicorn

    settings = {"store": store, "window": window, "system": system, "recent_turns": recent_turns}
    manager = open_manager(cfg, settings)
    app = create_app(manager, token, max_body_bytes, max_new_tokens, model_name)
    print(f"δ-mem sessions on http://{host}:{port} (states in {store}; token {'on' if token else 'off'})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


__all__ = ["BadRequest", "create_app", "parse_chat_request", "serve"]
