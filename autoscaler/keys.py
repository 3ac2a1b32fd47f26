"""Redis key schema and drain-protocol states, shared by the controller and the sidecar.

Every Redis key this project reads or writes is named here, and nowhere else (arq's
``constants.py``). Terms:

queue
    The user's Redis list. Producers ``LPUSH``; consumers take from the right
    (``BLMOVE queue processing RIGHT LEFT``), so the right end is the *head* (taken next).
processing list
    ``<queue>:processing:<consumer-id>``: the messages one consumer holds. A message
    lives there from ``BLMOVE`` until the consumer acks it (``LREM``), pushes it back,
    or the reaper returns it to the queue after the consumer's lease expired.
registry
    One hash per consumer, ``queue-autoscaler:consumer:<id>``, with the fields in
    ``ConsumerField``; the set ``queue-autoscaler:consumers:<queue>`` lists the ids
    registered for a queue. A consumer is alive while its lease key
    ``queue-autoscaler:lease:<id>`` exists (``SET … PX``, renewed every heartbeat).
command
    The controller asks a consumer to drain by setting the hash field ``command`` to
    ``drain``, and cancels a drain with ``run``. The consumer answers with its ``state``.
deliveries
    ``<queue>:deliveries``: hash from a message's SHA-1 hex to how many times it has been
    handed to a processor; a message delivered ``max-deliveries`` times goes to the
    dead-letter list ``<queue>:dead`` (reasons in the hash ``<queue>:dead:reasons``, keyed
    by the same digest; a custom dead-letter list ``K`` keeps its reasons in ``K:reasons``).
processed
    ``queue-autoscaler:processed:<queue>``: a counter of acked messages (the rate-aware
    policy reads it as the service rate).
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum

PREFIX = "queue-autoscaler"

# A consumer id becomes part of key names and of a pod's identity: keep it printable.
CONSUMER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


class ConsumerState(StrEnum):
    """What a consumer reports in its registry hash."""

    RUNNING = "running"
    DRAINING = "draining"
    DRAINED = "drained"


class Command(StrEnum):
    """What the controller asks of a consumer."""

    RUN = "run"
    DRAIN = "drain"


class ConsumerField(StrEnum):
    """Fields of the registry hash of one consumer."""

    ID = "id"
    POD = "pod"
    QUEUE = "queue"
    STATE = "state"
    COMMAND = "command"
    IN_FLIGHT = "in_flight"
    STARTED_AT = "started_at"
    HEARTBEAT_AT = "heartbeat_at"
    # The consumer's dead-letter settings, so a reaper returning its processing list after
    # a crash applies the same max-deliveries rule and dead-letter list as it did.
    DEAD_LETTER = "dead_letter"
    MAX_DELIVERIES = "max_deliveries"


def processing_key(queue: str, consumer_id: str) -> str:
    return f"{queue}:processing:{consumer_id}"


def processing_prefix(queue: str) -> str:
    """Every processing list of a queue starts with this."""
    return f"{queue}:processing:"


def consumer_key(consumer_id: str) -> str:
    return f"{PREFIX}:consumer:{consumer_id}"


def consumers_key(queue: str) -> str:
    return f"{PREFIX}:consumers:{queue}"


def lease_key(consumer_id: str) -> str:
    return f"{PREFIX}:lease:{consumer_id}"


def processed_key(queue: str) -> str:
    return f"{PREFIX}:processed:{queue}"


def deliveries_key(queue: str) -> str:
    return f"{queue}:deliveries"


def dead_letter_key(queue: str) -> str:
    return f"{queue}:dead"


def dead_reasons_key(queue: str) -> str:
    return dead_reasons_for(dead_letter_key(queue))


def dead_reasons_for(dead_letter: str) -> str:
    """The reasons hash beside any dead-letter list (``consume --dead-letter KEY``)."""
    return f"{dead_letter}:reasons"


def message_digest(message: bytes) -> str:
    """The key of a message in the deliveries and dead-letter-reason hashes."""
    return hashlib.sha1(message, usedforsecurity=False).hexdigest()


def valid_consumer_id(consumer_id: str) -> bool:
    return bool(CONSUMER_ID_RE.match(consumer_id))
