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
    by the same digest, when and after how many deliveries in ``<queue>:dead:meta``; a
    custom dead-letter list ``K`` keeps them in ``K:reasons`` and ``K:meta``).
quarantine
    ``<queue>:quarantine``: messages a consumer held when it crashed together with others;
    nobody knows which one crashed it, so each is delivered again *alone*: a consumer takes
    from here only with an empty processing list, and takes nothing else while it holds
    one (``<queue>:alone:<consumer-id>`` names the digest of that suspect). A crash while
    holding a suspect alone convicts it (one delivery charged); innocent neighbours are
    never dead-lettered by a crash they did not cause.
stream quarantine
    ``<stream>:quarantine:<group>``: the set of a stream group's entry ids that a crashed
    consumer held; each is claimed again *alone* (``redisqueue.streams``), by the rule of
    the list quarantine above: one held is charged, several held are not.
journal
    ``<queue>:journal:<consumer-id>``: per slot, the token of the last ack-and-take script
    and what it returned, so that a script retried after a lost reply returns what the
    first run did instead of taking another message (``redisqueue.queue``).
protection
    ``queue-autoscaler:protected:<consumer-id>``: present while the consumer's pod asked
    not to be removed (``PUT /protection`` on the sidecar, ``Worker.protect``); written
    with ``SET … PX`` so Redis ends it by itself at its expiry, whatever the clocks say.
    The controller never picks a replica with a protected consumer as a drain victim.
processed
    ``queue-autoscaler:processed:<queue>``: a counter of acked messages (the rate-aware
    policy reads it as the service rate).
stream
    A user's Redis stream read by a consumer group (``consume --stream``): an entry stays
    in the group's pending list from ``XREADGROUP`` to ``XACK``, so a stream consumer has
    no processing list, deliveries or journal; it registers under the stream's name (the
    registry, lease and processed keys above, with the stream as ``<queue>``), and its dead
    letters go to the stream ``dead_letter_key(stream)`` (``redisqueue.streams``).
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum

from autoscaler import NAME

KEY_PREFIX = NAME  # before every key of ours (not the queues: they are the user's)

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


def _slot_of(queue: str) -> str:
    """``{tag}:`` for a queue with a hash tag (so a consumer's keys share the queue's
    Cluster slot), else nothing (the names every release before Cluster support used)."""
    tag = hash_tag(queue)
    return f"{{{tag}}}:" if tag else ""


def consumer_key(consumer_id: str, queue: str = "") -> str:
    """The registry hash of a consumer of ``queue`` (in the queue's slot, see ``hash_tag``)."""
    return f"{KEY_PREFIX}:consumer:{_slot_of(queue)}{consumer_id}"


def consumers_key(queue: str) -> str:
    return f"{KEY_PREFIX}:consumers:{queue}"


def lease_key(consumer_id: str, queue: str = "") -> str:
    """The lease of a consumer of ``queue`` (in the queue's slot, see ``hash_tag``)."""
    return f"{KEY_PREFIX}:lease:{_slot_of(queue)}{consumer_id}"


def protection_key(consumer_id: str, queue: str = "") -> str:
    """Scale-in protection of a consumer of ``queue`` (in the queue's slot, see ``hash_tag``)."""
    return f"{KEY_PREFIX}:protected:{_slot_of(queue)}{consumer_id}"


def processed_key(queue: str) -> str:
    return f"{KEY_PREFIX}:processed:{queue}"


def deliveries_key(queue: str) -> str:
    return f"{queue}:deliveries"


def dead_letter_key(queue: str) -> str:
    return f"{queue}:dead"


def quarantine_key(queue: str) -> str:
    return f"{queue}:quarantine"


def stream_quarantine_key(stream: str, group: str) -> str:
    return f"{stream}:quarantine:{group}"


def alone_key(queue: str, consumer_id: str) -> str:
    return f"{queue}:alone:{consumer_id}"


def journal_key(queue: str, consumer_id: str) -> str:
    return f"{queue}:journal:{consumer_id}"


def dead_reasons_key(queue: str) -> str:
    return dead_reasons_for(dead_letter_key(queue))


def dead_reasons_for(dead_letter: str) -> str:
    """The reasons hash beside any dead-letter list (``consume --dead-letter KEY``)."""
    return f"{dead_letter}:reasons"


def dead_op_for(dead_letter: str, token: str) -> str:
    """Result of one ``dead-letter replay``/``purge`` run, kept a few minutes, so that a
    retry after a lost reply returns it instead of moving or deleting the next entries."""
    return f"{dead_letter}:op:{token}"


def dead_meta_for(dead_letter: str) -> str:
    """Hash beside a dead-letter list: digest → "<unix seconds> <deliveries>" at the time
    the message was dead-lettered (``autoscaler dead-letter list`` shows age and count)."""
    return f"{dead_letter}:meta"


def message_digest(message: bytes) -> str:
    """The key of a message in the deliveries and dead-letter-reason hashes."""
    return hashlib.sha1(message, usedforsecurity=False).hexdigest()


def hash_tag(name: str) -> str | None:
    """The Redis Cluster hash tag of a key name (what its slot is computed from), or None.

    Cluster hashes only the part between the first ``{`` and the next ``}`` when that part
    is not empty. Every key of a queue embeds the queue's name, so a queue named
    ``{orders}`` or ``jobs:{orders}`` keeps its processing lists, registry set, counters and
    dead letters in one slot: one node, and one script may touch them all.
    """
    start = name.find("{")
    if start < 0:
        return None
    end = name.find("}", start + 1)
    return name[start + 1 : end] if end > start + 1 else None


def valid_consumer_id(consumer_id: str) -> bool:
    return bool(CONSUMER_ID_RE.match(consumer_id))
