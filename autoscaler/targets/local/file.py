"""The ``run --local`` file: workloads whose replicas are local processes.

A YAML list (or a mapping with the key ``workloads`` holding the list); each item is one
workload::

    - name: cities                      # replica ids: cities-<run id>-1, -2, … (see target)
      redis-list: jobs                  # the annotation keys, without the prefix
      messages-per-replica: 10
      max-replicas: 8
      command: autoscaler consume --queue {queue} --redis-url {redis_url} --id {replica_id} ...
      env: {LOG_LEVEL: info}            # optional; values may use the placeholders too
      replicas: 1                       # optional: the count at start (default min-replicas)

``command`` is a list of arguments or a string split like a shell would (no shell runs
it). Placeholders: ``{redis_url}`` (the trigger's ``redis-url``, else ``--redis-url``),
``{queue}`` (the first ``redis-list``), ``{replica_id}``; any other ``{word}`` is an
error, other braces are left alone. Spec values are passed to ``config.parse_spec`` as
the text written, so a file and the annotations it mirrors parse the same way.

Every problem raises ``InputError`` as ``FILE:LINE: …`` naming the key.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from autoscaler.annotations import parse_spec
from autoscaler.errors import InputError, InvalidSpecError
from autoscaler.policy import ScalingSpec

PLACEHOLDERS = ("redis_url", "queue", "replica_id")
OWN_KEYS = frozenset({"name", "command", "env", "replicas"})
# A workload name becomes the prefix of consumer ids: keep it DNS-label-like.
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class LocalWorkload:
    """One workload of a ``--local`` file (or of the demo), validated."""

    name: str
    spec_keys: Mapping[str, str]  # bare annotation keys → text as written
    spec: ScalingSpec
    command: tuple[str, ...]
    env: Mapping[str, str]
    initial_replicas: int | None = None  # None: min-replicas
    where: str = ""  # FILE:LINE of the workload, for messages

    @property
    def queue(self) -> str:
        """The first Redis list ("" without a Redis trigger): the ``{queue}`` placeholder."""
        triggers = self.spec.redis_triggers
        return triggers[0].lists[0] if triggers else ""


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace the known ``{placeholder}``s; every other brace stays as written."""
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def load_local_file(path: str) -> list[LocalWorkload]:
    """Read and validate a ``--local`` file; ``InputError`` naming file, line and key."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read: {e}") from None
    return parse_local_file(text, path)


def parse_local_file(text: str, source: str) -> list[LocalWorkload]:
    """Parse the text of a ``--local`` file; ``source`` names it in errors."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise InputError(f"{source}{line}: not valid YAML: {problem}") from None
    items = _workload_nodes(root, source)
    workloads = [_workload(node, source) for node in items]
    seen: dict[str, str] = {}
    for w in workloads:
        if w.name in seen:
            raise InputError(f"{w.where}: key name: {w.name!r} is already used at {seen[w.name]}")
        seen[w.name] = w.where
    return workloads


def _at(source: str, node: Node) -> str:
    return f"{source}:{node.start_mark.line + 1}"


def _workload_nodes(root: Node | None, source: str) -> list[Node]:
    if root is None:
        raise InputError(f"{source}: empty: expected a list of workloads")
    if isinstance(root, MappingNode):
        found = [v for k, v in root.value if isinstance(k, ScalarNode) and k.value == "workloads"]
        if not found or len(root.value) != 1:
            raise InputError(f"{_at(source, root)}: expected a list of workloads, or `workloads:`")
        root = found[0]
    if not isinstance(root, SequenceNode) or not root.value:
        raise InputError(f"{_at(source, root)}: expected a non-empty list of workloads")
    return list(root.value)


def _pairs(node: Node, source: str) -> dict[str, tuple[ScalarNode, Node]]:
    """A mapping node's items by key text, refusing non-scalar and duplicate keys."""
    if not isinstance(node, MappingNode):
        raise InputError(f"{_at(source, node)}: expected a mapping (key: value)")
    out: dict[str, tuple[ScalarNode, Node]] = {}
    for key, value in node.value:
        if not isinstance(key, ScalarNode):
            raise InputError(f"{_at(source, key)}: keys must be plain strings")
        if key.value in out:
            first = out[key.value][0].start_mark.line + 1
            raise InputError(
                f"{_at(source, key)}: key {key.value}: duplicate (first on line {first})"
            )
        out[key.value] = (key, value)
    return out


