"""The stream trigger's read: one script call, in the same round trip as the lists'.

Per (stream, group) pair the script answers five values: *length* (``XLEN``), *lag*
(entries not yet delivered to the group), *pending* (delivered, not acknowledged: the
group's PEL), *processed* (``GET processed_key(stream)``, acks counted by the sidecar)
and *consumers* (registered sidecars of the stream whose lease exists, as for lists).

The lag comes from ``XINFO GROUPS`` (Redis ≥ 7). Redis answers NULL when it cannot tell
(entries deleted or trimmed inside the range, or a group created at an arbitrary id);
then the script counts it from the entries, never reading NULL as 0 or −1 (go-redis, hence
KEDA, does): every entry is after ``last-delivered-id`` when it is older than the first
entry (lag = XLEN); none when it is at or past the last; otherwise the entries after it,
or XLEN minus those up to it, whichever side holds at most ``LAG_SCAN`` entries (exact).
When both sides are bigger the lag is *unknown*: the reading fails and the policy holds.

A missing stream has no load (0 everywhere). A missing group: nothing was delivered, so
lag = XLEN (the sidecar creates its group at ``0``, from the first entry), pending 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis import exceptions as rex

from autoscaler import keys
from autoscaler.errors import TransientSourceError, truncate
from autoscaler.policy.spec import RedisStreamTrigger
from autoscaler.policy.state import Reading
from autoscaler.redisconn import Script
from autoscaler.sources.redisreply import _BadValue, _count

# Entries the script may walk to count a NULL lag (each side). ~1 ms of server time per
# 1,000 entries of a few fields; the script blocks the server meanwhile.
LAG_SCAN = 1000
# (stream, group) pairs per script call: a call blocks every other client while it runs.
# ``bench/bench_stream_read.py`` (2 shared cores): ~5 ms per call of 250 pairs, ~8-19 ms
# when every stream has a NULL lag to count (500 pairs: ~16 and ~33 ms).
CHUNK_PAIRS = 250
VALUES_PER_PAIR = 5
UNKNOWN_LAG = b"unknown"


def _affixes(key_of: Callable[[str], str]) -> tuple[str, str]:
    prefix, _, suffix = key_of("\x00").partition("\x00")
    return prefix, suffix


_SCHEMA_ARGS = (
    *_affixes(keys.consumers_key),
    *_affixes(keys.processed_key),
    *_affixes(keys.lease_key),
)

# ARGV: the six affixes above, LAG_SCAN, then (stream, group) pairs. pcall throughout: an
# error (WRONGTYPE, NOPERM) comes back in its slot and fails only the triggers reading it.
STREAM_SCRIPT = Script(
    """
local cp, cs, pp, ps, ep, es = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local scan = tonumber(ARGV[7])
local function id_parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b)
  local am, as = id_parts(a)
  local bm, bs = id_parts(b)
  return am < bm or (am == bm and as < bs)
end
local function lag_of(s, last, len)
  if len == 0 then return 0 end
  local first = redis.call('XRANGE', s, '-', '+', 'COUNT', 1)[1][1]
  if before(last, first) then return len end
  local tail = redis.call('XREVRANGE', s, '+', '-', 'COUNT', 1)[1][1]
  if not before(last, tail) then return 0 end
  local after = redis.call('XRANGE', s, '(' .. last, '+', 'COUNT', scan + 1)
  if #after <= scan then return #after end
  local upto = redis.call('XRANGE', s, '-', last, 'COUNT', scan + 1)
  if #upto <= scan then return len - #upto end
  return 'unknown'
end
local out, n = {}, 0
for i = 8, #ARGV, 2 do
  local s, g = ARGV[i], ARGV[i + 1]
  local len = redis.pcall('XLEN', s)
  local lag, pending = 0, 0
  if type(len) == 'number' and len > 0 then
    lag = len
    local groups = redis.pcall('XINFO', 'GROUPS', s)
    if groups.err then lag, pending = groups, groups else
      for _, info in ipairs(groups) do
        local f = {}
        for j = 1, #info, 2 do f[info[j]] = info[j + 1] end
        if f['name'] == g then
          pending = f['pending']
          lag = f['lag']
          if not lag then lag = lag_of(s, f['last-delivered-id'], len) end
        end
      end
    end
  elseif type(len) ~= 'number' then lag, pending = len, len end
  local live = 0
  local ids = redis.pcall('SMEMBERS', cp .. s .. cs)
  if ids.err then live = ids else
    for _, id in ipairs(ids) do
      if type(live) == 'number' then
        local on = redis.pcall('EXISTS', ep .. id .. es)
        if type(on) == 'number' then live = live + on else live = on end
      end
    end
  end
  local done = redis.pcall('GET', pp .. s .. ps) or 0
  if type(done) == 'string' and #done < 16 and string.find(done, '^%d+$') then
    done = tonumber(done)
  end
  out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] = len, lag, pending, done, live
  n = n + 5
