"""An OpenAI-compatible test upstream on loopback: chat completions (JSON or SSE) and models.

    with OpenAIUpstream() as up:
        up.url                       # "http://127.0.0.1:<port>" (the SDK's base is url + "/v1")
        up.completions               # completion requests answered so far (any status)
        up.fail_next(1, 500)         # the next completion request gets a 500 error body
        up.seen[-1]                  # (headers, parsed body) of the last completion request

Endpoints:
  POST /v1/chat/completions   `chat.completion` JSON echoing the last user message; with
                              `"stream": true` a chunked `text/event-stream` of
                              `chat.completion.chunk` events, then `data: [DONE]`
  GET  /v1/models             a one-model list
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["MODEL", "LoopbackAPI", "OpenAIUpstream", "reply_text"]

MODEL = "gpt-test-mini"


def reply_text(prompt: str) -> str:
    """What the upstream answers to a user message (tests compare against it)."""
    return f"echo: {prompt}"


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p + (" " if i < len(parts) - 1 else "") for i, p in enumerate(parts)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: LoopbackAPI, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.owner = owner


class APIHandler(BaseHTTPRequestHandler):
    """JSON answers, chunked server-sent events and the request body, for loopback APIs."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> Any:
        """The request's JSON body, None when it is not JSON."""
        raw = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return None

    def _start_events(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

    def _end_events(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def last_user_text(messages: Any) -> str:
    """The text of the last user message (a string or Anthropic-style content blocks)."""
    prompt = ""
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content", "")
            if isinstance(content, list):
                content = "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
            prompt = str(content)
    return prompt


class _Handler(APIHandler):
    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/v1/models":
            doc = {
                "object": "list",
                "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "tests"}],
            }
            self._json(200, doc)
            return
        self._json(404, {"error": {"message": "no such endpoint", "type": "invalid_request"}})

    def do_POST(self) -> None:
        body = self._body()
        if self.path.split("?")[0] != "/v1/chat/completions":
            self._json(404, {"error": {"message": "no such endpoint", "type": "invalid_request"}})
            return
        failure = self.server.owner._record(dict(self.headers.items()), body)
        if failure is not None:
            self._json(failure, {"error": {"message": "upstream failure", "type": "server_error"}})
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._json(400, {"error": {"message": "messages required", "type": "invalid_request"}})
            return
        text = reply_text(last_user_text(body["messages"]))
        model = str(body.get("model") or MODEL)
        created = int(time.time())
        if body.get("stream"):
            self._stream(model, created, text)
            return
        self._json(
            200,
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )

    def _stream(self, model: str, created: int, text: str) -> None:
        self._start_events()

        def event(delta: dict[str, Any], finish: str | None) -> None:
            doc = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            self._chunk(b"data: " + json.dumps(doc).encode() + b"\n\n")

        event({"role": "assistant", "content": ""}, None)
        for word in _words(text):
            event({"content": word}, None)
            time.sleep(0.01)
        event({}, "stop")
        self._chunk(b"data: [DONE]\n\n")
        self._end_events()


class LoopbackAPI:
    """A loopback API server on a daemon thread; counters are safe to read from the test thread."""

    handler: type[BaseHTTPRequestHandler] = _Handler
    name = "loopback-api"

    def __init__(self) -> None:
        self._server = _Server(self, self.handler)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failures: list[int] = []
        self.completions = 0
        self.seen: list[tuple[dict[str, str], Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """The next `count` completion requests are answered with `status` and an error body."""
        with self._lock:
            self._failures.extend([status] * count)

    def _record(self, headers: dict[str, str], body: Any) -> int | None:
        with self._lock:
            self.completions += 1
            self.seen.append(({k.lower(): v for k, v in headers.items()}, body))
            return self._failures.pop(0) if self._failures else None

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=self.name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class OpenAIUpstream(LoopbackAPI):
    """OpenAI's chat completions and models on loopback."""

    handler = _Handler
    name = "openai-upstream"
