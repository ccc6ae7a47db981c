"""An Anthropic-compatible test upstream on loopback: the Messages API (JSON or SSE) and models.

    with AnthropicUpstream() as up:
        up.url                       # "http://127.0.0.1:<port>" (the SDK's base_url)
        up.completions               # message requests answered so far (any status)
        up.fail_next(1, 529)         # the next message request gets that status and an error
        up.seen[-1]                  # (headers, parsed body) of the last message request

Endpoints:
  POST /v1/messages   a `message` echoing the last user message as `reply_text(...)`; with
                      `"stream": true` the event stream the SDK reads: message_start,
                      content_block_start, one content_block_delta per word, content_block_stop,
                      message_delta, message_stop
  GET  /v1/models     a one-model list
"""

from __future__ import annotations

import json
from typing import Any

from tests.support.openai_upstream import APIHandler, LoopbackAPI, last_user_text, reply_text

__all__ = ["CLAUDE", "AnthropicUpstream", "reply_text"]

CLAUDE = "claude-test-haiku"


def _message(model: str, text: str | None) -> dict[str, Any]:
    return {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [] if text is None else [{"type": "text", "text": text}],
        "stop_reason": None if text is None else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 0 if text is None else 1},
    }


class _Handler(APIHandler):
    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/v1/models":
            model = {"type": "model", "id": CLAUDE, "display_name": "Test", "created_at": "2026"}
            self._json(200, {"data": [model], "has_more": False, "first_id": CLAUDE})
            return
        self._error(404, "not_found_error")

    def _error(self, status: int, kind: str) -> None:
        self._json(status, {"type": "error", "error": {"type": kind, "message": kind}})

    def do_POST(self) -> None:
        body = self._body()
        if self.path.split("?")[0] != "/v1/messages":
            self._error(404, "not_found_error")
            return
        failure = self.server.owner._record(dict(self.headers.items()), body)
        if failure is not None:
            self._error(failure, "overloaded_error")
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._error(400, "invalid_request_error")
            return
        model = str(body.get("model") or CLAUDE)
        text = reply_text(last_user_text(body["messages"]))
        if body.get("stream"):
            self._stream(model, text)
        else:
            self._json(200, _message(model, text))

    def _stream(self, model: str, text: str) -> None:
        self._start_events()

        def event(kind: str, doc: dict[str, Any]) -> None:
            data = json.dumps({"type": kind, **doc}).encode()
            self._chunk(b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n")

        event("message_start", {"message": _message(model, None)})
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        for i, word in enumerate(text.split(" ")):
            delta = {"type": "text_delta", "text": word if i == 0 else " " + word}
            event("content_block_delta", {"index": 0, "delta": delta})
        event("content_block_stop", {"index": 0})
        event(
            "message_delta",
            {
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 1},
            },
        )
        event("message_stop", {})
        self._end_events()


class AnthropicUpstream(LoopbackAPI):
    """Anthropic's Messages API and models on loopback."""

    handler = _Handler
    name = "anthropic-upstream"