end
return out
"""
)


def pairs_of(triggers: Sequence[RedisStreamTrigger]) -> list[tuple[str, str]]:
    """The distinct (stream, group) pairs the triggers read, in a stable order."""
    return list(dict.fromkeys((s, t.group) for t in triggers for s in t.streams))


def script_args(pairs: Sequence[tuple[str, str]]) -> list[Any]:
    return [*_SCHEMA_ARGS, LAG_SCAN, *(x for pair in pairs for x in pair)]


def chunks(pairs: Sequence[tuple[str, str]]) -> list[Sequence[tuple[str, str]]]:
    """The pairs of each script call: a script blocks the server while it runs, so at most
    ``CHUNK_PAIRS`` per call; the calls still go in one pipeline (one round trip)."""
    return [pairs[i : i + CHUNK_PAIRS] for i in range(0, len(pairs), CHUNK_PAIRS)] or [[]]


def parse_replies(
    parts: Sequence[Sequence[tuple[str, str]]], replies: Sequence[object]
) -> dict[tuple[str, str], PairResult]:
    """Each call's reply (or error) for its pairs, merged."""
    results: dict[tuple[str, str], PairResult] = {}
    for part, reply in zip(parts, replies, strict=True):
        results.update(parse_reply(part, reply))
    return results


StreamStats = tuple[int, int | None, int, int, int]  # length, lag (None: unknown), pending, …
PairResult = StreamStats | str  # str: why the pair could not be read


def parse_reply(
    pairs: Sequence[tuple[str, str]], reply: object
) -> dict[tuple[str, str], PairResult]:
    """The script's flat array → per-pair results; a wrong shape fails the whole server."""
    if isinstance(reply, rex.ResponseError):  # the script refused: every pair fails with it
        return dict.fromkeys(pairs, f"stream read: {truncate(str(reply), 200)}")
    if not isinstance(reply, list) or len(reply) != VALUES_PER_PAIR * len(pairs):
        shape = f"{len(reply)} items" if isinstance(reply, list) else type(reply).__name__
        raise TransientSourceError(f"malformed stream script reply: {shape} for {len(pairs)}")
    out: dict[tuple[str, str], PairResult] = {}
    for i, (stream, group) in enumerate(pairs):
        length, lag, pending, done, live = reply[VALUES_PER_PAIR * i : VALUES_PER_PAIR * (i + 1)]
        try:
            out[stream, group] = (
                _count(length, f"XLEN {stream}"),
                None if lag == UNKNOWN_LAG else _count(lag, f"lag of {stream} group {group}"),
                _count(pending, f"pending of {stream} group {group}"),
                _count(0 if done is None else done, keys.processed_key(stream)),
                _count(live, f"live consumers of {stream}"),
            )
        except _BadValue as e:
            out[stream, group] = str(e)
    return out


def readings_for(
    server: str,
    triggers: Sequence[RedisStreamTrigger],
    results: dict[tuple[str, str], PairResult],
) -> list[Reading]:
    """One reading per trigger: its streams' numbers summed by its load, or failed."""
    return [_reading(server, t, results) for t in triggers]


def _reading(
    server: str, trigger: RedisStreamTrigger, results: dict[tuple[str, str], PairResult]
) -> Reading:
    stats = [results.get((s, trigger.group), f"{s}: not read") for s in trigger.streams]
    if errors := [s for s in stats if isinstance(s, str)]:
        return Reading.failed(f"{server}: {'; '.join(errors)}")
    ok = [s for s in stats if not isinstance(s, str)]
    length = sum(s[0] for s in ok)
    pending = sum(s[2] for s in ok)
    processed, consumers = sum(s[3] for s in ok), sum(s[4] for s in ok)
    lags = [s[1] for s in ok]
    if trigger.load in ("lag+pending", "lag") and None in lags:
        unknown = [st for st, s in zip(trigger.streams, ok, strict=True) if s[1] is None]
        return Reading.failed(
            f"{server}: lag of group {trigger.group} unknown on {', '.join(unknown)}: Redis "
            f"reports NULL and more than {LAG_SCAN} entries lie on each side of its "
            "last-delivered-id (use redis-stream-load: pending or length)"
        )
    lag = sum(x for x in lags if x is not None)
    value = {"lag+pending": lag + pending, "lag": lag, "pending": pending, "length": length}
    return Reading(
        float(value[trigger.load]),
        backlog=float(lag if None not in lags else length),
        in_flight=float(pending),
        processed_total=float(processed),
        consumers=consumers,
    )


async def run_scripts(client: Any, calls: Sequence[tuple[Script, Sequence[Any]]]) -> list[Any]:
    """Several scripts' calls (no keys) in one pipeline: one round trip; each reply or its
    error in its place. On ``NOSCRIPT`` all are sent again, each script's first call as
    ``EVAL`` (loading it for the rest): only for read-only scripts."""
    replies = await _pipeline(client, calls, load=False)
    if any(isinstance(reply, rex.NoScriptError) for reply in replies):
        replies = await _pipeline(client, calls, load=True)
    return replies


async def _pipeline(
    client: Any, calls: Sequence[tuple[Script, Sequence[Any]]], *, load: bool
) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    loaded: set[str] = set()
    for script, args in calls:
        if load and script.sha not in loaded:
            loaded.add(script.sha)
            pipe.execute_command("EVAL", script.source, 0, *args)
        else:
            pipe.execute_command("EVALSHA", script.sha, 0, *args)
    replies: list[Any] = await pipe.execute(raise_on_error=False)
    return replies
