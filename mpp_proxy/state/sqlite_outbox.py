"""The SQLite store's webhook outbox and counts: one statement per call, on the store's thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

from mpp_proxy.state.base import OutboxEntry, PaymentStatus, Totals
from mpp_proxy.state.codec import sum_delivered

T = TypeVar("T")
_OUTBOX_COLUMNS: Final = "id, target, body, attempts, due_at, created_at"


class SQLiteOutbox:
    """Mixed into SQLiteStore, whose `_call` runs a function on its connection's thread."""

    __slots__ = ()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    def _rowcount(self, sql: str, params: tuple[Any, ...]) -> int:
        raise NotImplementedError

    def _select_rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def totals(self) -> list[Totals]:
        # Summed in Python: SQLite's SUM would overflow 64 bits on 18-decimal token amounts.
        rows = await self._call(
            self._select_rows,
            "SELECT service, route, method, currency, amount FROM payments"
            " WHERE status = 'delivered'",
            (),
        )
        return sum_delivered(rows)

    async def count_payments(self, status: PaymentStatus) -> int:
        rows = await self._call(
            self._select_rows,
            "SELECT count(*) FROM payments WHERE status = ?",
            (PaymentStatus(status).value,),
        )
        return int(rows[0][0])

    # -------------------------------------------------------------------- outbox

    async def outbox_add(self, entry: OutboxEntry) -> bool:
        return (
            await self._call(
                self._rowcount,
                f"INSERT INTO outbox ({_OUTBOX_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                (
                    entry.id,
                    entry.target,
                    entry.body,
                    entry.attempts,
                    float(entry.due_at),
                    float(entry.created_at),
                ),
            )
            > 0
        )

    async def outbox_claim(self, now: float, until: float, limit: int) -> list[OutboxEntry]:
        # One statement: the rows a concurrent worker claims are the ones this one does not.
        rows = await self._call(
            self._select_rows,
            "UPDATE outbox SET due_at = ? WHERE id IN"
            " (SELECT id FROM outbox WHERE due_at <= ? ORDER BY due_at, id LIMIT ?)"
            f" RETURNING {_OUTBOX_COLUMNS}",
            (float(until), float(now), max(limit, 0)),
        )
        entries = [OutboxEntry(*r) for r in rows]
        return sorted(entries, key=lambda e: (e.created_at, e.id))

    async def outbox_retry(self, entry_id: str, due_at: float, attempts: int) -> None:
        await self._call(
            self._rowcount,
            "UPDATE outbox SET due_at = ?, attempts = ? WHERE id = ?",
            (float(due_at), attempts, entry_id),
        )

    async def outbox_done(self, entry_id: str) -> None:
        await self._call(self._rowcount, "DELETE FROM outbox WHERE id = ?", (entry_id,))

    async def outbox_size(self) -> int:
        rows = await self._call(self._select_rows, "SELECT count(*) FROM outbox", ())
        return int(rows[0][0])
