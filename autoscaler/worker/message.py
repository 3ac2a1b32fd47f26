"""One message handed to an in-process worker, and the ways it leaves the worker's hands.

A message stays in the worker's processing list in Redis from the moment it is yielded
until it is *settled*: acked (done), nacked (failed: back to the queue, or to the
dead-letter list once delivered ``max_deliveries`` times) or released (not processed,
not its fault: back to the queue, the delivery not counted). Until then a crash of the
process leaves it where the reaper finds it. Settling twice is a programming error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Literal

from autoscaler import keys

How = Literal["ack", "nack", "release"]
Settler = Callable[["Message", How, str], Awaitable[bool]]


class Message:
    """A message taken from the queue: ``body``, ``id``, ``deliveries``; settle it once.

    Also an async context manager: leaving the block without settling nacks the message
    (pushed back and counted as a failed delivery: a message that keeps failing ends in
    the dead-letter list), except on a cancel, which releases it uncounted.
    """

    __slots__ = ("_settle", "_settled", "body", "deliveries", "slot", "stale")

    def __init__(self, settle: Settler, slot: int, body: bytes, deliveries: int) -> None:
        self._settle = settle  # ``held.Held.settle``
        self.slot = slot  # the worker's slot holding it (names its journal entries)
        self.body = body
        self.deliveries = deliveries  # this delivery included: 1 the first time
        self.stale = False  # a drain's push-back or a reaper took it back: settling is moot
        self._settled = False

    @property
    def id(self) -> str:
        """The message's SHA-1 hex: its key in the deliveries and dead-letter hashes (two
        messages with the same body share it)."""
        return keys.message_digest(self.body)

    @property
    def settled(self) -> bool:
        return self._settled

    async def ack(self) -> bool:
        """Done: remove it for good. False when it was no longer held (a drain timed out
        or a reaper returned it): it will be delivered again."""
        return await self._settle(self, "ack", "")

    async def nack(self, reason: str = "nacked") -> bool:
        """Failed: back to the head of the queue, or to the dead-letter list with
        ``reason`` once it was delivered ``max_deliveries`` times. False if not held."""
        return await self._settle(self, "nack", reason)

    async def release(self) -> bool:
        """Not processed, not its fault: back to the head of the queue, this delivery
        not counted. False if not held."""
        return await self._settle(self, "release", "")

    def mark_settled(self, settled: bool = True) -> None:
        """Called by the settler; False again when settling failed (it is still held)."""
        if settled and self._settled:
            raise RuntimeError(f"message {self.id[:12]} was already settled (ack/nack/release)")
        self._settled = settled

    async def __aenter__(self) -> Message:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None
    ) -> None:
        if self._settled:
            return
        if kind is not None and not issubclass(kind, Exception):  # a cancel, an exit
            await self.release()
        elif error is not None:
            await self.nack(f"{type(error).__name__}: {error}"[:200])
        else:
            await self.nack("left its block without an ack")

    def __repr__(self) -> str:
        return f"<Message {self.id[:12]} deliveries={self.deliveries} bytes={len(self.body)}>"
