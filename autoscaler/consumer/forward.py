"""POST one message to the local processor and classify the answer.

The classification is the contract of the sidecar: 2xx → ack; any other 4xx than 408 and
429 → the message itself is bad, dead-letter it now; connection refused, reset before a
response, a connect timeout, 502 and 503 → the processor is not there (*unavailable*:
not a delivery, see ``breaker``); other 5xx, 408, 429 and a timeout after the request
was sent → an answered failure, a counted delivery, deliver again later. No ``aiohttp``
exception leaves this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import aiohttp

from autoscaler.aio import cancel_guarded
from autoscaler.errors import truncate

# Statuses in 4xx that mean "try later", not "this message is bad".
RETRYABLE_4XX = frozenset({408, 429})
# Statuses that mean "nobody is there to judge the message": a proxy in front of a
# processor that is down (502) or the processor saying it is not up (503). A 504 is a
# proxy's timeout after the request was sent: answered, like our own timeout.
UNAVAILABLE_5XX = frozenset({502, 503})
# Seconds to open a connection to the local processor before it counts as unavailable.
CONNECT_TIMEOUT_S = 5.0


class Answer(Enum):
    OK = "ok"
    RETRY = "retry"  # an answered failure: a counted delivery
    REJECT = "reject"
    UNAVAILABLE = "unavailable"  # the processor is not there: not a delivery


@dataclass(frozen=True)
class Result:
    answer: Answer
    reason: str = ""  # why, for logs and the dead-letter reasons hash (truncated)


OK = Result(Answer.OK)  # one object for every 2xx: a frozen dataclass built per message less


def classify(status: int, body: str) -> Result:
    """Map an HTTP status (and the start of its body) to what happens to the message."""
    if 200 <= status < 300:
        return OK
    reason = f"HTTP {status} from processor: {truncate(body)}".rstrip(": ")
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        return Result(Answer.REJECT, reason)
    if status in UNAVAILABLE_5XX:
        return Result(Answer.UNAVAILABLE, reason)
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
        connect_s = min(timeout_s, CONNECT_TIMEOUT_S)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_s)

    @cancel_guarded  # a cancel must never come back as a retryable timeout
    async def post(
        self, message: bytes, delivery: int, extra_headers: Mapping[str, str] | None = None
    ) -> Result:
        """``extra_headers``: per message (a stream entry's id, for the processor to dedupe)."""
        headers = {**self._headers, **(extra_headers or {}), "X-Delivery-Count": str(delivery)}
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
                    return OK
                return classify(response.status, body[:1024].decode("utf-8", "replace"))
        except aiohttp.ConnectionTimeoutError:  # before TimeoutError: it is one
            return Result(Answer.UNAVAILABLE, "processor unreachable: connect timeout")
        except TimeoutError:
            return Result(Answer.RETRY, f"processor did not answer within {self._timeout.total}s")
        except (aiohttp.ClientConnectionError, aiohttp.ClientOSError) as e:
            # Refused, reset or closed before a response: nobody judged the message.
            return Result(Answer.UNAVAILABLE, f"processor unreachable: {_describe(e)}")
        except aiohttp.ClientError as e:  # a response began (bad payload, bad headers)
            return Result(Answer.RETRY, f"processor answer unreadable: {_describe(e)}")


def _describe(error: BaseException) -> str:
    return truncate(str(error) or type(error).__name__)
