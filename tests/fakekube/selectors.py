"""Label and field selectors, parsed and matched as apimachinery does.

Label selector grammar (``k8s.io/apimachinery/pkg/labels``): comma-separated requirements,
each ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` (exists), ``!k``
(does not exist), ``k>n``, ``k<n``. ``!=`` and ``notin`` also match objects without the key.
A parse error is a 400 BadRequest, as on a real server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tests.fakekube.model import KubeError, Obj

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SET_RE = re.compile(rf"^(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<vals>[^()]*)\)$")
_NOT_EXISTS_RE = re.compile(rf"^!\s*(?P<key>{_KEY})$")
_BINARY_RE = re.compile(rf"^(?P<key>{_KEY})\s*(?P<op>==|!=|=|>|<)\s*(?P<val>[-A-Za-z0-9_.]*)$")
_EXISTS_RE = re.compile(rf"^(?P<key>{_KEY})$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # one of: = != in notin exists !exists > <
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key, "")
        if self.op == "exists":
            return has
        if self.op == "!exists":
            return not has
        if self.op in ("=", "in"):
            return has and value in self.values
        if self.op in ("!=", "notin"):
            return not has or value not in self.values
        if not has:  # > and <: only integer label values take part
            return False
        try:
            left, right = int(value), int(self.values[0])
        except ValueError:
            return False
        return left > right if self.op == ">" else left < right

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!exists":
            return f"!{self.key}"
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(sorted(self.values))})"
        return f"{self.key}{self.op}{self.values[0]}"


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    terms, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return [t.strip() for t in terms]


def _parse_term(term: str) -> Requirement:
    if m := _SET_RE.match(term):
        values = tuple(v.strip() for v in m["vals"].split(",") if v.strip())
        return Requirement(m["key"], m["op"], values)
    if m := _NOT_EXISTS_RE.match(term):
        return Requirement(m["key"], "!exists")
    if m := _BINARY_RE.match(term):
        op = "=" if m["op"] == "==" else m["op"]
        if op in (">", "<") and not re.fullmatch(r"-?\d+", m["val"]):
            raise KubeError(400, f"unable to parse requirement: for '{op}' operator, the value "
                                 f"must be an integer: {term}")
        return Requirement(m["key"], op, (m["val"],))
    if m := _EXISTS_RE.match(term):
        return Requirement(m["key"], "exists")
    raise KubeError(400, f"unable to parse requirement: invalid label selector: {term!r}")


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    if not text or not text.strip():
        return ()
    return tuple(_parse_term(term) for term in _split_terms(text.strip()))


def selector_from_dict(selector: Obj | None) -> tuple[Requirement, ...]:
    """A metav1.LabelSelector (matchLabels / matchExpressions) as requirements."""
    if not selector:
        return ()
    reqs = [Requirement(k, "=", (str(v),))
            for k, v in (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in selector.get("matchExpressions") or []:
        reqs.append(Requirement(expr["key"], ops[expr["operator"]],
                                tuple(expr.get("values") or ())))
    return tuple(sorted(reqs, key=lambda r: r.key))


def format_selector(selector: Obj | None) -> str:
    """metav1.LabelSelectorAsSelector(sel).String(): what Scale.status.selector holds."""
    return ",".join(str(r) for r in selector_from_dict(selector))


def matches_labels(reqs: tuple[Requirement, ...], labels: Mapping[str, str]) -> bool:
    return all(r.matches(labels) for r in reqs)


# ---- field selectors -----------------------------------------------------------------

FieldPredicate = Callable[[Obj], bool]


def _field_value(obj: Obj, path: str) -> str:
    value: object = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_field_selector(text: str | None, allowed: tuple[str, ...]) -> FieldPredicate:
    """Equality field selector over ``metadata.name``, ``metadata.namespace`` + ``allowed``."""
    if not text or not text.strip():
        return lambda _obj: True
    supported = ("metadata.name", "metadata.namespace", *allowed)
    checks: list[tuple[str, bool, str]] = []
    for term in text.split(","):
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|!=|=)\s*(.*?)\s*$", term)
        if not m:
            raise KubeError(400, f"invalid selector: '{text}'; can't understand '{term}'")
        key, op, value = m.groups()
        if key not in supported:
            raise KubeError(400, f'field label not supported: {key}')
        checks.append((key, op != "!=", value))

    def predicate(obj: Obj) -> bool:
        return all((_field_value(obj, k) == v) == eq for k, eq, v in checks)

    return predicate


def field_selector_name(text: str | None) -> str | None:
    """The name pinned by ``metadata.name=x`` (RBAC treats it as a named request)."""
    for term in (text or "").split(","):
        m = re.match(r"^\s*metadata\.name\s*(==|=)\s*(.*?)\s*$", term)
        if m:
            return m.group(2)
    return None
