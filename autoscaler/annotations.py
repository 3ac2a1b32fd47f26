"""The annotations, declared once: ``KEYS`` is the table from which everything else comes.

A workload opts in with the label ``queue-autoscaler.io/enabled: "true"``; its spec is the
set of annotations under the same prefix. Each ``Key`` of ``KEYS`` declares one of them —
its name, its form (``Kind`` and bounds), its default, where it goes in the
``ScalingSpec`` and its meaning — and from that one declaration come: parsing
(``parse_spec``), the validation messages (``Key.expected``), the defaults, the effective
values ``autoscaler check`` prints (``effective_values``) and the README's reference table
(``reference_table``; a test keeps the README equal to it).

Unknown keys under the prefix are errors — a typo must not be silently ignored (KEDA
#4880). Credentials never come from annotations: a URL carrying a user or password is
rejected. Durations accept ``90``, ``90s``, ``1.5s``, ``500ms``, ``5m``, ``1h30m``.

Terms: a *trigger* is one source of load (the ``redis`` or the ``prometheus`` group); its
*head* key (``redis-list``, ``prometheus-query``) switches it on, and the other keys of
its group need the head.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from autoscaler import NAME
from autoscaler.endpoint import RedisEndpoint, parse_sentinels
from autoscaler.errors import InvalidSpecError
from autoscaler.keys import hash_tag
from autoscaler.policy.schedule import Schedule, ScheduleError, parse_schedule, parse_timezone
from autoscaler.policy.spec import (
    STREAM_LOADS,
    FallbackBehavior,
    PrometheusTrigger,
    RedisStreamTrigger,
    RedisTrigger,
    ScaleUpRule,
    ScalingSpec,
    Trigger,
)

ANNOTATION_PREFIX = f"{NAME}.io/"
ENABLED_LABEL = ANNOTATION_PREFIX + "enabled"
STATUS_ANNOTATION = ANNOTATION_PREFIX + "status"  # written by the controller, never read as spec
# Keys under the prefix that are not part of the spec (written by us or by the user as a label).
RESERVED = frozenset({"status", "enabled"})
MAX_INT32 = 2**31 - 1  # replica counts are int32 in Kubernetes

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_LIST_NAME = re.compile(r"^[^\s,]{1,512}$")
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_DURATION_EXAMPLES = "90, 90s, 500ms, 5m, 1h30m"


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``500ms``, ``5m``, ``1h30m``; ValueError otherwise."""
    text = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(text)
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes // 60}h{minutes % 60}m" if minutes >= 60 else f"{minutes}m"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.3f}".rstrip("0") + "s"


def _format_number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


class Kind(Enum):
    """The form of an annotation's value."""

    LISTS = "lists"  # distinct Redis list names, comma-separated
    STREAMS = "streams"  # distinct Redis stream names, comma-separated
    NAME = "name"  # one name: no spaces, no commas
    CHOICE = "choice"  # one of ``Key.choices``
    URL = "url"
    PROMQL = "promql"
    NUMBER = "number"
    INTEGER = "integer"
    DURATION = "duration"
    BOOLEAN = "boolean"
    SCHEDULE = "schedule"  # start=<cron>, end=<cron>, replicas=<n>[; …]
    TIMEZONE = "timezone"  # an IANA time zone name
    SENTINELS = "sentinels"  # host:port,host:port
    SECRET = "secret"  # a Kubernetes Secret's name (DNS-1123 subdomain)


# Kinds whose form reads the same for every key: (README form, validation message).
_FIXED_FORMS = {
    Kind.SENTINELS: ("`host:port`, comma-separated",
                     "distinct host:port addresses separated by commas"),
    Kind.SECRET: ("a Secret's name",
                  "a Secret name in the workload's namespace (lowercase DNS-1123 subdomain)"),
}  # fmt: skip


# The README's form of the kinds whose form does not depend on the key's bounds.
_README_FORMS = {
    Kind.LISTS: "list names, comma-separated",
    Kind.STREAMS: "stream names, comma-separated",
    Kind.NAME: "a name",
    Kind.PROMQL: "PromQL returning a scalar or one sample",
    Kind.BOOLEAN: "`true`/`false`",
}


