"""Annotations → ``ScalingSpec``, with errors that name the key, the value and the form.

A workload opts in with the label ``queue-autoscaler.io/enabled: "true"``; its spec is the
set of annotations under the same prefix, documented key by key in ``KEYS`` (the README's
reference table is generated from it and a test keeps the two equal). Unknown keys under
the prefix are errors — a typo must not be silently ignored (KEDA #4880). Credentials
never come from annotations: a URL carrying a user or password is rejected.

Durations accept ``90``, ``90s``, ``1.5s``, ``500ms``, ``5m``, ``1h30m``.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from autoscaler.errors import InvalidSpecError
from autoscaler.policy.spec import PrometheusTrigger, RedisTrigger, ScaleUpRule, ScalingSpec

PREFIX = "queue-autoscaler.io/"
ENABLED_LABEL = PREFIX + "enabled"
STATUS_ANNOTATION = PREFIX + "status"  # written by the controller, never read as spec
# Keys under the prefix that are not part of the spec (written by us or by the user as a label).
RESERVED = frozenset({"status", "enabled"})


@dataclass(frozen=True)
class Key:
    """One annotation: its name (without prefix), form, default and meaning."""

    name: str
    form: str
    default: str
    meaning: str


KEYS: tuple[Key, ...] = (
    Key(
        "redis-list",
        "list names, comma-separated",
        "—",
        "Redis lists whose total length is the backlog (one trigger).",
    ),
    Key(
        "redis-url",
        "`redis://` or `rediss://` URL, no credentials",
        "controller's `--redis-url`",
        "Redis server of the lists. Credentials come from the controller's environment.",
    ),
    Key(
        "messages-per-replica",
        "number > 0",
        "— (required with `redis-list`)",
        "Target messages per replica: replicas = ceil(load / target).",
    ),
    Key(
        "activation-messages",
        "number ≥ 0",
        "0",
        "Above this load the workload is active (leaves zero); at or below it may go to zero.",
    ),
    Key(
        "count-in-flight",
        "`true`/`false`",
        "true",
        "Messages held by consumers (their processing lists) count as load.",
    ),
    Key(
        "prometheus-url",
        "`http(s)://` URL, no credentials",
        "controller's `--prometheus-url`",
        "Prometheus server for `prometheus-query`.",
    ),
    Key(
        "prometheus-query",
        "PromQL returning a scalar or one sample",
        "—",
        "A second trigger: its value sized against `prometheus-target`.",
    ),
    Key(
        "prometheus-target",
        "number > 0",
        "— (required with `prometheus-query`)",
        "Target value of the query per replica.",
    ),
    Key("prometheus-activation", "number ≥ 0", "0", "Activation level of the Prometheus trigger."),
    Key("min-replicas", "integer ≥ 0", "0", "Lowest replica count; 0 allows scale to zero."),
    Key("max-replicas", "integer ≥ 1", "100", "Highest replica count."),
    Key("polling-interval", "duration", "5s", "How often the triggers are read and sized."),
    Key(
        "tolerance",
        "number in [0, 1)",
        "0.1",
        "No change while load/(target·replicas) is within 1 ± tolerance.",
    ),
    Key(
        "scale-down-stabilization",
        "duration",
        "60s",
        "Scale down only to the highest recommendation of this window.",
    ),
    Key("scale-up-max-pods", "integer ≥ 1", "10", "Scale-up rule: at most this many pods added…"),
    Key("scale-up-max-percent", "number > 0", "100", "…or this percent, whichever is more…"),
    Key("scale-up-period", "duration", "15s", "…per this period."),
    Key(
        "cooldown",
        "duration",
        "120s",
        "With min-replicas 0: how long every trigger must stay at or below activation "
        "before going to zero.",
    ),
    Key(
        "fallback-replicas",
        "integer ≥ 0",
        "unset",
        "After `failure-threshold` failed reads in a row, hold at least this many replicas.",
    ),
    Key("failure-threshold", "integer ≥ 1", "3", "Failed reads in a row before the fallback."),
    Key("paused", "`true`/`false`", "false", "Decide nothing, change nothing."),
    Key(
        "drain",
        "`true`/`false`",
        "true",
        "Drain the sidecar consumers of the pods to remove before every scale-down.",
    ),
    Key(
        "drain-timeout",
        "duration",
        "120s",
        "Longest wait for a drained acknowledgement; unfinished messages go back to the queue.",
    ),
    Key(
        "target-drain-time",
        "duration",
        "unset",
        "Rate-aware mode: size from arrival and service rates to clear the backlog in this time.",
    ),
)
KEY_NAMES = frozenset(k.name for k in KEYS)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
T = TypeVar("T")
_LIST_NAME = re.compile(r"^[^\s,]{1,512}$")


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


class _Reader:
    """Reads typed values out of the annotation map, raising InvalidSpecError on bad ones."""

    def __init__(self, values: Mapping[str, str], prefix: str) -> None:
        self.values = values
        self.prefix = prefix

    def raw(self, name: str) -> str | None:
        return self.values.get(name)

    def _get(
        self, name: str, parse: Callable[[str], T], form: str, ok: Callable[[T], bool], default: T
    ) -> T:
        text = self.values.get(name)
        if text is None:
            return default
        try:
            value = parse(text.strip())
        except ValueError:
            raise InvalidSpecError(self.prefix + name, text, form) from None
        if not ok(value):
            raise InvalidSpecError(self.prefix + name, text, form)
        return value

    def number(
        self,
        name: str,
        default: float,
        *,
        low: float = 0.0,
        strict: bool = False,
        high: float = math.inf,
    ) -> float:
        form = f"a number {'>' if strict else '≥'} {low:g}" + (
            f" and < {high:g}" if high < math.inf else ""
        )
        return self._get(
            name,
            float,
            form,
            lambda v: math.isfinite(v) and (v > low if strict else v >= low) and v < high,
            default,
        )

    def integer(self, name: str, default: int, *, low: int = 0) -> int:
        return self._get(name, int, f"an integer ≥ {low}", lambda v: low <= v <= 2**31 - 1, default)

    def duration(self, name: str, default: float, *, allow_zero: bool = False) -> float:
        form = "a duration such as 90, 90s, 500ms, 5m, 1h30m" + ("" if allow_zero else " (> 0)")
        return self._get(
            name,
            parse_duration,
            form,
            lambda v: math.isfinite(v) and (v >= 0 if allow_zero else v > 0),
            default,
        )

    def boolean(self, name: str, default: bool) -> bool:
        def parse(text: str) -> bool:
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"

        return self._get(name, parse, "true or false", lambda v: True, default)

    def url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        text = self.values.get(name)
        if text is None:
            return None
        form = f"a {' or '.join(s + '://' for s in schemes)} URL without credentials"
        try:
            parts = urlsplit(text.strip())
            parts.port  # noqa: B018  (raises ValueError on a bad port)
        except ValueError:
            raise InvalidSpecError(self.prefix + name, "<unparseable URL>", form) from None
        if parts.password is not None or parts.username is not None:
            # Never echo the value: it holds a secret.
            raise InvalidSpecError(
                self.prefix + name,
                "<redacted: contains credentials>",
                form + " (credentials come from the controller's environment)",
            )
        if parts.scheme not in schemes or not (parts.hostname or parts.scheme == "unix"):
            raise InvalidSpecError(self.prefix + name, text, form)
        return text.strip()


def _strip_prefix(mapping: Mapping[str, str], allow_bare_keys: bool) -> tuple[dict[str, str], str]:
    values: dict[str, str] = {}
    for key, value in mapping.items():
        if key.startswith(PREFIX):
            name = key[len(PREFIX) :]
        elif allow_bare_keys and "/" not in key:
            name = key
        else:
            continue  # not ours (other tools' annotations)
        if name in RESERVED:
            continue
        if name not in KEY_NAMES:
            close = difflib.get_close_matches(name, KEY_NAMES, n=1)
            hint = (
                f"one of the documented keys (did you mean {close[0]}?)"
                if close
                else ("one of the documented keys")
            )
            raise InvalidSpecError(key, value, hint)
        if not isinstance(value, str):
            raise InvalidSpecError(key, repr(value), "a string")
        values[name] = value
    return values, PREFIX if not allow_bare_keys else ""


def _redis_trigger(r: _Reader) -> RedisTrigger | None:
    lists_text = r.raw("redis-list")
    if lists_text is None:
        for dependent in (
            "messages-per-replica",
            "activation-messages",
            "count-in-flight",
            "redis-url",
        ):
            if r.raw(dependent) is not None:
                raise InvalidSpecError(
                    r.prefix + "redis-list", None, f"a list name (needed by {dependent})"
                )
        return None
    lists = tuple(part.strip() for part in lists_text.split(","))
    if (
        not lists
        or not all(_LIST_NAME.match(name) for name in lists)
        or len(set(lists)) != len(lists)
    ):
        raise InvalidSpecError(
            r.prefix + "redis-list",
            lists_text,
            "distinct list names separated by commas, no spaces inside a name",
        )
    if r.raw("messages-per-replica") is None:
        raise InvalidSpecError(
            r.prefix + "messages-per-replica", None, "a number > 0 (required with redis-list)"
        )
    return RedisTrigger(
        lists=lists,
        messages_per_replica=r.number("messages-per-replica", 0.0, strict=True),
        redis_url=r.url("redis-url", ("redis", "rediss", "unix")),
        activation_messages=r.number("activation-messages", 0.0),
        count_in_flight=r.boolean("count-in-flight", True),
    )


def _prometheus_trigger(r: _Reader) -> PrometheusTrigger | None:
    query = r.raw("prometheus-query")
    if query is None:
        for dependent in ("prometheus-target", "prometheus-activation", "prometheus-url"):
            if r.raw(dependent) is not None:
                raise InvalidSpecError(
                    r.prefix + "prometheus-query", None, f"a PromQL query (needed by {dependent})"
                )
        return None
    if not query.strip():
        raise InvalidSpecError(r.prefix + "prometheus-query", query, "a non-empty PromQL query")
    if r.raw("prometheus-target") is None:
        raise InvalidSpecError(
            r.prefix + "prometheus-target", None, "a number > 0 (required with prometheus-query)"
        )
    return PrometheusTrigger(
        query=query.strip(),
        target=r.number("prometheus-target", 0.0, strict=True),
        url=r.url("prometheus-url", ("http", "https")),
        activation=r.number("prometheus-activation", 0.0),
    )


def parse_spec(
    mapping: Mapping[str, str], *, allow_bare_keys: bool = False, source: str = "annotations"
) -> ScalingSpec:
    """Parse a workload's annotations (or a spec file's keys) into a ``ScalingSpec``.

    ``allow_bare_keys`` accepts keys without the prefix (spec files for ``simulate`` and
    ``run --local``). Raises ``InvalidSpecError`` naming the first bad key.
    """
    values, prefix = _strip_prefix(mapping, allow_bare_keys)
    r = _Reader(values, prefix)
    triggers = tuple(t for t in (_redis_trigger(r), _prometheus_trigger(r)) if t is not None)
    if not triggers:
        raise InvalidSpecError(
            prefix + "redis-list",
            None,
            f"at least one trigger in the {source}: redis-list or prometheus-query",
        )
    min_replicas = r.integer("min-replicas", 0)
    max_replicas = r.integer("max-replicas", 100, low=1)
    if min_replicas > max_replicas:
        raise InvalidSpecError(
            prefix + "min-replicas",
            values["min-replicas"],
            f"an integer ≤ max-replicas ({max_replicas})",
        )
    fallback = r.integer("fallback-replicas", -1)
    if fallback > max_replicas:
        raise InvalidSpecError(
            prefix + "fallback-replicas",
            values["fallback-replicas"],
            f"an integer ≤ max-replicas ({max_replicas})",
        )
    target_drain = r.duration("target-drain-time", 0.0)
    return ScalingSpec(
        triggers=triggers,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        polling_interval_s=r.duration("polling-interval", 5.0),
        tolerance=r.number("tolerance", 0.1, high=1.0),
        scale_down_stabilization_s=r.duration("scale-down-stabilization", 60.0, allow_zero=True),
        scale_up=ScaleUpRule(
            max_pods=r.integer("scale-up-max-pods", 10, low=1),
            max_percent=r.number("scale-up-max-percent", 100.0, strict=True),
            period_s=r.duration("scale-up-period", 15.0),
        ),
        cooldown_s=r.duration("cooldown", 120.0, allow_zero=True),
        fallback_replicas=None if fallback < 0 else fallback,
        failure_threshold=r.integer("failure-threshold", 3, low=1),
        paused=r.boolean("paused", False),
        drain=r.boolean("drain", True),
        drain_timeout_s=r.duration("drain-timeout", 120.0),
        target_drain_time_s=target_drain or None,
    )


def reference_table() -> str:
    """The README's annotation reference, generated from ``KEYS``."""
    rows = [
        "| Annotation (`queue-autoscaler.io/…`) | Form | Default | Meaning |",
        "|---|---|---|---|",
    ]
    rows += [f"| `{k.name}` | {k.form} | {k.default} | {k.meaning} |" for k in KEYS]
    return "\n".join(rows)