def _scalar(key: str, node: Node, source: str) -> str:
    if not isinstance(node, ScalarNode):
        raise InputError(f"{_at(source, node)}: key {key}: expected a single value")
    return str(node.value)


def _workload(node: Node, source: str) -> LocalWorkload:
    pairs = _pairs(node, source)
    if "name" not in pairs:
        raise InputError(f"{_at(source, node)}: key name: missing")
    name = _scalar("name", pairs["name"][1], source)
    if not NAME_RE.match(name):
        raise InputError(
            f"{_at(source, pairs['name'][1])}: key name: {name!r}: expected lowercase letters, "
            "digits and '-' (at most 52), starting and ending with a letter or digit"
        )
    spec_keys = {k: _scalar(k, v, source) for k, (_, v) in pairs.items() if k not in OWN_KEYS}
    spec = _spec(spec_keys, pairs, node, source)
    if "command" not in pairs:
        raise InputError(f"{_at(source, node)}: key command: missing (how to start one replica)")
    command = _command(pairs["command"][1], source)
    env = _env(pairs["env"][1], source) if "env" in pairs else {}
    initial = _replicas(pairs["replicas"][1], spec, source) if "replicas" in pairs else None
    workload = LocalWorkload(name, spec_keys, spec, command, env, initial, _at(source, node))
    if not workload.queue and any("{queue}" in part for part in command):
        raise InputError(
            f"{_at(source, pairs['command'][1])}: key command: {{queue}} needs a redis-list"
        )
    return workload


def _spec(
    keys: Mapping[str, str], pairs: Mapping[str, tuple[ScalarNode, Node]], node: Node, source: str
) -> ScalingSpec:
    try:
        return parse_spec(keys, allow_bare_keys=True, source=f"workload in {source}")
    except InvalidSpecError as e:
        found = pairs.get(e.key)
        where = _at(source, found[1]) if found else _at(source, node)
        shown = "missing" if e.value is None else repr(e.value)
        raise InputError(f"{where}: key {e.key}: {shown}: expected {e.expected}") from None


def _command(node: Node, source: str) -> tuple[str, ...]:
    if isinstance(node, SequenceNode):
        parts = tuple(_scalar("command", item, source) for item in node.value)
    else:
        text = _scalar("command", node, source)
        try:
            parts = tuple(shlex.split(text))
        except ValueError as e:
            raise InputError(f"{_at(source, node)}: key command: cannot split: {e}") from None
    if not parts or not parts[0]:
        raise InputError(f"{_at(source, node)}: key command: expected a program and its arguments")
    for part in parts:
        _check_placeholders("command", part, node, source)
    return parts


def _check_placeholders(key: str, text: str, node: Node, source: str) -> None:
    for match in _PLACEHOLDER_RE.finditer(text):
        if match.group(1) not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise InputError(
                f"{_at(source, node)}: key {key}: unknown placeholder {match.group(0)} "
                f"(known: {known})"
            )


def _env(node: Node, source: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, (key, value) in _pairs(node, source).items():
        if not ENV_NAME_RE.match(name):
            raise InputError(f"{_at(source, key)}: key env: {name!r} is not a variable name")
        env[name] = _scalar(f"env.{name}", value, source)
        _check_placeholders(f"env.{name}", env[name], value, source)
    return env


def _replicas(node: Node, spec: ScalingSpec, source: str) -> int:
    text = _scalar("replicas", node, source)
    if not text.isdigit() or not spec.min_replicas <= int(text) <= spec.max_replicas:
        raise InputError(
            f"{_at(source, node)}: key replicas: {text!r}: expected an integer from "
            f"min-replicas ({spec.min_replicas}) to max-replicas ({spec.max_replicas})"
        )
    return int(text)