@dataclass(frozen=True)
class Key:
    """One annotation (name without the prefix), declared once.

    ``group``/``field``: where the value goes — ``ScalingSpec`` (``spec``), its
    ``ScaleUpRule`` (``scale_up``), or the ``redis``/``prometheus`` trigger. ``default``
    is the typed value when the key is absent (None: unset). Bounds: ``low`` (exclusive
    when ``strict``) and ``high`` (exclusive); ``schemes`` for a URL. ``head``: the key
    that switches its trigger group on; ``required``: needed whenever its group is on.
    """

    name: str
    kind: Kind
    group: str
    field: str
    default: Any
    meaning: str
    low: float = 0.0
    strict: bool = False
    high: float = math.inf
    schemes: tuple[str, ...] = ()
    head: bool = False
    required: bool = False
    choices: tuple[str, ...] = ()
    also: tuple[str, ...] = ()  # other trigger groups this key applies to (shared keys)

    @property
    def groups(self) -> tuple[str, ...]:
        return (self.group, *self.also)

    @property
    def form(self) -> str:
        """The form, as the README's table shows it."""
        if self.kind in _README_FORMS:
            return _README_FORMS[self.kind]
        if self.kind is Kind.CHOICE:
            return " \\| ".join(f"`{c}`" for c in self.choices)
        if self.kind is Kind.URL:
            shown = [f"`{s}://`" for s in self.schemes]
            return f"{', '.join(shown[:-1])} or {shown[-1]} URL, no credentials"
        if self.kind is Kind.DURATION:
            if self.low > 0:
                return f"duration ≥ {format_duration(self.low)}"
            return "duration > 0" if self.strict else "duration"
        if self.kind is Kind.SCHEDULE:
            return "`start=<cron>, end=<cron>, replicas=<n>`, `;`-separated"
        if self.kind is Kind.TIMEZONE:
            return "IANA time zone"
        if self.kind in _FIXED_FORMS:
            return _FIXED_FORMS[self.kind][0]
        noun = "integer" if self.kind is Kind.INTEGER else "number"
        if self.high < math.inf:
            return f"{noun} in {'(' if self.strict else '['}{self.low:g}, {self.high:g})"
        return f"{noun} {'>' if self.strict else '≥'} {self.low:g}"

    @property
    def expected(self) -> str:
        """The form, as a validation message says what was expected."""
        if self.kind is Kind.LISTS:
            return "distinct list names separated by commas, no spaces inside a name"
        if self.kind is Kind.STREAMS:
            return "distinct stream names separated by commas, no spaces inside a name"
        if self.kind is Kind.NAME:
            return "a name without spaces or commas (at most 512 characters)"
        if self.kind is Kind.CHOICE:
            return "one of " + ", ".join(self.choices)
        if self.kind is Kind.URL:
            return f"a {' or '.join(s + '://' for s in self.schemes)} URL without credentials"
        if self.kind is Kind.PROMQL:
            return "a non-empty PromQL query"
        if self.kind is Kind.BOOLEAN:
            return "true or false"
        if self.kind is Kind.DURATION:
            low = f" (≥ {format_duration(self.low)})" if self.low > 0 else ""
            return f"a duration such as {_DURATION_EXAMPLES}" + (low or " (> 0)" * self.strict)
        if self.kind is Kind.SCHEDULE:
            return "start=<cron>, end=<cron>, replicas=<n> windows separated by ;"
        if self.kind is Kind.TIMEZONE:
            return "an IANA time zone name such as Europe/Paris"
        if self.kind in _FIXED_FORMS:
            return _FIXED_FORMS[self.kind][1]
        if self.kind is Kind.INTEGER:
            return f"an integer ≥ {self.low:g}"
        bound = f"a number {'>' if self.strict else '≥'} {self.low:g}"
        return bound + (f" and < {self.high:g}" if self.high < math.inf else "")

    @property
    def default_text(self) -> str:
        """The default, as the README's table shows it."""
        if self.head:
            return "—"
        if self.required:
            heads = [k.name for k in KEYS if k.group in self.groups and k.head]
            return f"— (required with {' or '.join(f'`{h}`' for h in heads)})"
        if self.kind is Kind.URL:
            return f"controller's `--{self.name}`"
        return self.format(self.default) or "unset"

    def format(self, value: Any) -> str | None:
        """A value as an annotation would spell it; None for unset."""
        if value is None:
            return None
        if self.kind in (Kind.LISTS, Kind.STREAMS):
            return ",".join(value)
        if self.kind is Kind.BOOLEAN:
            return "true" if value else "false"
        if self.kind is Kind.DURATION:
            return format_duration(value)
        if self.kind is Kind.NUMBER:
            return _format_number(value)
        if self.kind is Kind.SENTINELS:
            return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in value)
        if self.kind is Kind.SCHEDULE:
            return "; ".join(
                f"start={w.start.text}, end={w.end.text}, replicas={w.replicas}"
                for w in value.windows
            )
        return str(value)

    def parse(self, text: str, prefix: str) -> Any:
        """The typed value of ``text``; ``InvalidSpecError`` naming the key otherwise."""
        key = prefix + self.name
        if self.kind is Kind.URL:
            return _parse_url(text, key, self.schemes, self.expected)
        if self.kind in (Kind.SCHEDULE, Kind.TIMEZONE):
            try:
                return _PARSERS[self.kind](text.strip())
            except ScheduleError as e:  # names the window and the field
                raise InvalidSpecError(key, text, f"{self.expected} ({e})") from None
        try:
            value = _PARSERS[self.kind](text.strip())
        except ValueError:
            raise InvalidSpecError(key, text, self.expected) from None
        if not self._within(value):
            raise InvalidSpecError(key, text, self.expected)
        return value

    def _within(self, value: Any) -> bool:
        if self.kind in (Kind.LISTS, Kind.STREAMS):
            return bool(value) and len(set(value)) == len(value)
        if self.kind is Kind.CHOICE:
            return value in self.choices
        if self.kind is Kind.PROMQL:
            return bool(value)
        if self.kind in (Kind.NUMBER, Kind.INTEGER, Kind.DURATION):
            above = value > self.low if self.strict else value >= self.low
            top = MAX_INT32 + 1 if self.kind is Kind.INTEGER else self.high
            return math.isfinite(value) and above and value < top
        return True


