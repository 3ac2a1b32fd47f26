"""``autoscaler dead-letter``: list, show, replay and purge a queue's dead letters.

    autoscaler dead-letter list   --redis-url URL --queue Q [--limit N] [--json]
    autoscaler dead-letter show   --redis-url URL --queue Q ID [--json]
    autoscaler dead-letter replay --redis-url URL --queue Q (ID | --count N | --all)
                                  [--to head|tail] [--json]
    autoscaler dead-letter purge  --redis-url URL --queue Q (ID | --count N | --all) --yes

ID is an index (0: the newest dead letter, as ``list`` numbers them) or the start of a
message's digest (at least 6 hex digits, as logs show it). ``--count N`` takes the N
*oldest*. Replay to the ``head`` (default: taken next) or the ``tail`` of the queue; the
message starts again with no delivery counted. Exit codes: 0 done, 1 Redis unreachable,
2 bad input (a flag, an ID that matches nothing, purge without ``--yes``).

With ``--stream S`` instead of ``--queue`` the same actions work on the dead-letter
*stream* ``S:dead`` that ``consume --stream`` writes: ID is an index (0: the newest) or an
entry id (the original entry's, as logs show it, or the dead letter's own); a replay adds
the original fields to the end of ``S`` as a new entry (a stream has no head: ``--to`` is
ignored) and removes the dead letter, in one script.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from typing import Any

from redis.asyncio import Redis

from autoscaler import argtypes, keys
from autoscaler.errors import InputError, QueueError
from autoscaler.redisconn import make_client
from autoscaler.redisqueue import deadletters as dl
from autoscaler.redisqueue import deadstreams
from autoscaler.remote import redact_url

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
PREVIEW_CHARS = 60
MIN_DIGEST_CHARS = 6


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dead-letter",
        help="list, show, replay or purge a queue's dead-letter list",
        description=__doc__.split("\n\n")[2] if __doc__ else None,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_ in (("list", "the dead letters, newest first, with reason, deliveries, age"),
                        ("show", "one dead letter in full"),
                        ("replay", "move dead letters back to the queue"),
                        ("purge", "delete dead letters for good")):  # fmt: skip
        sub = actions.add_parser(name, help=help_, description=help_)
        _common(sub)
        if name == "list":
            sub.add_argument("--limit", type=argtypes.positive_int, default=100,
                             help="show at most this many, newest first (default 100)")  # fmt: skip
        if name == "show":
            sub.add_argument("id", metavar="ID", help="index (0: newest) or digest prefix")
        if name in ("replay", "purge"):
            which = sub.add_mutually_exclusive_group(required=True)
            which.add_argument("id", metavar="ID", nargs="?",
                               help="one: index (0: newest) or digest prefix")  # fmt: skip
            which.add_argument("--count", type=argtypes.positive_int,
                               help="the N oldest")  # fmt: skip
            which.add_argument("--all", action="store_true", help="every dead letter")
        if name == "replay":
            sub.add_argument("--to", choices=("head", "tail"), default="head",
                             help="head: taken next (default); tail: after the backlog")
        if name == "purge":
            sub.add_argument("--yes", action="store_true", help="required: purge is final")
    parser.set_defaults(func=run)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        type=argtypes.redis_url,
        help=f"default $REDIS_URL, else {DEFAULT_REDIS_URL}; credentials from "
        "$REDIS_USERNAME / $REDIS_PASSWORD(_FILE)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--queue", type=argtypes.nonempty, help="the queue (a list)")
    source.add_argument("--stream", type=argtypes.nonempty, help="or the stream")
    parser.add_argument("--dead-letter", type=argtypes.nonempty, default=None, metavar="KEY",
                        help="the dead-letter list or stream (default <queue>:dead or "
                        "<stream>:dead)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    if args.action == "purge" and not args.yes:
        raise InputError("purge: deleting dead letters is final; add --yes")
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    redis = make_client(args.redis_url, connect_timeout_s=5.0, read_timeout_s=30.0)
    try:
        out = await _act(redis, args)
    except QueueError as e:
        print(f"autoscaler dead-letter: redis at {redact_url(args.redis_url)}: {e}",
              file=sys.stderr)  # fmt: skip
        return 1
    finally:
        await redis.aclose()
    print(json.dumps(out, indent=2) if args.json else _text(out), file=sys.stdout)
    return 0


async def _act(redis: Redis, args: argparse.Namespace) -> dict[str, Any]:
    if args.stream is not None:
        return await _act_stream(redis, args)
    dead = args.dead_letter or keys.dead_letter_key(args.queue)
    total = await dl.length(redis, dead)
    now = time.time()
    if args.action == "list":
        entries = await dl.read(redis, dead, 0, args.limit)
        return {"dead_letter": dead, "total": total,
                "entries": [_describe(e, now) for e in entries]}  # fmt: skip
    if args.action == "show":
        first = await _find(redis, dead, total, args.id)
        (entry,) = await dl.read(redis, dead, first, 1)
        return {"dead_letter": dead, **_describe(entry, now), **_body(entry.message)}
    first, count = await _span(redis, dead, total, args)
    if args.action == "replay":
        moved = await dl.replay(redis, dead, args.queue, first, count, args.to == "head")
        return {"replayed": moved, "queue": args.queue, "to": args.to, "left": total - moved}
    purged = await dl.purge(redis, dead, first, count)
    return {"purged": purged, "dead_letter": dead, "left": total - purged}


async def _span(redis: Redis, dead: str, total: int, args: argparse.Namespace) -> tuple[int, int]:
    """(first index, count) of what ``ID`` / ``--count`` / ``--all`` select."""
    if args.all:
        return 0, -1
    if args.count is not None:
        return max(0, total - args.count), -1
    return await _find(redis, dead, total, args.id), 1


async def _find(redis: Redis, dead: str, total: int, ident: str) -> int:
    """The index ``ident`` names: an index, or a digest prefix matching exactly one."""
    if ident.isdigit():
        index = int(ident)
        if index >= total:
            raise InputError(f"ID {ident}: no such dead letter ({total} in {dead})")
        return index
    prefix = ident.lower()
    if len(prefix) < MIN_DIGEST_CHARS or any(c not in "0123456789abcdef" for c in prefix):
        raise InputError(f"ID {ident[:80]!r}: not an index nor a digest prefix "
                         f"(≥ {MIN_DIGEST_CHARS} hex digits)")  # fmt: skip
    matches = [e.index for e in await dl.read(redis, dead) if e.digest.startswith(prefix)]
    if len(matches) != 1:
        found = "no dead letter" if not matches else f"{len(matches)} dead letters"
        raise InputError(f"ID {ident}: {found} in {dead} with that digest")
    return matches[0]


async def _act_stream(redis: Redis, args: argparse.Namespace) -> dict[str, Any]:
    """The actions on a dead-letter stream (see the module docstring)."""
    dead = args.dead_letter or keys.dead_letter_key(args.stream)
    total = await deadstreams.dead_count(redis, dead)
    now = time.time()
    if args.action == "list":
        entries = await deadstreams.read_dead(redis, dead, args.limit)
        return {"dead_letter": dead, "total": total,
                "entries": [_describe_entry(e, now) for e in entries]}  # fmt: skip
    chosen = await _select(redis, dead, total, args)
    if args.action == "show":
        return {"dead_letter": dead, **_describe_entry(chosen[0], now), **_body(chosen[0].body)}
    ids = [e.dead_entry_id for e in chosen]
    if args.action == "replay":
        moved = await deadstreams.replay_dead(redis, dead, args.stream, ids)
        return {"replayed": moved, "stream": args.stream, "to": "end", "left": total - moved}
    purged = await deadstreams.purge_dead(redis, dead, ids)
    return {"purged": purged, "dead_letter": dead, "left": total - purged}


async def _select(
    redis: Redis, dead: str, total: int, args: argparse.Namespace
) -> list[deadstreams.DeadEntry]:
    """The dead letters ``ID`` / ``--count`` / ``--all`` select in a dead-letter stream."""
    ident: str | None = getattr(args, "id", None)
    if ident is not None and ident.isdigit() and int(ident) >= total:
        raise InputError(f"ID {ident}: no such dead letter ({total} in {dead})")
    everything = await deadstreams.read_dead(redis, dead, max(total, 1))
    if getattr(args, "all", False):
        return everything
    if getattr(args, "count", None) is not None:
        return everything[-args.count :]
    assert ident is not None  # argparse requires one of ID, --count, --all
    if ident.isdigit():
        return [everything[int(ident)]]
    found = [e for e in everything if ident in (e.entry_id, e.dead_entry_id)]
    if not found:
        raise InputError(f"ID {ident[:80]!r}: no dead letter in {dead} with that entry id")
    return found[:1]


def _describe_entry(entry: deadstreams.DeadEntry, now: float) -> dict[str, Any]:
    deliveries, at = entry.meta.get("dead-deliveries", ""), entry.meta.get("dead-at", "")
    return {
        "index": entry.index,
        "id": entry.entry_id,
        "dead_id": entry.dead_entry_id,
        "bytes": len(entry.body),
        "deliveries": int(deliveries) if deliveries.isdigit() else None,
        "age_s": round(max(0.0, now - int(at))) if at.isdigit() else None,
        "reason": entry.meta.get("dead-reason"),
        "preview": entry.body[:PREVIEW_CHARS].decode("utf-8", "replace"),
    }


def _describe(entry: dl.DeadLetter, now: float) -> dict[str, Any]:
    return {
        "index": entry.index,
        "id": entry.digest[:12],
        "bytes": len(entry.message),
        "deliveries": entry.deliveries,
        "age_s": None if entry.dead_at is None else round(max(0.0, now - entry.dead_at)),
        "reason": entry.reason,
        "preview": entry.message[:PREVIEW_CHARS].decode("utf-8", "replace"),
    }


def _body(message: bytes) -> dict[str, str]:
    try:
        return {"encoding": "utf-8", "body": message.decode("utf-8")}
    except UnicodeDecodeError:
        return {"encoding": "base64", "body": base64.b64encode(message).decode()}


def _text(out: dict[str, Any]) -> str:
    if "entries" in out:
        lines = [f"{out['total']} dead letters in {out['dead_letter']}"]
        lines += [
            f"{e['index']:>4}  {e['id']}  {e['bytes']:>8} B  deliveries {_or_dash(e['deliveries'])}"
            f"  age {_age(e['age_s'])}  {e['reason'] or '-'}  {e['preview']!r}"
            for e in out["entries"]
        ]
        return "\n".join(lines)
    if "body" in out:
        head = {k: v for k, v in out.items() if k not in ("body", "preview")}
        return "\n".join([*(f"{k}: {v}" for k, v in head.items()), "", out["body"]])
    return " ".join(f"{k}={v}" for k, v in out.items())


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


__all__ = ["register"]
