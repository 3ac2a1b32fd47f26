"""POST one message to the local processor and classify the answer.

The classification is the contract of the sidecar: 2xx → ack; any other 4xx than 408 and
429 → the message itself is bad, dead-letter it now; 5xx, 408, 429, a timeout or a
connection failure → the processor is busy or down, deliver again later. No
``aiohttp`` exception leaves this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import aiohttp

from autoscaler.aio import cancel_guarded
from autoscaler.errors import truncate

# Statuses in 4xx that mean "try later", not "this message is bad".
RETRYABLE_4XX = frozenset({408, 429})


class Answer(Enum):
    OK = "ok"
    RETRY = "retry"
    REJECT = "reject"


@dataclass(frozen=True)
class Result:
    answer: Answer
    reason: str = ""  # why, for logs and the dead-letter reasons hash (truncated)


def classify(status: int, body: str) -> Result:
    """Map an HTTP status (and the start of its body) to what happens to the message."""
    if 200 <= status < 300:
        return Result(Answer.OK)
    reason = f"HTTP {status} from processor: {truncate(body)}".rstrip(": ")
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        return Result(Answer.REJECT, reason)
    return Result(Answer.RETRY, reason)  # 5xx, 408, 429, and odd 1xx/3xx: maybe a blip


class Forwarder:
    """POSTs messages to one URL with the sidecar's headers, over an injected session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        queue: str,
        consumer_id: str,
        timeout_s: float,
    ) -> None:
        self._session = session
        self._url = url
        self._headers = {
            "X-Queue": queue,
            "X-Consumer-Id": consumer_id,
            "Content-Type": "application/octet-stream",
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    @cancel_guarded  # a cancel must never come back as a retryable timeout
    async def post(self, message: bytes, delivery: int) -> Result:
        headers = {**self._headers, "X-Delivery-Count": str(delivery)}
        try:
            async with self._session.post(
                self._url,
                data=message,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                # Read the body even on success, so the connection is reused (keep-alive).
                body = await response.read()
                if 200 <= response.status < 300:
                    return Result(Answer.OK)
                return classify(response.status, body[:1024].decode("utf-8", "replace"))
        except TimeoutError:
            return Result(Answer.RETRY, f"processor did not answer within {self._timeout.total}s")
        except aiohttp.ClientError as e:
            return Result(
                Answer.RETRY, f"processor unreachable: {truncate(str(e) or type(e).__name__)}"
            )
