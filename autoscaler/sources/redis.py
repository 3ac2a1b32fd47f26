"""The Redis source: every queue of one Redis server in one round trip per cycle.

Per queue, with key names from ``autoscaler.keys``: *backlog* ``LLEN <queue>`` plus
``LLEN quarantine_key(queue)`` (quarantined messages wait for a consumer too);
*in-flight*, the sum of ``LLEN <queue>:processing:<id>`` over the consumer ids in the set
``consumers_key(queue)``; *processed*, ``GET processed_key(queue)`` (missing = 0);
*consumers*, how many of those ids are alive: their ``lease_key(id)`` exists (a pod
still starting, or one whose lease expired, serves nothing).

In-flight and consumers need a server-side lookup (only Redis knows the ids), so a read
is one Lua script (``EVALSHA``; ``EVAL`` on ``NOSCRIPT``) that takes the queue names and
returns a flat array of integers; one call per ``CHUNK_QUEUES`` queues, all pipelined in
one round trip, so Redis serves other clients between them. ``bench/bench_redis_read.py``
measured it at 10,000 queues (two consumers each): one round trip, ~9 ms of client CPU on
a quiet cycle and ~112 ms of the server's in calls of ~12 ms, against two round trips and
~1,300 ms for a pipeline (redis-py parses every reply) and ~4,000 ms for a naive loop.
Where scripting is refused (ACL ``NOPERM``, a renamed ``EVAL``) the source remembers it
and uses the pipeline. Every value is validated; a bad key fails only the triggers that
read it. Replies go through a memo (``sources.redisreply``): queues whose numbers did not
change keep last cycle's results and readings. The client itself (credentials, timeouts,
retry) is ``autoscaler.redisconn``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.cluster import RedisCluster

from autoscaler import keys
from autoscaler.aio import guarded
from autoscaler.endpoint import RedisEndpoint
from autoscaler.errors import SourceError, TransientSourceError, truncate
from autoscaler.policy.spec import RedisStreamTrigger, RedisTrigger
from autoscaler.policy.state import Reading
from autoscaler.redisconn import (
    RedisCredentials,
    Script,
    SecretClient,
    SecretLookup,
    credential_hint,
    is_auth_error,
    make_client,
)
from autoscaler.remote import Backoff, redact_url
from autoscaler.sources import redisstream
from autoscaler.sources.redisreply import QueueResult as QueueResult
from autoscaler.sources.redisreply import QueueStats as QueueStats
from autoscaler.sources.redisreply import ReadingMemo, _queue_result
from autoscaler.sources.redisreply import parse_lua_reply as parse_lua_reply
from autoscaler.sources.redisreply import readings_for as readings_for

logger = logging.getLogger(__name__)


def _affixes(key_of: Callable[[str], str]) -> tuple[str, str]:
    """(prefix, suffix) with ``key_of(q) == prefix + q + suffix``, for Lua to build keys.

    Checked at import, so a change of shape in ``keys`` fails loudly, not silently.
    """
    prefix, sep, suffix = key_of("\x00").partition("\x00")
    if not sep or key_of("q.1") != f"{prefix}q.1{suffix}":
        raise RuntimeError(f"key schema is not prefix+queue+suffix: {key_of('q')!r}")
    return prefix, suffix


_LEASE = _affixes(keys.lease_key)  # around a consumer id, not a queue name

# ARGV[1..10] of the script; then the queue names (see ``_script_args``).
_SCHEMA_ARGS = (
    *_affixes(keys.consumers_key),
    *_affixes(keys.processed_key),
    *_affixes(lambda q: keys.processing_key(q, "")),
    *_LEASE,
    *_affixes(keys.quarantine_key),
)

# pcall, not call: an error on one key (WRONGTYPE, NOPERM) comes back in its slot and
# fails only the triggers of that queue. A missing counter is 0 (a nil would cut the
# array short); a counter that is not plain digits is returned raw, for the client to
# name. Exact up to 15 digits (Lua numbers are doubles); longer ones go raw too.
# Four integers per queue: backlog, in-flight, processed, live consumers. The backlog is
# the queue plus its quarantine (``keys.quarantine_key``): quarantined messages wait for a
# consumer too, and a reading without them would let a workload scale to zero over them.
LUA_SCRIPT = """
local cp, cs, pp, ps, lp, ls = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local ep, es, qp, qs = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local names = {}
for q in string.gmatch(ARGV[11], '[^\\n]+') do names[#names + 1] = q end
for i = 12, #ARGV do names[#names + 1] = ARGV[i] end
-- a consumer's lease key carries its queue's {hash tag}, if any (keys.lease_key)
local function slot(q)
  local s = string.find(q, '{', 1, true)
  if not s then return '' end
  local e = string.find(q, '}', s + 1, true)
  if not e or e == s + 1 then return '' end
  return string.sub(q, s, e) .. ':'
end
local out, n = {}, 0
for _, q in ipairs(names) do
  local busy, live, tg = 0, 0, slot(q)
  local ids = redis.pcall('SMEMBERS', cp .. q .. cs)
  if ids.err then busy, live = ids, ids else
    for _, id in ipairs(ids) do
      if type(busy) == 'number' then
        local len = redis.pcall('LLEN', lp .. q .. ls .. id)
        if type(len) == 'number' then busy = busy + len else busy = len end
      end
      if type(live) == 'number' then
        local on = redis.pcall('EXISTS', ep .. tg .. id .. es)
        if type(on) == 'number' then live = live + on else live = on end
      end
    end
  end
  local done = redis.pcall('GET', pp .. q .. ps) or 0
  if type(done) == 'string' and #done < 16 and string.find(done, '^%d+$') then
    done = tonumber(done)
  end
  local waiting = redis.pcall('LLEN', q)
  if type(waiting) == 'number' then
    local held = redis.pcall('LLEN', qp .. q .. qs)
    if type(held) == 'number' then waiting = waiting + held else waiting = held end
  end
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = waiting, busy, done, live
  n = n + 4
end
return out
"""
READ_SCRIPT = Script(LUA_SCRIPT)

# Queues per script call. A script blocks the server while it runs: ~23 ms per 1,000
# queues with consumers (``bench_redis_read.py``), so 10,000 queues in one call would stall
# every other client (the sidecars' takes and acks) for ~230 ms each cycle. The calls of
# one read still go in one pipeline: one round trip; other clients run between them.
CHUNK_QUEUES = 1000


def _script_args(queues: Sequence[str]) -> tuple[list[str], list[str]]:
    """(reply order, script arguments) for ``queues``.

    Names go joined by newlines in one argument: redis-py packs 10,000 separate
    arguments in ~14 ms of client CPU, one joined string in well under 1 ms. A name that
    cannot be joined (empty, or holding a newline) goes as its own argument, after.
    """
    plain = [q for q in queues if q and "\n" not in q]
    odd = [q for q in queues if not q or "\n" in q]
    return plain + odd, [*_SCHEMA_ARGS, "\n".join(plain), *odd]


def _chunked_args(queues: Sequence[str], size: int) -> tuple[list[str], list[list[str]]]:
    """(reply order, one argument list per script call of at most ``size`` queues)."""
    order: list[str] = []
    calls: list[list[str]] = []
    for start in range(0, len(queues), size):
        part, args = _script_args(queues[start : start + size])
        order += part
        calls.append(args)
    return order, calls


def _joined(replies: list[Any]) -> list[Any]:
    """The pipelined calls' replies end to end; the first error raised."""
    joined: list[Any] = []
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
        if not isinstance(reply, list):
            raise TransientSourceError(f"malformed script reply: {type(reply).__name__}")
        joined += reply
    return joined


def _waiting(length: object, held: object) -> object:
    """The queue's length plus its quarantine's, or the first value that is not a count
    (for ``_queue_result`` to name)."""
    if type(length) is not int:
        return length
    return length + held if type(held) is int else held


def _eval_refused(error: rex.ResponseError) -> bool:
    """Is this the server refusing scripting itself (not a failing script)?"""
    text = str(error).lower()
    return isinstance(error, rex.NoPermissionError) or "unknown command" in text or "noperm" in text


class RedisSource:
    """All Redis triggers of one server, read in one round trip per cycle.

    ``client`` is injected by tests and the bench; otherwise ``make_client`` builds one
    with ``credentials`` (default: the environment) and the timeouts in seconds.
    ``use_lua=False`` forces the pipeline (two round trips).
    """

    def __init__(
        self,
        url: str,
        *,
        client: aioredis.Redis | None = None,
        credentials: RedisCredentials | None = None,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 2.0,
        use_lua: bool = True,
        backoff: Backoff | None = None,
        chunk_queues: int = CHUNK_QUEUES,
        secrets: SecretLookup | None = None,
    ) -> None:
        self.server = redact_url(url)
        self._secret: SecretClient | None = None
        if client is None and RedisEndpoint.unfold(url).secret:
            if secrets is None:
                raise SourceError(f"{self.server}: redis-auth-secret is read only by the "
                                  "controller in Kubernetes (`autoscaler run`)")  # fmt: skip
            self._secret = SecretClient(url, secrets, connect_timeout_s=connect_timeout_s,
                                        read_timeout_s=read_timeout_s)  # fmt: skip
            self._origin = f"Secret {self._secret.namespace}/{self._secret.name}"
        else:
            credentials = credentials or RedisCredentials.from_env()
            self._origin = credentials.origin
            self._client = client or make_client(url, credentials,
                                                 connect_timeout_s=connect_timeout_s,
                                                 read_timeout_s=read_timeout_s)  # fmt: skip
        self._plan: tuple[int, int, list[str], list[tuple[Any, list[list[str]]]]] | None = None
        self._use_lua = use_lua
        self._backoff = backoff or Backoff()
        self._memo = ReadingMemo(self.server)
        self._chunk_queues = max(1, chunk_queues)
        # the last batch of triggers, its queues (deduplicated) and the script calls' arguments
        self._batch_triggers: list[RedisTrigger] = []
        self._batch: tuple[list[str], list[str], list[list[str]]] = ([], [], [])

    _client: aioredis.Redis  # with a Secret: set once the Secret was read (``read``)

    @property
    def client(self) -> aioredis.Redis:
        """This server's client (its one pool), shared with the drain protocol and reaper.
        ``SourceError`` while its Secret has not been read yet (no read has happened)."""
        if self._secret is not None:
            current = self._secret.current
            if current is None:
                raise SourceError(f"{self.server}: its Secret has not been read yet")
            return current
        return self._client

    @property
    def mode(self) -> str:
        """``lua`` or ``pipeline``: how the next read will be done."""
        return "lua" if self._use_lua else "pipeline"

    async def read(self, triggers: Sequence[RedisTrigger | RedisStreamTrigger]) -> list[Reading]:
        """One reading per trigger; a server failure fails them all, raising nothing."""
        if not triggers:
            return []
        if waiting := self._backoff.blocked():
            return [Reading.failed(waiting)] * len(triggers)
        try:
            if self._secret is not None:  # read (again) when due; a new client if it changed
                self._client = await self._secret.get()
            if isinstance(self._client, RedisCluster) and not all(
                isinstance(t, RedisTrigger) for t in triggers
            ):
                raise TransientSourceError(f"{self.server}: stream triggers on Redis Cluster "
                                           "are not supported")  # fmt: skip
            readings = await guarded(self._read_any(triggers))
        except SourceError as e:
            cause = e.__cause__
            if self._secret is not None and cause is not None and is_auth_error(cause):
                self._secret.invalidate()  # a rotated password: read the Secret again
            e = SourceError(str(e) + (credential_hint(cause, self._origin) if cause else ""))
            delay = self._backoff.failed(str(e))
            logger.warning("redis read failed failures=%d retry_in_s=%.2f error=%s",
                           self._backoff.failures, delay, e)  # fmt: skip
            return [Reading.failed(str(e))] * len(triggers)
        if ended := self._backoff.succeeded():
            logger.info("redis read recovered server=%s after_failures=%d", self.server, ended)
        return readings

    async def _read_any(
        self, triggers: Sequence[RedisTrigger | RedisStreamTrigger]
    ) -> list[Reading]:
        """Lists through ``_read``; stream triggers (``redisstream``) by their own script,
        in the same pipeline as the lists' calls: still one round trip. A stream trigger
        that cannot be read (Cluster, scripting refused) fails alone."""
        if RedisStreamTrigger not in set(map(type, triggers)):  # in C: ~1 ms at 10,000
            return await self._read(triggers)  # type: ignore[arg-type]  # lists only
        lists = [t for t in triggers if isinstance(t, RedisTrigger)]
        streams = [t for t in triggers if isinstance(t, RedisStreamTrigger)]
        pairs = redisstream.pairs_of(streams)
        try:
            parts = redisstream.chunks(pairs)
            list_readings, stream_replies = await self._read_with_streams(lists, parts)
            results = redisstream.parse_replies(parts, stream_replies)
        except TransientSourceError as e:
            raise TransientSourceError(f"{self.server}: {e}") from e
        except (rex.RedisError, OSError) as e:
            problem = f"{type(e).__name__}: {truncate(str(e), 200)}"
            raise TransientSourceError(f"{self.server}: {problem}") from e
        in_order = iter(list_readings)
        by_trigger = iter(redisstream.readings_for(self.server, streams, results))
        return [next(by_trigger if isinstance(t, RedisStreamTrigger) else in_order)
                for t in triggers]  # fmt: skip

    async def _read_with_streams(
        self, lists: list[RedisTrigger], parts: list[Sequence[tuple[str, str]]]
    ) -> tuple[list[Reading], list[object]]:
        """(the lists' readings, each stream call's reply or an error in its place)."""
        stream_calls = [(redisstream.STREAM_SCRIPT, redisstream.script_args(p)) for p in parts]
        if isinstance(self._client, RedisCluster):
            refused = rex.ResponseError("stream triggers are not supported with redis-cluster")
            return (await self._read(lists) if lists else []), [refused] * len(parts)
        list_readings: list[Reading] = []
        if lists and self._use_lua:
            self._prepare(lists)
            _, order, calls = self._batch
            replies = await redisstream.run_scripts(
                self._client, [*((READ_SCRIPT, c) for c in calls), *stream_calls]
            )
            list_replies, stream_replies = replies[: len(calls)], replies[len(calls) :]
            if not any(isinstance(r, rex.ResponseError) and _eval_refused(r) for r in list_replies):
                return self._memo.read_batch(lists, order, _joined(list_replies)), stream_replies
        if lists:
            list_readings = await self._read(lists)  # scripting refused: its pipeline
        # an error in a call's place (refused, a failing script) fails only its pairs
        return list_readings, await redisstream.run_scripts(self._client, stream_calls)

    def _prepare(self, triggers: Sequence[RedisTrigger]) -> None:
        """The batch's queues and script arguments, computed again only for a new batch."""
        if triggers != self._batch_triggers:  # a new batch: its queues and script arguments
            unique = list(dict.fromkeys(q for t in triggers for q in t.lists))
            chunks = _chunked_args(unique, self._chunk_queues)
            self._batch_triggers, self._batch = list(triggers), (unique, *chunks)

    async def _read(self, triggers: Sequence[RedisTrigger]) -> list[Reading]:
        """Read through the memo (``redisreply``); ``TransientSourceError``."""
        self._prepare(triggers)
        unique, order, calls = self._batch
        try:
            if self._use_lua and isinstance(self._client, RedisCluster):
                order, reply = await self._eval_cluster(self._client, unique)
                return self._memo.read_batch(triggers, order, reply)
            if self._use_lua and (reply := await self._eval(calls)) is not None:
                return self._memo.read_batch(triggers, order, reply)
            self._memo.take_results(await self._pipeline(unique))
            return self._memo.readings(triggers)
        except TransientSourceError as e:
            raise TransientSourceError(f"{self.server}: {e}") from e
        except (rex.RedisError, OSError) as e:
            problem = f"{type(e).__name__}: {truncate(str(e), 200)}"
            raise TransientSourceError(f"{self.server}: {problem}") from e

    async def _eval_cluster(
        self, cluster: RedisCluster, queues: list[str]
    ) -> tuple[list[str], list[Any]]:
        """Redis Cluster: the queues grouped by the node serving their slot, and per node
        the read script's calls sent to that node alone (every key a call touches shares
        its queue's slot: ``keys.hash_tag``), all nodes at once. One round trip per node
        (one call per ``CHUNK_QUEUES`` queues of a node, those sent together). The
        grouping is kept while the batch and the slot map are the same; an error (a slot
        moved meanwhile) makes the next read group again with a fresh slot map."""
        await cluster.initialize()
        slots = cluster.nodes_manager.slots_cache
        if self._plan is None or self._plan[:2] != (id(queues), id(slots)):
            by_node: dict[str, tuple[Any, list[str]]] = {}
            for q in queues:
                node = cluster.get_node_from_key(q)
                if node is None:
                    raise TransientSourceError(f"no node serves the slot of {q!r}")
                by_node.setdefault(node.name, (node, []))[1].append(q)
            order: list[str] = []
            plan: list[tuple[Any, list[list[str]]]] = []
            for name in sorted(by_node):
                node, names = by_node[name]
                part, calls = _chunked_args(names, self._chunk_queues)
                order += part
                plan.append((node, calls))
            self._plan = (id(queues), id(slots), order, plan)
        _, _, order, plan = self._plan
        try:
            replies = await asyncio.gather(
                *(self._eval_on(cluster, node, args) for node, calls in plan for args in calls)
            )
        except (rex.RedisError, OSError):
            self._plan = None
            with contextlib.suppress(rex.RedisError, OSError):
                await cluster.nodes_manager.initialize()  # learn the slot map again
            raise
        return order, _joined(list(replies))

    @staticmethod
    async def _eval_on(cluster: RedisCluster, node: Any, args: list[str]) -> Any:
        try:
            return await cluster.execute_command(
                "EVALSHA", READ_SCRIPT.sha, 0, *args, target_nodes=node
            )
        except rex.NoScriptError:
            return await cluster.execute_command(
                "EVAL", READ_SCRIPT.source, 0, *args, target_nodes=node
            )

    async def _eval(self, calls: Sequence[Sequence[str]]) -> object | None:
        """The script's reply (the calls' replies end to end), or None when the server
        refuses scripting (remembered)."""
        try:
            if len(calls) <= 1:
                return await READ_SCRIPT(self._client, [], list(calls[0])) if calls else []
            return _joined(await READ_SCRIPT.many(self._client, calls))
        except rex.ResponseError as e:
            if not _eval_refused(e):
                raise
            self._use_lua = False
            error = truncate(str(e), 200)
            logger.warning("redis scripting refused, using pipelines server=%s error=%s",
                           self.server, error)  # fmt: skip
            return None

    async def _pipeline(self, queues: Sequence[str]) -> dict[str, QueueResult]:
        """Two round trips: lengths (the queue's and its quarantine's, as the script),
        registries and counters; then per queue the length of each registered consumer's
        processing list and one ``EXISTS`` of all their leases (it counts the keys that
        exist; set members are distinct)."""
        pipe = self._client.pipeline(transaction=False)
        for q in queues:
            pipe.llen(q)
            pipe.smembers(keys.consumers_key(q))
            pipe.get(keys.processed_key(q))
            pipe.llen(keys.quarantine_key(q))
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        if len(replies) != 4 * len(queues):
            raise TransientSourceError("malformed pipeline reply")
        first: list[Any] = []  # per queue: backlog (queue + quarantine), members, counter
        for i in range(len(queues)):
            length, members, processed, held = replies[4 * i : 4 * i + 4]
            first += [_waiting(length, held), members, processed]
        # queue index → its in-flight or the error that holds it; its live consumers or error
        busy: dict[int, object] = {}
        live: dict[int, object] = {}
        asked: list[tuple[int, int]] = []  # (queue, consumers) of the second round trip
        lease_prefix, lease_suffix = (affix.encode() for affix in _LEASE)
        for i, q in enumerate(queues):
            members = first[3 * i + 1]
            if not isinstance(members, set | list):
                busy[i] = live[i] = members
                continue
            if not members:
                continue
            prefix = keys.processing_key(q, "").encode()
            ids = [m if isinstance(m, bytes) else str(m).encode() for m in members]
            for member_id in ids:
                pipe.llen(prefix + member_id)
            slot = keys.lease_key("", q).encode()[len(lease_prefix) :]  # the queue's tag part
            pipe.exists(*(lease_prefix + slot + member_id + lease_suffix for member_id in ids))
            asked.append((i, len(ids)))
        second: list[Any] = await pipe.execute(raise_on_error=False) if asked else []
        if len(second) != sum(n + 1 for _, n in asked):
            raise TransientSourceError("malformed pipeline reply")
        at = 0
        for i, n in asked:
            lengths, at = second[at : at + n], at + n + 1
            bad = [x for x in lengths if not (isinstance(x, int) and x >= 0)]
            busy[i] = bad[0] if bad else sum(lengths)
            live[i] = second[at - 1]
        return {
            q: _queue_result(q, first[3 * i], busy.get(i, 0), first[3 * i + 2], live.get(i, 0))
            for i, q in enumerate(queues)
        }

    async def aclose(self) -> None:
        """Close the pool (best effort: a failure is logged, not raised)."""
        if self._secret is not None:  # its clients, and the files written for it
            await self._secret.aclose()
            return
        try:
            await self._client.aclose()
        except (rex.RedisError, OSError) as e:
            logger.warning("redis close failed server=%s error=%s", self.server, e)
