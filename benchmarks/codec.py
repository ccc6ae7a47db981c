"""Response-parser micro-benchmark (not a test): µs per parsed response, optionally A/B.

    .venv/bin/python -m benchmarks.codec [--against REV] [--rounds 30] [--number 5000]

Parses typical upstream responses (a JSON answer framed by content-length with the headers an
API gateway sends, a chunked stream of ten events, an answer to HEAD) the way the upstream
connection does: head, then body until complete. With --against, the `core/http11.py` of that git
revision is loaded beside the working tree's and the two are timed in interleaved rounds (the
machine is shared and noisy); the figures are the medians and minimums of the rounds, in CPU µs.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CODEC = "mpp_proxy/core/http11.py"

_HEADERS = (
    b"Date: Tue, 03 Nov 2026 10:00:00 GMT\r\n"
    b"Content-Type: application/json\r\n"
    b"Connection: keep-alive\r\n"
    b"access-control-expose-headers: X-Request-ID\r\n"
    b"openai-processing-ms: 412\r\n"
    b"x-request-id: req_8a7c21f0d0e34b5c9a1e2f3a4b5c6d7e\r\n"
    b"strict-transport-security: max-age=31536000; includeSubDomains; preload\r\n"
    b"cf-cache-status: DYNAMIC\r\n"
    b"Server: cloudflare\r\n"
    b"cf-ray: 8d1f2e3a4b5c6d7e-AMS\r\n"
)
_JSON = b'{"id":"cmpl-1","object":"text_completion","choices":[{"text":"' + b"x" * 400 + b'"}]}'
_EVENTS = b"".join(b"%x\r\n%b\r\n" % (len(e), e) for e in [b'data: {"delta":"tok"}\n\n'] * 10)
RESPONSES: dict[str, tuple[bytes, bool]] = {
    "content-length": (
        b"HTTP/1.1 200 OK\r\n" + _HEADERS + b"Content-Length: %d\r\n\r\n" % len(_JSON) + _JSON,
        False,
    ),
    "chunked": (
        b"HTTP/1.1 200 OK\r\n"
        + _HEADERS
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + _EVENTS
        + b"0\r\n\r\n",
        False,
    ),
    "head": (b"HTTP/1.1 200 OK\r\n" + _HEADERS + b"Content-Length: 12345\r\n\r\n", True),
}


def load(source: str, name: str) -> ModuleType:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def parse_all(codec: Any, raw: bytes, head_only: bool, number: int) -> float:
    """CPU seconds for `number` parses of `raw`, arriving in one read, on one reused parser.

    CPU time of this process, not wall time: what other processes take of the cores is left out.
    """
    p = codec.ResponseParser()
    start = time.process_time()
    for _ in range(number):
        p.start(head_only)
        p.head(raw)
        done = p.done
        while not done:
            _, done = p.body(b"")
    return time.process_time() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--against", help="git revision whose codec is timed beside the working tree's")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--number", type=int, default=5000)
    args = ap.parse_args()
    codecs = {"working tree": load((ROOT / CODEC).read_text(), "codec_work")}
    if args.against:
        old = subprocess.run(
            ["git", "show", f"{args.against}:{CODEC}"], cwd=ROOT, check=True, capture_output=True
        ).stdout.decode()
        codecs = {args.against: load(old, "codec_against"), **codecs}
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for shape, (raw, head_only) in RESPONSES.items():
            for label, codec in codecs.items():
                t = parse_all(codec, raw, head_only, args.number)
                times.setdefault((shape, label), []).append(t / args.number * 1e6)
    for (shape, label), us in times.items():
        print(f"{shape:15s} {label:14s} median {statistics.median(us):6.2f} µs  min {min(us):6.2f}")


if __name__ == "__main__":
    main()
