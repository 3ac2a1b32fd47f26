"""The HTTP face of the fake: routing, discovery, watch streams, faults and recording.

One catch-all route parses the path the way the API server does (``rbac.request_info``)
and hands the operation to ``Api``. A middleware records every request and answers
injected faults before the handler runs. Watches stream newline-delimited JSON events;
an expired resourceVersion is reported in-stream (HTTP 200, then an ERROR event carrying
a 410 ``Status``), as the real server does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakekube import resources, tables
from tests.fakekube.api import Api, scale_of
from tests.fakekube.model import KubeError, Obj, deep, labels_of, status_body
from tests.fakekube.rbac import TRUE_VALUES, RecordedRequest, request_info
from tests.fakekube.resources import ResourceType
from tests.fakekube.selectors import matches_labels, parse_field_selector, parse_label_selector
from tests.fakekube.store import Store, Watcher, WatchEvent

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RECORD = web.RequestKey("fakekube.record", RecordedRequest)


@dataclass
class Fault:
    """The next ``count`` requests matching ``methods`` / ``path_contains`` fail with ``status``."""

    status: int
    count: int
    methods: frozenset[str] | None = None  # HTTP methods or RBAC verbs, case-insensitive
    path_contains: str | None = None
    retry_after_s: int = 1

    def matches(self, record: RecordedRequest) -> bool:
        if self.methods is not None and not {record.method, record.verb.upper()} & self.methods:
            return False
        return self.path_contains is None or self.path_contains in record.path

    def response(self, record: RecordedRequest) -> web.Response:
        reasons = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError",
                   503: "ServiceUnavailable", 504: "Timeout"}
        reason = reasons.get(self.status, "InternalError")
        messages = {
            409: f'Operation cannot be fulfilled on {record.resource} "{record.name}": the '
                 "object has been modified; please apply your changes to the latest version "
                 "and try again",
            429: "Too many requests, please try again later.",
        }
        message = messages.get(self.status, "an error on the server (fakekube fault injection)")
        details: Obj = {"name": record.name, "kind": record.resource, "group": record.api_group}
        headers = {}
        if self.status == 429:
            details["retryAfterSeconds"] = self.retry_after_s
            headers["Retry-After"] = str(self.retry_after_s)
        return _json(status_body(self.status, reason, message, details), self.status, headers)


def _json(body: Obj, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, headers=headers,
                        content_type="application/json")


class Frontend:
    def __init__(self, api: Api, store: Store) -> None:
        self.api = api
        self.store = store
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self.server_address = "127.0.0.1:0"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=16 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        record = request_info(request.method, request.path, request.query)
        self.requests.append(record)
        request[RECORD] = record
        fault = next((f for f in self.faults if f.matches(record)), None)
        if fault is not None:
            fault.count -= 1
            if fault.count <= 0:
                self.faults.remove(fault)
            record.status = fault.status
            return fault.response(record)
        try:
            response = await handler(request)
        except KubeError as e:
            response = _json(e.status(), e.code)
        except web.HTTPException:
            raise
        except Exception as e:  # a bug in the fake: still answer like an API server
            response = _json(status_body(500, "InternalError", f"fakekube: {e!r}"), 500)
        record.status = response.status
        return response

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.path.strip("/")
        discovery = self._discovery(path)
        if discovery is not None:
            return _json(discovery)
        record = request[RECORD]
        if not record.is_resource:
            raise KubeError(404, "the server could not find the requested resource")
        rt = resources.lookup(record.api_group, record.api_version, record.resource)
        unscoped = rt.namespaced and not record.namespace and record.verb not in ("list", "watch")
        if unscoped or (record.subresource and record.subresource not in rt.subresources):
            raise KubeError(404, "the server could not find the requested resource")
        body = await self._body(request, record)
        return await self._operate(request, record, rt, body)

    def _discovery(self, path: str) -> Obj | None:
        parts = [p for p in path.split("/") if p]
        try:
            if path == "/version":
                return resources.VERSION_INFO
            if path in ("/healthz", "/livez", "/readyz"):
                return {"status": "ok"}
            if path == "/api":
                return resources.api_versions(self.server_address)
            if path == "/apis":
                return resources.api_group_list()
            if parts == ["api", "v1"]:
                return resources.api_resource_list("", "v1")
            if parts[:1] == ["apis"] and len(parts) == 2:
                return resources.api_group(parts[1])
            if parts[:1] == ["apis"] and len(parts) == 3:
                return resources.api_resource_list(parts[1], parts[2])
        except KeyError as e:
            raise KubeError(404, "the server could not find the requested resource") from e
        return None

    async def _body(self, request: web.Request, record: RecordedRequest) -> Any:
        if request.method not in ("POST", "PUT", "PATCH", "DELETE") or not request.can_read_body:
            return None
        raw = await request.read()
        if not raw.strip():
            return None
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise KubeError(400, f"the body of the request could not be decoded: {e}") from e
        record.body = body
        return body

    async def _operate(self, request: web.Request, record: RecordedRequest, rt: ResourceType,
                       body: Any) -> web.StreamResponse:
        ns, name, sub, q = record.namespace, record.name, record.subresource, request.query
        if rt.plural == "namespaces":
            ns = ""
        dry_run = q.get("dryRun") == "All"
        verb = record.verb
        if verb == "watch":
            return await self._watch(request, rt, ns or None)
        as_table = tables.wants_table(request.headers.get("Accept", ""))
        if verb == "list":
            found = self.api.list(
                rt, ns or None, label_selector=q.get("labelSelector"),
                field_selector=q.get("fieldSelector"), limit=int(q.get("limit") or 0),
                token=q.get("continue"))
            return _json(self._table(rt, found["items"]) if as_table else found)
        if verb == "get" and sub == "scale":
            return _json(scale_of(rt, self.api.stored(rt, ns, name)))
        if verb == "get":
            obj = self.api.get(rt, ns, name)
            return _json(self._table(rt, [obj]) if as_table and not sub else obj)
        if verb == "create" and not name:
            return _json(self.api.create(rt, ns, body, dry_run=dry_run), 201)
        if verb == "update":
            return _json(self.api.update(rt, ns, name, body, subresource=sub, dry_run=dry_run))
        if verb == "patch":
            content_type = request.headers.get("Content-Type", "")
            return _json(self.api.patch(rt, ns, name, content_type, body, subresource=sub,
                                        dry_run=dry_run))
        if verb == "delete" and not sub:
            options = dict(body or {})
            if "propagationPolicy" in q:
                options["propagationPolicy"] = q["propagationPolicy"]
            return _json(self.api.delete(rt, ns, name, options))
        if verb == "deletecollection":
            return _json(self.api.delete_collection(rt, ns or None, q.get("labelSelector"),
                                                    q.get("fieldSelector")))
        raise KubeError(405, f"the server does not allow this method on the requested resource "
                             f"({request.method} {request.path})")

    def _table(self, rt: ResourceType, objects: list[Obj]) -> Obj:
        return tables.table(rt.kind, objects, str(self.store.rv), self.store.clock.now())

    # ---- watch ----------------------------------------------------------------------------

    async def _watch(self, request: web.Request, rt: ResourceType,
                     namespace: str | None) -> web.StreamResponse:
        q = request.query
        reqs = parse_label_selector(q.get("labelSelector"))
        fields = parse_field_selector(q.get("fieldSelector"), rt.field_labels)
        bookmarks = q.get("allowWatchBookmarks") in TRUE_VALUES
        # Like the API server, 0 means "no timeout of yours"; unlike it, fractions are
        # accepted, so that tests can let a watch time out in milliseconds.
        try:
            timeout_s = float(q.get("timeoutSeconds") or 0) or None
        except ValueError as e:
            raise KubeError(400, f"invalid timeoutSeconds: {q['timeoutSeconds']!r}") from e

        def selected(obj: Obj | None) -> bool:
            return obj is not None and matches_labels(reqs, labels_of(obj)) and fields(obj)

        rv_text = q.get("resourceVersion") or ""
        if rv_text and not rv_text.isdigit():
            raise KubeError(400, f"Invalid value: {rv_text!r}: resourceVersion must be an integer")
        # Register before reading the state: no await in between, so nothing is missed.
        watcher = self.store.watch(rt.storage, namespace)
        try:
            backlog: list[tuple[str, Obj]] = []
            error: Obj | None = None
            if rv_text in ("", "0"):  # "start at most recent": the current state as ADDED
                backlog = [("ADDED", o) for o in self.store.items(rt.storage, namespace)
                           if selected(o)]
            else:
                try:
                    events = self.store.events_since(int(rv_text), rt.storage, namespace)
                except KubeError as e:
                    error = e.status()
                    events = []
                backlog = [t for e in events if (t := _translate(e, selected)) is not None]
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            try:
                for kind, obj in backlog:
                    await _send(response, kind, rt.output(deep(obj)))
                if error is not None:
                    await _send(response, "ERROR", error)
                else:
                    await self._stream(response, rt, watcher, selected, bookmarks, timeout_s)
                await response.write_eof()
            except ConnectionResetError:
                pass  # the client went away: nothing left to tell it
            return response
        finally:
            self.store.unwatch(watcher)

    async def _stream(self, response: web.StreamResponse, rt: ResourceType, watcher: Watcher,
                      selected: Callable[[Obj | None], bool], bookmarks: bool,
                      timeout_s: float | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    event = await watcher.queue.get()
            except TimeoutError:
                return
            if event is None:
                return
            if event.type == "BOOKMARK":
                if bookmarks:
                    await _send(response, "BOOKMARK", {
                        "kind": rt.kind, "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": str(event.rv)}})
                continue
            translated = _translate(event, selected)
            if translated is not None:
                await _send(response, translated[0], rt.output(deep(translated[1])))


def _translate(event: WatchEvent,
               selected: Callable[[Obj | None], bool]) -> tuple[str, Obj] | None:
    """The event a filtered watch sees: leaving the selection reads as DELETED, entering as
    ADDED (the watch cache does this with the previous object)."""
    if event.type == "ADDED":
        return ("ADDED", event.obj) if selected(event.obj) else None
    if event.type == "DELETED":
        return ("DELETED", event.obj) if selected(event.prev or event.obj) else None
    before, after = selected(event.prev), selected(event.obj)
    if before and after:
        return ("MODIFIED", event.obj)
    if before:
        return ("DELETED", event.obj)
    if after:
        return ("ADDED", event.obj)
    return None


async def _send(response: web.StreamResponse, kind: str, obj: Obj) -> None:
    await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
