"""``FakeKubeServer``: a fake Kubernetes API server over real HTTP, for real clients.

    async with FakeKubeServer() as kube:          # 127.0.0.1, a free port
        kube.write_kubeconfig(tmp_path / "kubeconfig")
        kube.create({"apiVersion": "apps/v1", "kind": "Deployment", ...})
        ...  # kubernetes.aio / kubectl against kube.url
        assert len(kube.list_pods("default", "app=web")) == 3

Writes through the helpers go through the same code as HTTP requests (validation,
resourceVersions, watch events, the reactor); reads return copies in storage form.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from aiohttp import web

from tests.fakekube.api import Api
from tests.fakekube.handlers import Fault, Frontend
from tests.fakekube.model import FakeClock, Ids, KubeError, Obj, deep, format_time, labels_of
from tests.fakekube.patch import MERGE
from tests.fakekube.rbac import RecordedRequest, denied
from tests.fakekube.reactor import NODE_NAME, PODS, Reactor, deletion_rank
from tests.fakekube.resources import RESOURCES, ResourceType, canonical
from tests.fakekube.selectors import matches_labels, parse_label_selector, selector_from_dict
from tests.fakekube.store import Store


class FakeKubeServer:
    """A fake API server; see the package docstring for what it serves.

    ``history_limit``: how many write events a watch can resume across (older
    resourceVersions get 410 Expired); ``auto_namespaces``: create a namespace on first
    use instead of answering 404; ``seed``: uids and pod-name suffixes; ``clock_start``:
    the fake clock's first instant (it ticks one second per created object).
    """

    def __init__(self, *, history_limit: int = 10_000, auto_namespaces: bool = True,
                 seed: int = 0, clock_start: dt.datetime | None = None,
                 namespaces: Iterable[str] = ("default", "kube-system")) -> None:
        self.clock = FakeClock(clock_start)
        self.ids = Ids(seed)
        self.store = Store(self.clock, self.ids, history_limit)
        self.reactor = Reactor(self.store, self.clock, self.ids)
        self.api = Api(self.store, auto_namespaces=auto_namespaces, after_write=self.reactor.run)
        self.frontend = Frontend(self.api, self.store)
        self.url = ""
        self.kubeconfig: Path | None = None
        self._runner: web.AppRunner | None = None
        for ns in namespaces:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> FakeKubeServer:
        runner = web.AppRunner(self.frontend.app(), handle_signals=False, access_log=None,
                               shutdown_timeout=0.5, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self.frontend.server_address = f"{host}:{port}"
        return self

    async def stop(self) -> None:
        """End all watches, close all connections, and wait for every handler to finish."""
        self.store.close_watchers()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeKubeServer:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    async def settled(self) -> None:
        """Wait until the reactor has nothing left to do and watch streams have been fed.

        The reactor runs synchronously after each write, so this only finishes any work
        left by direct store manipulation and lets queued watch events reach the sockets.
        """
        self.reactor.run()
        for _ in range(3):
            await asyncio.sleep(0)

    async def wait_for_watches(self, count: int = 1, *, timeout_s: float = 5.0) -> None:
        """Wait until at least ``count`` watch streams are open (then a write is seen live)."""
        async with asyncio.timeout(timeout_s):
            while len(self.store.watchers) < count:
                self.store.watchers_changed.clear()
                await self.store.watchers_changed.wait()

    def write_kubeconfig(self, path: Path | str, *, namespace: str = "default",
                         token: str = "fakekube-token") -> Path:
        """A kubeconfig (http, a dummy bearer token) for kubectl and kubernetes.aio."""
        path = Path(path)
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "fakekube", "cluster": {"server": self.url}}],
            "users": [{"name": "fakekube", "user": {"token": token}}],
            "contexts": [{"name": "fakekube", "context": {"cluster": "fakekube",
                                                          "user": "fakekube",
                                                          "namespace": namespace}}],
            "current-context": "fakekube",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig = path
        return path

    # ---- requests, faults, history -------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request served so far, in arrival order (status set once answered)."""
        return self.frontend.requests

    def rbac_denied(self, role: dict[str, Any]) -> list[RecordedRequest]:
        """The recorded resource requests that ``role`` (a ClusterRole dict) would forbid."""
        return denied(role, self.requests)

    def inject_faults(self, status: int, count: int = 1, *, methods: Iterable[str] | None = None,
                      path_contains: str | None = None, retry_after_s: int = 1) -> None:
        """The next ``count`` matching requests fail with ``status`` (429 with Retry-After).

        ``methods`` holds HTTP methods and/or RBAC verbs (``{"PATCH"}``, ``{"watch"}``).
        """
        wanted = None if methods is None else frozenset(m.upper() for m in methods)
        self.frontend.faults.append(Fault(status, count, wanted, path_contains, retry_after_s))

    def clear_faults(self) -> None:
        self.frontend.faults.clear()

    @property
    def history_limit(self) -> int:
        return self.store.history_limit

    @history_limit.setter
    def history_limit(self, value: int) -> None:
        self.store.history_limit = value
        self.store.trim()

    def compact(self) -> None:
        """Forget the watch history: watches from any current resourceVersion get 410."""
        self.store.compact()

    def bookmark(self) -> None:
        """Send a BOOKMARK to every open watch that asked for them."""
        self.store.bookmark()

    @property
    def resource_version(self) -> str:
        return str(self.store.rv)

    # ---- objects ------------------------------------------------------------------------

    def create(self, obj: Obj) -> Obj:
        rt = _type_of(obj)
        namespace = obj.get("metadata", {}).get("namespace") or "default"
        return self.api.create(rt, namespace if rt.namespaced else "", obj)

    def get(self, kind_or_plural: str, namespace: str, name: str) -> Obj | None:
        rt = canonical(kind_or_plural)
        found = self.store.get(rt.storage, namespace if rt.namespaced else "", name)
        return None if found is None else rt.output(deep(found))

    def list_objects(self, kind_or_plural: str, namespace: str | None = None,
             selector: str | Obj | None = None) -> list[Obj]:
        rt = canonical(kind_or_plural)
        reqs = (selector_from_dict(selector) if isinstance(selector, dict)
                else parse_label_selector(selector))
        return [rt.output(deep(o)) for o in self.store.items(rt.storage, namespace)
                if matches_labels(reqs, labels_of(o))]

    def update(self, obj: Obj) -> Obj:
        rt = _type_of(obj)
        m = obj["metadata"]
        return self.api.update(rt, m.get("namespace", "default"), m["name"], obj)

    def patch(self, kind_or_plural: str, namespace: str, name: str, patch: Any, *,
              content_type: str = MERGE, subresource: str = "") -> Obj:
        return self.api.patch(canonical(kind_or_plural), namespace, name, content_type, patch,
                              subresource=subresource)

    def scale(self, kind_or_plural: str, namespace: str, name: str, replicas: int) -> Obj:
        return self.patch(kind_or_plural, namespace, name, {"spec": {"replicas": replicas}},
                          subresource="scale")

    def delete(self, kind_or_plural: str, namespace: str, name: str) -> None:
        self.api.delete(canonical(kind_or_plural), namespace, name)

    def list_pods(self, namespace: str | None, selector: str | Obj | None = None) -> list[Obj]:
        """Pods, oldest first (creation order; the fake clock makes it strict)."""
        pods = self.list_objects("pods", namespace, selector)
        return sorted(pods, key=lambda p: (p["metadata"]["creationTimestamp"],
                                           p["metadata"]["name"]))

    def pod_names(self, namespace: str | None, selector: str | Obj | None = None) -> list[str]:
        return [p["metadata"]["name"] for p in self.list_pods(namespace, selector)]

    def deletion_order(self, namespace: str, selector: str | Obj | None = None) -> list[str]:
        """Pod names in the order a ReplicaSet scale-down would delete them."""
        return [p["metadata"]["name"]
                for p in sorted(self.list_pods(namespace, selector), key=deletion_rank)]

    def events(self, namespace: str | None = None) -> list[Obj]:
        """Events (core/v1 shape; events.k8s.io/v1 ones are the same objects), oldest first."""
        found = self.list_objects("events", namespace)
        return sorted(found, key=lambda e: (e["metadata"]["creationTimestamp"],
                                            e["metadata"]["name"]))

    # ---- pod state (the fake kubelet) -----------------------------------------------------

    def set_pod_ready(self, namespace: str, name: str, ready: bool) -> Obj:
        def change(pod: Obj) -> None:
            status = pod["status"]
            flag = "True" if ready else "False"
            for cond in status.setdefault("conditions", []):
                if cond["type"] in ("Ready", "ContainersReady") and cond["status"] != flag:
                    cond["status"] = flag
                    cond["lastTransitionTime"] = format_time(self.clock.tick())
            for cs in status.get("containerStatuses") or []:
                cs["ready"] = ready

        return self._update_pod(namespace, name, change)

    def set_pod_phase(self, namespace: str, name: str, phase: str, *,
                      scheduled: bool = True) -> Obj:
        """Move a pod to ``phase``; Pending also makes it not ready, and ``scheduled=False``
        takes it off its node (an unassigned pod, first in line for deletion)."""
        if phase == "Pending":
            self.set_pod_ready(namespace, name, False)

        def change(pod: Obj) -> None:
            pod["status"]["phase"] = phase
            if scheduled:
                pod["spec"].setdefault("nodeName", NODE_NAME)
            else:
                pod["spec"].pop("nodeName", None)
            for cond in pod["status"].get("conditions", []):
                if cond["type"] == "PodScheduled":
                    cond["status"] = "True" if scheduled else "False"

        return self._update_pod(namespace, name, change)

    def set_pod_restarts(self, namespace: str, name: str, restarts: int) -> Obj:
        def change(pod: Obj) -> None:
            for cs in pod["status"].get("containerStatuses") or []:
                cs["restartCount"] = restarts

        return self._update_pod(namespace, name, change)

    def _update_pod(self, namespace: str, name: str, change: Any) -> Obj:
        current = self.store.get(PODS, namespace, name)
        if current is None:
            raise KubeError(404, f'pods "{name}" not found')
        pod = deep(current)
        pod.setdefault("status", {})
        pod.setdefault("spec", {})
        change(pod)
        written = self.store.replace(PODS, pod)
        self.reactor.run()
        return written


def _type_of(obj: Obj) -> ResourceType:
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    for rt in RESOURCES:
        if rt.api_version == api_version and rt.kind == kind:
            return rt
    raise KeyError(f"fakekube does not serve {api_version} {kind}")