def _parse_lists(text: str) -> tuple[str, ...]:
    lists = tuple(part.strip() for part in text.split(","))
    if not all(_LIST_NAME.match(name) for name in lists):
        raise ValueError(text)
    return lists


def _parse_name(text: str) -> str:
    if not _LIST_NAME.match(text):
        raise ValueError(text)
    return text


def _parse_secret_name(text: str) -> str:
    if len(text) > 253 or not _SECRET_NAME.match(text):
        raise ValueError(text)
    return text


def _parse_boolean(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(text)
    return text.lower() == "true"


_PARSERS: dict[Kind, Any] = {
    Kind.LISTS: _parse_lists,
    Kind.STREAMS: _parse_lists,
    Kind.NAME: _parse_name,
    Kind.CHOICE: str,
    Kind.PROMQL: str,
    Kind.NUMBER: float,
    Kind.INTEGER: int,
    Kind.DURATION: parse_duration,
    Kind.BOOLEAN: _parse_boolean,
    Kind.SCHEDULE: parse_schedule,
    Kind.TIMEZONE: parse_timezone,
    Kind.SENTINELS: parse_sentinels,
    Kind.SECRET: _parse_secret_name,
}


def _parse_url(text: str, key: str, schemes: tuple[str, ...], expected: str) -> str:
    try:
        parts = urlsplit(text.strip())
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        raise InvalidSpecError(key, "<unparseable URL>", expected) from None
    if parts.password is not None or parts.username is not None:
        # Never echo the value: it holds a secret.
        raise InvalidSpecError(
            key,
            "<redacted: contains credentials>",
            expected + " (credentials come from the controller's environment)",
        )
    if parts.scheme not in schemes or not (parts.hostname or parts.scheme == "unix"):
        raise InvalidSpecError(key, text, expected)
    return text.strip()


# The one declaration of every annotation, in the README's order.
KEYS: tuple[Key, ...] = (
    Key("redis-list", Kind.LISTS, "redis", "lists", None,
        "Redis lists whose total length is the backlog (one trigger).", head=True),
    Key("redis-url", Kind.URL, "redis", "redis_url", None,
        "Redis server of the lists and streams (with `redis-cluster`: any node). "
        "`rediss://` verifies the server's certificate. Credentials come from "
        "`redis-auth-secret`, else the controller's environment.",
        schemes=("redis", "rediss", "unix"), also=("stream",)),
    Key("redis-sentinels", Kind.SENTINELS, "redis", "redis_sentinels", None,
        "Sentinels to ask for the master, instead of `redis-url`; a failover is followed.",
        also=("stream",)),
    Key("redis-sentinel-master", Kind.NAME, "redis", "redis_sentinel_master", None,
        "The master's name at the sentinels (required with `redis-sentinels`).",
        also=("stream",)),
    Key("redis-sentinel-tls", Kind.BOOLEAN, "redis", "redis_sentinel_tls", False,
        "TLS to the sentinels and the master they name, verified against `ca.crt` (needs "
        "`redis-sentinels`).",
        also=("stream",)),
    Key("redis-cluster", Kind.BOOLEAN, "redis", "redis_cluster", False,
        "`redis-url` is a node of a Redis Cluster. Every list name needs a `{hash tag}`; "
        "`redis-stream` is refused (not supported on a Cluster yet).",
        also=("stream",)),
    Key("redis-auth-secret", Kind.SECRET, "redis", "redis_auth_secret", None,
        "Secret in the workload's namespace with optional keys `username`, `password`, "
        "`ca.crt`, `tls.crt`, `tls.key`, `sentinel-username`, `sentinel-password` (needs the "
        "RoleBinding of docs/deploy.md).",
        also=("stream",)),
    Key("messages-per-replica", Kind.NUMBER, "redis", "messages_per_replica", None,
        "Target messages per replica: replicas = ceil(load / target).",
        strict=True, required=True, also=("stream",)),
    Key("activation-messages", Kind.NUMBER, "redis", "activation_messages", 0.0,
        "Above this load the workload is active (leaves zero); at or below it may go to zero.",
        also=("stream",)),
    Key("count-in-flight", Kind.BOOLEAN, "redis", "count_in_flight", True,
        "Messages held by consumers (their processing lists) count as load."),
    Key("redis-memory-high", Kind.NUMBER, "redis", "memory_high", None,
        "High watermark of the lists' Redis `used_memory/maxmemory`: at or above it, scale "
        "up by the scale-up rule even if the backlog would not, until `redis-memory-low`.",
        strict=True, high=1.0),
    Key("redis-memory-low", Kind.NUMBER, "redis", "memory_low", None,
        "Low watermark (below `redis-memory-high`; default: the high one): memory pressure "
        "ends at or below it.", strict=True, high=1.0),
    Key("redis-stream", Kind.STREAMS, "stream", "streams", None,
        "Redis Streams read by one consumer group: a trigger of its own (with redis-list, "
        "the max of both).", head=True),
    Key("redis-consumer-group", Kind.NAME, "stream", "group", None,
        "The streams' consumer group (the sidecar's `--group`).", required=True),
    Key("redis-stream-load", Kind.CHOICE, "stream", "load", "lag+pending",
        "Load per stream: `lag` (not yet delivered to the group; a NULL lag after trimming "
        "is counted from the entries), `pending` (delivered, not acknowledged), their sum, "
        "or `length` (XLEN).", choices=STREAM_LOADS),
    Key("prometheus-url", Kind.URL, "prometheus", "url", None,
        "Prometheus server for `prometheus-query`.", schemes=("http", "https")),
    Key("prometheus-query", Kind.PROMQL, "prometheus", "query", None,
        "A second trigger: its value sized against `prometheus-target`.", head=True),
    Key("prometheus-target", Kind.NUMBER, "prometheus", "target", None,
        "Target value of the query per replica.", strict=True, required=True),
    Key("prometheus-activation", Kind.NUMBER, "prometheus", "activation", 0.0,
        "Activation level of the Prometheus trigger."),
    Key("min-replicas", Kind.INTEGER, "spec", "min_replicas", 0,
        "Lowest replica count; 0 allows scale to zero."),
    Key("max-replicas", Kind.INTEGER, "spec", "max_replicas", 100,
        "Highest replica count.", low=1),
    Key("polling-interval", Kind.DURATION, "spec", "polling_interval_s", 5.0,
        "How often the triggers are read and sized (faster than 100ms would only load "
        "Redis and the API).", low=0.1),
    Key("tolerance", Kind.NUMBER, "spec", "tolerance", 0.1,
        "No change while load/(target·replicas) is within 1 ± tolerance.", high=1.0),
    Key("scale-down-stabilization", Kind.DURATION, "spec", "scale_down_stabilization_s", 60.0,
        "Scale down only to the highest recommendation of this window."),
    Key("scale-up-max-pods", Kind.INTEGER, "scale_up", "max_pods", 10,
        "Scale-up rule: at most this many pods added…", low=1),
    Key("scale-up-max-percent", Kind.NUMBER, "scale_up", "max_percent", 100.0,
        "…or this percent, whichever is more…", strict=True),
    Key("scale-up-period", Kind.DURATION, "scale_up", "period_s", 15.0,
        "…per this period.", strict=True),
    Key("cooldown", Kind.DURATION, "spec", "cooldown_s", 120.0,
        "With min-replicas 0: how long every trigger must stay at or below activation "
        "before going to zero."),
    Key("fallback-replicas", Kind.INTEGER, "spec", "fallback_replicas", None,
        "After `failure-threshold` failed reads in a row, the fallback count "
        "(see `fallback-behavior`)."),
    Key("failure-threshold", Kind.INTEGER, "spec", "failure_threshold", 3,
        "Failed reads in a row before the fallback.", low=1),
    Key("fallback-behavior", Kind.CHOICE, "spec", "fallback_behavior",
        FallbackBehavior.CURRENT_IF_HIGHER,
        "With `fallback-replicas`: `static` holds exactly it, `current` keeps the current "
        "count, `current-if-higher` the current count but at least it (KEDA's "
        "`fallback.behavior`; healthy triggers still count).",
        choices=tuple(b.value for b in FallbackBehavior)),
    Key("paused", Kind.BOOLEAN, "spec", "paused", False, "Decide nothing, change nothing."),
    Key("paused-replicas", Kind.INTEGER, "spec", "paused_replicas", None,
        "Scale to this count and hold it, deciding nothing else (KEDA's paused-replicas; "
        "wins over `paused`)."),
    Key("drain", Kind.BOOLEAN, "spec", "drain", True,
        "Drain the sidecar consumers of the pods to remove before every scale-down."),
    Key("drain-timeout", Kind.DURATION, "spec", "drain_timeout_s", 120.0,
        "Longest wait for a drained acknowledgement; unfinished messages go back to the "
        "queue.", strict=True),
    Key("target-drain-time", Kind.DURATION, "spec", "target_drain_time_s", None,
        "Rate-aware mode: size from arrival and service rates to clear the backlog in this "
        "time.", strict=True),
    Key("schedule", Kind.SCHEDULE, "spec", "schedule", None,
        "Known load: while a window is open (from a `start` cron to the next `end` cron) "
        "keep at least `replicas` — a floor joining the triggers (the max wins), scaling up "
        "from zero before the load arrives."),
    Key("schedule-timezone", Kind.TIMEZONE, "spec", "schedule_timezone", "UTC",
        "Time zone of the `schedule` crons (daylight saving followed)."),
)  # fmt: skip
KEY_NAMES = frozenset(k.name for k in KEYS)
_BY_NAME = {k.name: k for k in KEYS}
_HEADS = {k.group: k for k in KEYS if k.head}
_TRIGGERS = {"redis": RedisTrigger, "stream": RedisStreamTrigger, "prometheus": PrometheusTrigger}
# Each group's keys, and the keys of the spec itself, listed once: walking ``KEYS`` with
# ``Key.groups`` per trigger was half of parse_spec's CPU (~25 → ~12 µs a workload: the
# start of a 10,000-workload controller parses every workload's annotations).
_GROUP_KEYS = {group: tuple(k for k in KEYS if group in k.groups) for group in _TRIGGERS}
_SPEC_KEYS = tuple(k for k in KEYS if k.group in ("spec", "scale_up"))
_HEAD_VALUE = {
    Kind.LISTS: "a list name",
    Kind.STREAMS: "a stream name",
    Kind.PROMQL: "a PromQL query",
}


def _strip_prefix(mapping: Mapping[str, str], allow_bare_keys: bool) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in mapping.items():
        if key.startswith(ANNOTATION_PREFIX):
            name = key[len(ANNOTATION_PREFIX) :]
        elif allow_bare_keys and "/" not in key:
            name = key
        else:
            continue  # not ours (other tools' annotations)
        if name in RESERVED:
            continue
        if name not in KEY_NAMES:
            close = difflib.get_close_matches(name, KEY_NAMES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise InvalidSpecError(key, value, "one of the documented keys" + hint)
        if not isinstance(value, str):
            raise InvalidSpecError(key, repr(value), "a string")
        values[name] = value
    return values


def _trigger(group: str, texts: Mapping[str, str], prefix: str) -> Any:
    """The group's trigger, or None when its head key is absent."""
    keys = _GROUP_KEYS[group]
    head = _HEADS[group]
    if head.name not in texts:
        for dependent in (k for k in keys if k.name in texts and k.group == group):
            if any(_HEADS[g].name in texts for g in dependent.also):
                continue  # a shared key, used by another trigger that is on
            what = _HEAD_VALUE[head.kind]
            alternatives = "".join(f" or {_HEADS[g].name}" for g in dependent.also)
            raise InvalidSpecError(
                prefix + head.name, None, f"{what}{alternatives} (needed by {dependent.name})"
            )
        return None
    fields: dict[str, Any] = {}
    for key in keys:
        if key.name in texts:
            fields[key.field] = key.parse(texts[key.name], prefix)
        elif key.required:
            raise InvalidSpecError(
                prefix + key.name, None, f"{key.expected} (required with {head.name})"
            )
        else:
            fields[key.field] = key.default
    _fold_server(fields, texts, prefix)
    return _TRIGGERS[group](**fields)


# The keys that say how to reach the Redis server, folded with ``redis-url`` into the
# trigger's one server string (``autoscaler.endpoint``): key name → ``RedisEndpoint`` field.
_SERVER_KEYS = {
    "redis-url": "url",
    "redis-sentinels": "sentinels",
    "redis-sentinel-master": "sentinel_master",
    "redis-sentinel-tls": "sentinel_tls",
    "redis-cluster": "cluster",
    "redis-auth-secret": "secret",
}


def _fold_server(fields: dict[str, Any], texts: Mapping[str, str], prefix: str) -> None:
    """Replace the server keys' fields by the folded ``redis_url``; check they fit."""
    if "redis_url" not in fields:
        return
    url: str | None = fields.pop("redis_url")
    sentinels = fields.pop("redis_sentinels")
    master = fields.pop("redis_sentinel_master")
    sentinel_tls = fields.pop("redis_sentinel_tls")
    cluster = fields.pop("redis_cluster")
    secret = fields.pop("redis_auth_secret")
    if sentinels and url is not None:
        raise InvalidSpecError(
            prefix + "redis-url", texts["redis-url"],
            "no redis-url with redis-sentinels (the sentinels name the master)",
        )  # fmt: skip
    if bool(sentinels) != (master is not None):
        missing, present = (
            ("redis-sentinel-master", "redis-sentinels")
            if sentinels else ("redis-sentinels", "redis-sentinel-master")
        )  # fmt: skip
        raise InvalidSpecError(prefix + missing, None, f"a value (needed by {present})")
    if sentinel_tls and not sentinels:
        raise InvalidSpecError(
            prefix + "redis-sentinel-tls", texts["redis-sentinel-tls"],
            "redis-sentinel-tls only with redis-sentinels (a redis-url says TLS by rediss://)",
        )  # fmt: skip
    if cluster:
        _check_cluster(url, sentinels, fields.get("lists") or (), texts, prefix)
        if "streams" in fields:  # the stream trigger's fields
            raise InvalidSpecError(
                prefix + "redis-stream", texts["redis-stream"], STREAMS_ON_CLUSTER
            )
    endpoint = RedisEndpoint(
        url=url, sentinels=sentinels or (), sentinel_master=master, sentinel_tls=sentinel_tls,
        cluster=cluster, secret=secret,
    )  # fmt: skip
    fields["redis_url"] = endpoint.fold()


# Why a stream trigger cannot name a Cluster (docs/streams.md, "What is not there"): its
# read and the stream sidecar's scripts touch the registry and counter keys beside each
# stream, which need not share its hash slot. Refused when parsed, not at read time.
STREAMS_ON_CLUSTER = (
    "no redis-stream with redis-cluster: stream triggers and stream consumers are not "
    "supported on Redis Cluster yet; use a standalone or Sentinel-managed Redis for streams "
    "(redis-list works on the Cluster)"
)


def _check_cluster(
    url: str | None,
    sentinels: object,
    lists: tuple[str, ...],
    texts: Mapping[str, str],
    prefix: str,
) -> None:
    """What Redis Cluster cannot honour is refused, not ignored: a database index, no
    node to start from, and a queue whose processing lists would land in other slots."""
    key = prefix + "redis-cluster"
    if sentinels or url is None:
        expected = "redis-cluster with redis-url naming a node (not sentinels)"
        raise InvalidSpecError(key, texts["redis-cluster"], expected)
    path = urlsplit(url).path.strip("/")
    if url.startswith("unix:") or path not in ("", "0"):
        raise InvalidSpecError(
            prefix + "redis-url", url,
            "a redis:// or rediss:// node URL without a database index: Redis Cluster has "
            "only database 0",
        )  # fmt: skip
    for name in lists:
        if hash_tag(name) is None:
            raise InvalidSpecError(
                prefix + "redis-list", texts.get("redis-list"),
                f"list names with a {{hash tag}} under redis-cluster: {name!r} would put its "
                f"processing lists in other slots; name it e.g. '{{{name}}}' or "
                f"'jobs:{{{name}}}' (every key of a queue embeds its name)",
            )  # fmt: skip


def parse_spec(
    mapping: Mapping[str, str], *, allow_bare_keys: bool = False, source: str = "annotations"
) -> ScalingSpec:
    """Parse a workload's annotations (or a spec file's keys) into a ``ScalingSpec``.

    ``allow_bare_keys`` accepts keys without the prefix (spec files for ``simulate`` and
    ``run --local``). Raises ``InvalidSpecError`` naming the first bad key.
    """
    texts = _strip_prefix(mapping, allow_bare_keys)
    prefix = "" if allow_bare_keys else ANNOTATION_PREFIX
    triggers = tuple(t for g in _TRIGGERS if (t := _trigger(g, texts, prefix)) is not None)
    if not triggers:
        raise InvalidSpecError(
            prefix + "redis-list",
            None,
            f"at least one trigger in the {source}: redis-list, redis-stream or prometheus-query",
        )
    groups: dict[str, dict[str, Any]] = {"spec": {}, "scale_up": {}}
    for key in _SPEC_KEYS:
        text = texts.get(key.name)
        groups[key.group][key.field] = key.default if text is None else key.parse(text, prefix)
    spec = groups["spec"]
    for name in ("min-replicas", "fallback-replicas"):  # each at most max-replicas
        value = spec[_BY_NAME[name].field]
        if value is not None and value > spec["max_replicas"]:
            raise InvalidSpecError(
                prefix + name, texts[name], f"an integer ≤ max-replicas ({spec['max_replicas']})"
            )
    _check_pairs(texts, prefix, spec, triggers)
    spec["fallback_behavior"] = FallbackBehavior(spec["fallback_behavior"])
    schedule: Schedule | None = spec["schedule"]
    if schedule is not None:  # the windows are evaluated in the schedule's own zone
        spec["schedule"] = Schedule(schedule.windows, spec["schedule_timezone"])
    return ScalingSpec(triggers=triggers, scale_up=ScaleUpRule(**groups["scale_up"]), **spec)


# (key, the key it needs): alone, the first would silently do nothing — an error unless
# it spells its own default (which ``effective_values`` prints for every spec).
_PAIRS = (
    ("schedule-timezone", "schedule"),
    ("fallback-behavior", "fallback-replicas"),
    ("redis-memory-low", "redis-memory-high"),
)


def _check_pairs(
    texts: Mapping[str, str], prefix: str, spec: Mapping[str, Any], triggers: tuple[Trigger, ...]
) -> None:
    """Keys that mean something only with another one, and watermarks in order."""
    for name, needs in _PAIRS:
        key = _BY_NAME[name]
        if name in texts and needs not in texts and key.parse(texts[name], prefix) != key.default:
            raise InvalidSpecError(prefix + needs, None, f"a value (needed by {name})")
    for trigger in triggers:
        low = getattr(trigger, "memory_low", None)
        high = getattr(trigger, "memory_high", None)
        if low is not None and high is not None and low >= high:
            raise InvalidSpecError(
                prefix + "redis-memory-low", texts["redis-memory-low"],
                f"a ratio below redis-memory-high ({high:g})",
            )  # fmt: skip


def in_namespace(spec: ScalingSpec, namespace: str) -> ScalingSpec:
    """``spec`` with its ``redis-auth-secret`` names qualified by the workload's namespace
    (a Secret is read in the workload's namespace only: two namespaces' Secrets of one
    name are two sets of credentials, hence two connection pools)."""
    triggers: list[Trigger] = []
    for trigger in spec.triggers:
        if isinstance(trigger, RedisTrigger | RedisStreamTrigger):
            endpoint = RedisEndpoint.unfold(trigger.redis_url)
            if endpoint.secret and "/" not in endpoint.secret:
                secret = f"{namespace}/{endpoint.secret}"
                folded = dataclasses.replace(endpoint, secret=secret).fold()
                trigger = dataclasses.replace(trigger, redis_url=folded)
        triggers.append(trigger)
    if triggers == list(spec.triggers):
        return spec
    return dataclasses.replace(spec, triggers=tuple(triggers))


def spec_with(triggers: tuple[Trigger, ...], **fields: Any) -> ScalingSpec:
    """A spec of ``triggers`` with every other setting at its declared default, except
    ``fields`` (``ScalingSpec`` field names; ``scale_up`` a ``ScaleUpRule``)."""
    groups: dict[str, dict[str, Any]] = {"spec": {}, "scale_up": {}}
    for key in KEYS:
        if key.group in groups:
            groups[key.group][key.field] = key.default
    defaults = {"scale_up": ScaleUpRule(**groups["scale_up"]), **groups["spec"]}
    return ScalingSpec(triggers=triggers, **{**defaults, **fields})


def effective_values(spec: ScalingSpec) -> dict[str, str | None]:
    """Every key (without prefix, in ``KEYS`` order) → the value the controller uses.

    None means unset (no such trigger, no fallback, no rate-aware mode; a URL left to the
    controller's flag). A spec from annotations has at most one trigger of each kind;
    ``parse_spec`` of the non-None values gives back ``spec``.
    """
    holders: dict[str, object | None] = {
        "spec": spec,
        "scale_up": spec.scale_up,
        "redis": spec.redis_triggers[0] if spec.redis_triggers else None,
        "stream": spec.stream_triggers[0] if spec.stream_triggers else None,
        "prometheus": spec.prometheus_triggers[0] if spec.prometheus_triggers else None,
    }
    held = {
        k.name: next((h for g in k.groups if (h := holders[g]) is not None), None) for k in KEYS
    }
    server = next((h for h in holders.values() if hasattr(h, "redis_url")), None)
    if server is not None:  # the server keys, unfolded from the trigger's server string
        endpoint = RedisEndpoint.unfold(getattr(server, "redis_url", None))
        for name, attribute in _SERVER_KEYS.items():
            value = getattr(endpoint, attribute)
            held[name] = _Unfolded(value if isinstance(value, bool) else value or None)
    return {
        k.name: None if (h := held[k.name]) is None else k.format(getattr(h, k.field)) for k in KEYS
    }


class _Unfolded:
    """Holds one unfolded server value under any field name (``effective_values``)."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __getattr__(self, name: str) -> object:
        return self.value


def reference_table() -> str:
    """The README's annotation reference, generated from ``KEYS``."""
    rows = [
        "| Annotation (`queue-autoscaler.io/…`) | Form | Default | Meaning |",
        "|---|---|---|---|",
    ]
    rows += [f"| `{k.name}` | {k.form} | {k.default_text} | {k.meaning} |" for k in KEYS]
    return "\n".join(rows)
