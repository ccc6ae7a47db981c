"""Paid response bodies that finish reading when closed early, so the gateway sees them delivered.

An SDK that stops at the last event it needs (the sync OpenAI client closes a stream on
`data: [DONE]`) closes the connection before the chunked body's last bytes arrive. The gateway
then cannot tell that the whole answer reached the client and keeps the payment as a credit.
Reading what is left, up to DRAIN_LIMIT, before closing avoids that, and keeps the connection
reusable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from functools import cache
from typing import Any

__all__ = ["DRAIN_LIMIT", "draining", "draining_async"]

DRAIN_LIMIT = 64 * 1024


@cache
def _sync_class(base: type) -> type:
    class DrainingStream(base):  # type: ignore[misc]
        def __init__(self, inner: Any) -> None:
            self._inner = inner
            self._chunks: Iterator[bytes] | None = None

        def __iter__(self) -> Iterator[bytes]:
            self._chunks = iter(self._inner)
            # Not `yield from`: closing this generator (a reader that stops) must leave the
            # inner one open, for close() to read what is left.
            for chunk in self._chunks:  # noqa: UP028
                yield chunk

        def close(self) -> None:
            chunks, self._chunks = self._chunks, None
            left = DRAIN_LIMIT
            try:
                while chunks is not None and left > 0:
                    chunk = next(chunks, None)
                    if chunk is None:
                        break
                    left -= len(chunk)
            finally:
                self._inner.close()

    return DrainingStream


@cache
def _async_class(base: type) -> type:
    class DrainingStream(base):  # type: ignore[misc]
        def __init__(self, inner: Any) -> None:
            self._inner = inner
            self._chunks: AsyncIterator[bytes] | None = None

        async def __aiter__(self) -> AsyncIterator[bytes]:
            self._chunks = aiter(self._inner)
            async for chunk in self._chunks:
                yield chunk

        async def aclose(self) -> None:
            chunks, self._chunks = self._chunks, None
            left = DRAIN_LIMIT
            try:
                while chunks is not None and left > 0:
                    chunk = await anext(chunks, None)
                    if chunk is None:
                        break
                    left -= len(chunk)
            finally:
                await self._inner.aclose()

    return DrainingStream


def draining(base: type, inner: Any) -> Any:
    """`inner` (a sync byte stream) as a `base` subclass that drains on close."""
    return _sync_class(base)(inner)


def draining_async(base: type, inner: Any) -> Any:
    """`inner` (an async byte stream) as a `base` subclass that drains on aclose."""
    return _async_class(base)(inner)
