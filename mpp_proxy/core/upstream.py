"""One keep-alive HTTP/1.1 connection to an upstream: our codec over a bare asyncio protocol."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from mpp_proxy.core.errors import (
    Unforwardable,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from mpp_proxy.core.http11 import (
    LAST_CHUNK,
    ProtocolError,
    RequestError,
    ResponseParser,
    encode_chunk,
    encode_head,
)
from mpp_proxy.core.timers import CoarseTimers, timers_for
from mpp_proxy.core.types import HeaderList

# Body pieces up to this size are copied into the bytes written beside them (one buffer, one
# write); larger ones are handed to the transport as they are, never copied.
_COALESCE_MAX = 16 * 1024

# Reading pauses when this much response data waits unread (bounded memory per connection).
_READ_HIGH_WATER = 1 << 20
# Received pieces that wait together are handed on joined while they add up to at most this
# much (fewer, larger sends for many small reads); a larger piece goes on alone, not copied.
_JOIN_MAX = 64 * 1024


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a service's requests go: parsed once from `base_url`."""

    scheme: str
    host: str
    port: int
    base_path: bytes  # "" or "/prefix" without a trailing slash
    host_header: bytes

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


def parse_origin(base_url: str) -> Origin:
    parts = urlsplit(base_url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"unsupported upstream base_url {base_url!r}")
    default = 443 if scheme == "https" else 80
    port = parts.port or default
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default else f"{shown}:{port}"
    return Origin(
        scheme=scheme,
        host=host,
        port=port,
        base_path=parts.path.rstrip("/").encode("latin-1"),
        host_header=host_header.encode("ascii"),
    )


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Verifying client context: the service's CA bundle, else certifi's roots."""
    if ca_bundle is None:
        import certifi

        ca_bundle = certifi.where()
    ctx = ssl.create_default_context(cafile=ca_bundle)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class _Channel(asyncio.Protocol):
    """Byte transport with flow control both ways and cheap per-call timeouts."""

    __slots__ = (
        "_chunks",
        "_drain_waiter",
        "_read_paused",
        "_size",
        "_waiter",
        "_write_paused",
        "closed",
        "eof",
        "loop",
        "timers",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Cached: asyncio.get_running_loop() costs a getpid() syscall on every call (3.11).
        self.loop = loop
        self.timers: CoarseTimers = timers_for(loop)
        self.transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._read_paused = False
        self._write_paused = False
        self.eof = False
        self.closed = False

    # -- protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, so no isinstance check here.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > _READ_HIGH_WATER and not self._read_paused and self.transport:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake()
        return None  # close our side too: no half-closed upstream connections

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.eof = True
        self._wake()
        w = self._drain_waiter
        if w is not None and not w.done():
            w.set_exception(ConnectionResetError("upstream closed the connection"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        w = self._drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- calls

    @property
    def idle_clean(self) -> bool:
        """No EOF, no unsolicited bytes: safe to send a new request on."""
        t = self.transport
        return not self.eof and not self._chunks and t is not None and not t.is_closing()

    async def read(self, timeout: float) -> bytes:
        """Next received bytes; b"" at EOF. Raises TimeoutError."""
        if not self._chunks:
            if self.eof:
                return b""
            fut = self._waiter = self.loop.create_future()
            timers = self.timers
            timers.arm(fut, timeout, lambda: _expire(fut))
            try:
                await fut
            finally:
                timers.disarm(fut)
                self._waiter = None
            if not self._chunks:
                return b""
        chunks = self._chunks
        if len(chunks) == 1:
            data = chunks[0]
            chunks.clear()
            self._size = 0
        else:
            data = self._take_some(chunks)
        if self._read_paused and self._size <= _READ_HIGH_WATER and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        return data

    def _take_some(self, chunks: list[bytes]) -> bytes:
        """The leading pieces that add up to at most _JOIN_MAX joined (all of them, usually),
        or a larger first piece alone: what waits beyond that is left for the next read."""
        count = total = 0
        for piece in chunks:
            if count and total + len(piece) > _JOIN_MAX:
                break
            count += 1
            total += len(piece)
        data = chunks[0] if count == 1 else b"".join(chunks[:count])
        del chunks[:count]
        self._size -= total
        return data

    async def drain(self, timeout: float) -> None:
        if self.closed:
            raise ConnectionResetError("upstream closed the connection")
        if not self._write_paused:
            return
        loop = self.loop
        fut = self._drain_waiter = loop.create_future()
        handle = loop.call_later(timeout, _expire, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._drain_waiter = None


class UpstreamConnection:
    """One HTTP/1.1 connection. Not safe for concurrent use: the pool hands it to one request."""

    __slots__ = (
        "_busy",
        "_ch",
        "_chunked",
        "_parser",
        "_received",
        "_sent_all",
        "idle_since",
        "loop",
        "requests",
        "timers",
        "written",
    )

    def __init__(self, channel: _Channel) -> None:
        self._ch = channel
        self.loop = channel.loop  # the loop the connection lives on (no getpid to find it)
        self.timers = channel.timers
        self._parser = ResponseParser()
        self._busy = False
        self._chunked = False
        self._sent_all = False
        self._received = False
        self.idle_since = 0.0
        self.requests = 0
        self.written = False  # whether any byte of the current request reached the socket

    @classmethod
    async def open(
        cls, origin: Origin, ssl_context: ssl.SSLContext | None, timeout: float
    ) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, channel = await loop.create_connection(
                    lambda: _Channel(loop),
                    origin.host,
                    origin.port,
                    ssl=ssl_context,
                    server_hostname=origin.host if ssl_context is not None else None,
                )
        except TimeoutError:
            raise UpstreamTimeout("connect") from None
        except ssl.SSLCertVerificationError as exc:
            raise UpstreamUnreachable(
                f"TLS verification failed ({exc.verify_message})", kind="tls"
            ) from None
        except socket.gaierror:
            raise UpstreamUnreachable("DNS lookup failed") from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise UpstreamUnreachable(reason.lower()) from None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # not a TCP socket
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(channel)

    # -- state

    @property
    def usable(self) -> bool:
        """Idle and still open on both ends (as far as we can tell without I/O)."""
        return not self._busy and self._ch.idle_clean

    @property
    def answered_early(self) -> bool:
        """Response bytes arrived while the request was still being sent."""
        return bool(self._ch._chunks)

    @property
    def received_any(self) -> bool:
        """Whether the upstream sent any byte during the current exchange."""
        return self._received

    def finish(self) -> bool:
        """After an exchange: True when it was complete and clean, so the connection is reusable."""
        p = self._parser
        ok = self._busy and self._sent_all and p.done and p.keep_alive and self._ch.idle_clean
        self._busy = False
        return ok

    def close(self) -> None:
        t = self._ch.transport
        if t is not None and not t.is_closing():
            t.close()

    def abort(self) -> None:
        """Drop the connection without a clean close (cancelled or half-read exchange)."""
        t = self._ch.transport
        if t is not None:
            t.abort()

    # -- request

    async def send_request(
        self,
        method: bytes,
        target: bytes,
        headers: HeaderList,
        body: bytes,
        *,
        chunked: bool,
        end: bool,
        timeout: float,
    ) -> None:
        """Write the head and the first body bytes; `end` when that is all.

        A small body goes out in one buffer with the head (one write); a large one is handed
        over beside it, not copied into it (the bytes are held once, by the transport).
        """
        try:
            head = encode_head(method, target, headers)
        except RequestError:
            raise Unforwardable() from None
        self.requests += 1
        self._busy = True
        self._received = False
        self._chunked = chunked
        self._sent_all = False
        self.written = False
        self._parser.start(method == b"HEAD")
        if end:
            self._sent_all = True
        tail = LAST_CHUNK if end and chunked else b""
        if len(body) <= _COALESCE_MAX:
            if body:
                head += encode_chunk(body) if chunked else body
            parts = [head + tail if tail else head]
        elif chunked:
            parts = [head + b"%x\r\n" % len(body), body, b"\r\n" + tail]
        else:
            parts = [head, body, tail] if tail else [head, body]
        if self._put(parts):
            await self._drain(timeout)

    async def send_body(self, chunk: bytes, timeout: float) -> None:
        if not chunk:
            return
        if not self._chunked:
            parts = [chunk]
        elif len(chunk) <= _COALESCE_MAX:
            parts = [encode_chunk(chunk)]
        else:
            parts = [b"%x\r\n" % len(chunk), chunk, b"\r\n"]
        if self._put(parts):
            await self._drain(timeout)

    async def end_body(self, timeout: float) -> None:
        self._sent_all = True
        if self._chunked and self._put([LAST_CHUNK]):
            await self._drain(timeout)

    def _put(self, parts: list[bytes]) -> bool:
        """Hand bytes to the transport; True when the caller must wait for them to drain."""
        ch = self._ch
        t = ch.transport
        if ch.closed or t is None or t.is_closing():
            raise UpstreamProtocolError("upstream closed the connection")
        if len(parts) == 1:
            t.write(parts[0])
        else:
            t.writelines(parts)
        self.written = True
        # Most writes go straight to the socket: no coroutine to wait on (drain() would return).
        return ch.closed or ch._write_paused

    async def _drain(self, timeout: float) -> None:
        try:
            await self._ch.drain(timeout)
        except TimeoutError:
            raise UpstreamTimeout("write") from None
        except ConnectionError:
            raise UpstreamProtocolError("upstream closed the connection") from None

    # -- response

    async def _read(self, timeout: float) -> bytes:
        try:
            data = await self._ch.read(timeout)
        except TimeoutError:
            raise UpstreamTimeout("read") from None
        if data:
            self._received = True
        return data

    async def read_head(self, timeout: float) -> tuple[int, HeaderList]:
        """Wait for the final response head (1xx are skipped)."""
        p = self._parser
        ch = self._ch
        while True:
            try:
                data = await ch.read(timeout)
            except TimeoutError:
                raise UpstreamTimeout("read") from None
            if not data:
                raise UpstreamProtocolError("connection closed before the response head")
            self._received = True
            try:
                head = p.head(data)
            except ProtocolError as exc:
                raise UpstreamProtocolError(str(exc)) from None
            if head is not None:
                return head.status, head.headers

    def read_body_now(self) -> tuple[bytes, bool] | None:
        """What read_body() would return without waiting for the network, else None."""
        p = self._parser
        if p.done:
            return b"", True
        if p.buffered:
            try:
                chunk, done = p.body(b"")
            except ProtocolError as exc:
                raise UpstreamProtocolError(str(exc)) from None
            if chunk or done:
                return chunk, done
        return None

    async def read_body(self, timeout: float) -> tuple[bytes, bool]:
        """Next piece of the body and whether the body is complete after it.

        Whatever was already received is returned at once; the call waits for the network only
        when nothing is buffered, so event streams are flushed as each event arrives.
        """
        got = self.read_body_now()
        if got is not None:
            return got
        p = self._parser
        try:
            while True:
                data = await self._read(timeout)
                chunk, done = p.body(data) if data else p.eof()
                if chunk or done:
                    return chunk, done
        except ProtocolError as exc:
            raise UpstreamProtocolError(str(exc)) from None
