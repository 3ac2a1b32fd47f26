"""The three PATCH flavours the API server accepts for built-in types.

- JSON merge patch (RFC 7386): objects merge recursively, ``null`` deletes, lists replace.
- Strategic merge patch: a merge patch, except that lists of objects with a known merge key
  (containers by ``name``, conditions by ``type``, ...) merge item by item, and the
  ``$patch: delete`` / ``$patch: replace`` directives. Enough for metadata, replicas and
  pod templates; not the full schema-driven algorithm.
- JSON patch (RFC 6902): add, remove, replace, move, copy, test; JSON pointers with the
  ``~0`` (``~``) and ``~1`` (``/``) escapes, which annotation keys need.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.fakekube.model import KubeError, Obj

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"

# Strategic-merge keys of the list fields we are likely to see.
_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
    "volumeMounts": "mountPath", "ports": "containerPort", "conditions": "type",
    "ownerReferences": "uid", "imagePullSecrets": "name", "tolerations": "key",
}


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue  # $setElementOrder & co: ordering hints only
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in _MERGE_KEYS:
            result[key] = _merge_list(result.get(key), value, _MERGE_KEYS[key])
        else:
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    return result


def _merge_list(target: Any, patch: list[Any], key: str) -> list[Any]:
    items = list(target) if isinstance(target, list) else []
    if not all(isinstance(p, dict) and key in p for p in patch):
        return copy.deepcopy(patch)
    for item in patch:
        index = next((i for i, t in enumerate(items)
                      if isinstance(t, dict) and t.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                items.pop(index)
        elif index is None:
            items.append(copy.deepcopy(item))
        else:
            items[index] = strategic_merge_patch(items[index], item)
    return items


# ---- RFC 6902 ---------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise KubeError(422, f"invalid JSON pointer {path!r}: must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, for_add: bool = False) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit():
        raise KubeError(422, f"invalid array index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not for_add):
        raise KubeError(422, f"array index {index} out of bounds")
    return index


def _parent(doc: Any, tokens: list[str], op: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token)]
        else:
            raise KubeError(422, f"{op} operation does not apply: doc is missing path: "
                                 f"/{'/'.join(tokens)}")
    return node


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, "get")
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last)]
    raise KubeError(422, f"doc is missing key: {path}")


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    parent = _parent(doc, tokens, "remove")
    last = tokens[-1] if tokens else ""
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last))
    raise KubeError(422, f"Unable to remove nonexistent key: {last}: missing value")


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, "add")
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, for_add=True), value)
    else:
        raise KubeError(422, f"add operation does not apply: doc is missing path: {path}")
    return doc


def json_patch(target: Obj, ops: Any) -> Obj:
    if not isinstance(ops, list):
        raise KubeError(400, "json patch must be a list of operations")
    doc: Any = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise KubeError(400, f"invalid json patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)  # must exist
            if _pointer(path):
                _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            doc = _add(doc, path, _remove(doc, op["from"]))
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise KubeError(422, f"testing value {path} failed: test failed")
        else:
            raise KubeError(400, f"unexpected json patch operation {kind!r}")
    if not isinstance(doc, dict):
        raise KubeError(422, "json patch produced a non-object document")
    return doc


def apply_patch(content_type: str, target: Obj, patch: Any) -> Obj:
    """Apply ``patch`` (already JSON-decoded) of the given media type to a copy of ``target``."""
    media = content_type.split(";")[0].strip().lower()
    if media == JSON_PATCH:
        return json_patch(target, patch)
    if not isinstance(patch, dict):
        raise KubeError(400, f"{media} patch must be a JSON object")
    if media == MERGE:
        result = merge_patch(target, patch)
    elif media == STRATEGIC:
        result = strategic_merge_patch(target, patch)
    else:
        raise KubeError(415, f"the body of the request was in an unknown format - accepted "
                             f"media types include: {JSON_PATCH}, {MERGE}, {STRATEGIC}")
    assert isinstance(result, dict)
    return result
