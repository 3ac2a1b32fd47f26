"""One list-then-watch loop over one resource in one namespace (or all), that never dies.

It lists (paged; the first page's resourceVersion is the snapshot's), hands the items to
``on_list``, then watches from that resourceVersion and hands each change to ``on_event``.
When the server ends a watch (its ``timeoutSeconds``) it resumes from the last
resourceVersion seen (BOOKMARKs included); on 410 Gone it relists at once; after any other
error it backs off exponentially with jitter and tries again. Only cancellation ends it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from autoscaler.errors import KubeError
from autoscaler.logs import log_event
from autoscaler.remote import backoff_delay

from .client import ApiMethod, KubeClient, Obj

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchSettings:
    """``watch_timeout_s`` (300 s): the server ends each watch after 1–2× this (jittered,
    as client-go), and the loop resumes from its resourceVersion. ``page_size`` (500): list
    pages. Reconnects back off from ``backoff_initial_s`` (0.5 s) to ``backoff_max_s`` (30 s).
    """

    watch_timeout_s: float = 300.0
    page_size: int = 500
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0


@dataclass(frozen=True)
class Resource:
    kind: str
    list_all: ApiMethod
    list_namespaced: ApiMethod
    label_selector: str | None


async def list_pages(
    kube: KubeClient,
    resource: Resource,
    namespace: str | None,
    page_size: int,
    keep: Callable[[Obj], Obj] | None = None,
    on_page: Callable[[list[Obj]], Awaitable[None]] | None = None,
) -> tuple[list[Obj], str | None]:
    """Every item of ``resource`` in ``namespace`` (None: all), read in pages of
    ``page_size``; and the resourceVersion of the snapshot (the first page's).

    ``keep``: what to keep of each item, applied page by page, so that only one page of
    whole objects is ever held: 10,000 whole Deployments held until the listing ends
    were ~100 MB at the start's peak, and the process's RSS stayed there. ``on_page``:
    told each page's (kept) items as it arrives, while the server prepares the next."""
    method, args = (
        (resource.list_all, ()) if namespace is None else (resource.list_namespaced, (namespace,))
    )
    items: list[Obj] = []
    token: str | None = None
    version: str | None = None
    while True:
        extra: dict[str, Any] = {"_continue": token} if token else {}
        page = await kube.call(
            method, *args, label_selector=resource.label_selector, limit=page_size, **extra
        )
        meta = page.get("metadata") or {}
        version = version or meta.get("resourceVersion")  # a paged list is one snapshot
        page_items = page.get("items") or []
        kept = page_items if keep is None else [keep(item) for item in page_items]
        del page, page_items  # the page's whole objects go now, not after the next one
        items.extend(kept)
        if on_page is not None:
            await on_page(kept)
        token = meta.get("continue")
        if not token:
            return items, version


class ListWatch:
    """One list-then-watch loop; ``on_list`` gets each full listing, ``on_event`` each change."""

    def __init__(
        self,
        kube: KubeClient,
        resource: Resource,
        namespace: str | None,
        settings: WatchSettings,
        on_list: Callable[[list[Obj]], Awaitable[None]],
        on_event: Callable[[str, Obj], Awaitable[None]],
        keep: Callable[[Obj], Obj] | None = None,
        on_page: Callable[[list[Obj]], Awaitable[None]] | None = None,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.namespace = namespace
        self.settings = settings
        self.on_list = on_list
        self.on_event = on_event
        self.keep = keep  # what on_list needs of each listed item (list_pages)
        self.on_page = on_page  # each page of a listing as it arrives (list_pages)
        self.tried = asyncio.Event()  # the first listing is done, or failed
        self.resource_version: str | None = None
        self.rng = random.Random()
        self.scope = f"{resource.kind} in {namespace or 'all namespaces'}"

    def _method(self) -> tuple[ApiMethod, tuple[str, ...]]:
        if self.namespace is None:
            return self.resource.list_all, ()
        return self.resource.list_namespaced, (self.namespace,)

    async def relist(self) -> None:
        try:
            items, version = await list_pages(
                self.kube,
                self.resource,
                self.namespace,
                self.settings.page_size,
                self.keep,
                self.on_page,
            )
            await self.on_list(items)
        finally:
            self.tried.set()
        self.resource_version = version
        log_event(logger, "listed", scope=self.scope, items=len(items), resource_version=version)

    async def watch_once(self) -> None:
        """Watch from ``resource_version`` until the server ends the stream."""
        method, args = self._method()
        timeout_s = self.settings.watch_timeout_s * (1 + self.rng.random())
        async with self.kube.watch(
            method,
            *args,
            label_selector=self.resource.label_selector,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_s=timeout_s,
        ) as events:
            async for event in events:
                obj = event.get("object") or {}
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if event.get("type") != "BOOKMARK":
                    await self.on_event(str(event.get("type")), obj)
                if version:
                    self.resource_version = version

    async def run(self) -> None:
        """List and watch forever; only cancellation ends it."""
        failures = 0
        while True:
            try:
                if self.resource_version is None:
                    await self.relist()
                await self.watch_once()
                failures = 0
            except KubeError as e:
                if e.status == 410:
                    log_event(logger, "watch expired, relisting", scope=self.scope)
                    self.resource_version = None
                    continue
                failures += 1
                await self._back_off(failures, e)
            except Exception as e:  # a bug must not end the inventory: log it, back off
                failures += 1
                logger.exception("watch loop error scope=%s", self.scope)
                await self._back_off(failures, e)

    async def _back_off(self, failures: int, error: Exception) -> None:
        s = self.settings
        delay = backoff_delay(failures, s.backoff_initial_s, s.backoff_max_s, self.rng)
        log_event(
            logger,
            "watch failed",
            logging.WARNING,
            scope=self.scope,
            failures=failures,
            retry_in_s=round(delay, 2),
            error=str(error),
        )
        await asyncio.sleep(delay)
