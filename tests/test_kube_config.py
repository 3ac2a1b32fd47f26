"""``kube.config``: kubeconfigs and the service account read by kubectl's rules, over real
HTTP(S) to a small API endpoint that records who called (Authorization, client certificate)
and answers as told (200, or 401 to a token it no longer accepts).

TLS material is made with openssl (``tests.redisprod.make_pki``); exec credential plugins are
real executables written by the test, counting their runs in a file.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from autoscaler.errors import KubeError
from autoscaler.kube import KubeClient
from autoscaler.kube.config import TOKEN_REREAD_S, connection, in_cluster, kubeconfig_paths
from autoscaler.kube.context import context_namespace
from autoscaler.kube.transport import Transport
from tests.redisprod import Pki, make_pki

V1 = "client.authentication.k8s.io/v1"


@dataclass
class Endpoint:
    """What the API endpoint saw, and the tokens it refuses with 401."""

    url: str = ""
    seen: list[tuple[str | None, bool]] = field(default_factory=list)  # (Authorization, cert?)
    refused: set[str] = field(default_factory=set)


@contextlib.asynccontextmanager
async def serve(tls: ssl.SSLContext | None = None) -> AsyncIterator[Endpoint]:
    endpoint = Endpoint()

    async def answer(request: web.Request) -> web.Response:
        transport = request.transport
        peer = transport.get_extra_info("peercert") if transport is not None else None
        authorization = request.headers.get("Authorization")
        endpoint.seen.append((authorization, bool(peer)))
        if authorization in endpoint.refused:
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        return web.json_response({"kind": "Scale", "spec": {"replicas": 1}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    scheme = "https" if tls else "http"
    endpoint.url = f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield endpoint
    finally:
        await runner.cleanup()


def kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any], **top: Any) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
        **top,
    }
    path.write_text(yaml.safe_dump(doc))
    return path


async def read_scale(kube: KubeClient) -> dict[str, Any]:
    return await kube.call(kube.apps.read_namespaced_deployment_scale, "web", "default")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def server_tls(pki: Pki, *, client_certs: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(pki.cert, pki.key)
    context.verify_mode = ssl.CERT_REQUIRED if client_certs else ssl.CERT_NONE
    return context


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


async def test_client_certificate_and_ca_given_as_data(pki: Pki, tmp_path: Path) -> None:
    async with serve(server_tls(pki, client_certs=True)) as endpoint:
        cluster = {"server": endpoint.url, "certificate-authority-data": b64(pki.ca)}
        user = {"client-certificate-data": b64(pki.cert), "client-key-data": b64(pki.key)}
        path = kubeconfig(tmp_path / "config", cluster, user)
        async with await KubeClient.connect(path) as kube:
            assert (await read_scale(kube))["kind"] == "Scale"
    assert endpoint.seen == [(None, True)]


async def test_paths_are_relative_to_their_kubeconfig_and_tls_server_name_is_checked(
    pki: Pki, tmp_path: Path
) -> None:
    folder = tmp_path / "nested"
    folder.mkdir()
    for source in (pki.ca, pki.cert, pki.key):
        (folder / source.name).write_bytes(source.read_bytes())
    async with serve(server_tls(pki, client_certs=True)) as endpoint:
        local = endpoint.url.replace("127.0.0.1", "localhost")  # the certificate names both
        cluster = {"server": local, "certificate-authority": "ca.crt"}
        user = {"client-certificate": "tls.crt", "client-key": "tls.key", "token": "abc"}
        path = kubeconfig(folder / "config", cluster, user)
        async with await KubeClient.connect(path) as kube:
            await read_scale(kube)
        # The server's certificate does not name "example.org": verification must fail.
        path = kubeconfig(folder / "config", {**cluster, "tls-server-name": "example.org"}, user)
        async with await KubeClient.connect(path) as kube:
            with pytest.raises(KubeError, match="certificate verify failed"):
                await read_scale(kube)
    assert endpoint.seen == [("Bearer abc", True)]


async def test_an_unknown_ca_fails_unless_verification_is_explicitly_skipped(
    pki: Pki, tmp_path: Path
) -> None:
    async with serve(server_tls(pki, client_certs=False)) as endpoint:
        path = kubeconfig(tmp_path / "config", {"server": endpoint.url}, {"token": "t"})
        async with await KubeClient.connect(path) as kube:  # the system store: unknown CA
            with pytest.raises(KubeError, match="certificate verify failed"):
                await read_scale(kube)
        skip = {"server": endpoint.url, "insecure-skip-tls-verify": True}
        path = kubeconfig(tmp_path / "config", skip, {"token": "t"})
        async with await KubeClient.connect(path) as kube:
            await read_scale(kube)
    assert endpoint.seen == [("Bearer t", False)]


async def test_kubeconfig_files_merge_as_kubectl_merges_them(tmp_path: Path) -> None:
    async with serve() as first, serve() as second:
        a = kubeconfig(tmp_path / "a", {"server": first.url}, {"token": "from-a"})
        doc = {
            "clusters": [{"name": "c", "cluster": {"server": second.url}},
                         {"name": "other", "cluster": {"server": second.url}}],
            "users": [{"name": "u", "user": {"token": "from-b"}}],
            "contexts": [{"name": "second", "context": {"cluster": "other", "user": "u",
                                                        "namespace": "jobs"}}],
            "current-context": "second",
        }  # fmt: skip
        b = tmp_path / "b"
        b.write_text(yaml.safe_dump(doc))
        listed = f"{tmp_path / 'missing'}:{a}:{b}"
        environ = {"KUBECONFIG": listed}
        assert kubeconfig_paths(None, environ) == [a, b]  # a missing file is skipped
        # a's current-context and a's "c" and "u" win over b's.
        async with await KubeClient.connect(environ=environ) as kube:
            await read_scale(kube)
        async with await KubeClient.connect(environ=environ, context="second") as kube:
            await read_scale(kube)
    assert first.seen == [("Bearer from-a", False)]
    # Context "second" is b's: its cluster "other" from b, its user "u" from a.
    assert second.seen == [("Bearer from-a", False)]


def test_context_namespace_and_bad_kubeconfigs_are_one_line_errors(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", {"server": "https://h:6443"}, {"token": "t"})
    assert context_namespace(path) == "default"
    doc = yaml.safe_load(path.read_text())
    doc["contexts"][0]["context"]["namespace"] = "jobs"
    path.write_text(yaml.safe_dump(doc))
    assert context_namespace(path) == "jobs"
    cases = {
        "no context 'nope'": ({"server": "https://h"}, {"token": "t"}, {}, "nope"),
        "server 'h:6443' is not an http\\(s\\) URL": ({"server": "h:6443"}, {}, {}, None),
        "auth-provider 'oidc' is not supported; use an exec credential plugin": (
            {"server": "https://h"}, {"auth-provider": {"name": "oidc"}}, {}, None),
        "certificate-authority-data is not base64": (
            {"server": "https://h", "certificate-authority-data": "!!"}, {}, {}, None),
        "needs both the certificate and the key": (
            {"server": "https://h"}, {"client-certificate-data": "YQ=="}, {}, None),
        "exec apiVersion 'client.authentication.k8s.io/v1alpha1' is not one of": (
            {"server": "https://h"},
            {"exec": {"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}},
            {}, None),
        "needs an interactive terminal": (
            {"server": "https://h"},
            {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "x",
                      "interactiveMode": "Always"}}, {}, None),
        "exec is not a mapping": ({"server": "https://h"}, {"exec": "gcloud"}, {}, None),
        "exec env is not a list of name/value mappings": (
            {"server": "https://h"},
            {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "x",
                      "env": ["A=b"]}}, {}, None),
        "only http\\(s\\) proxies": (
            {"server": "https://h", "proxy-url": "socks5://p:1080"}, {}, {}, None),
    }  # fmt: skip
    for message, (cluster, user, top, context) in cases.items():
        bad = kubeconfig(tmp_path / "bad", cluster, user, **top)
        with pytest.raises(KubeError, match=message) as raised:
            connection(bad, context)
        assert "\n" not in str(raised.value)
    with pytest.raises(KubeError, match=r"KUBECONFIG .*: no such file"):
        kubeconfig_paths(None, {"KUBECONFIG": str(tmp_path / "missing")})


def plugin(folder: Path, body: str) -> Path:
    """An exec credential plugin: a Python script appending one line to ``runs`` per run."""
    script = folder / "plugin.py"
    script.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"open({str(folder / 'runs')!r}, 'a').write(os.environ['KUBERNETES_EXEC_INFO'] + '\\n')\n"
        f"{body}\n"
    )
    script.chmod(0o755)
    return script


def credential(status: dict[str, Any], version: str = "client.authentication.k8s.io/v1") -> str:
    doc = {"apiVersion": version, "kind": "ExecCredential", "status": status}
    return f"print(json.dumps({doc!r}))"


def runs(folder: Path) -> list[dict[str, Any]]:
    path = folder / "runs"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_exec_plugin_token_is_cached_until_a_401(tmp_path: Path) -> None:
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    counter = tmp_path / "n"
    counter.write_text("0")
    # Each run hands out the next token: tok-1, tok-2, …
    body = (f"n = int(open({str(counter)!r}).read()) + 1\n"
            f"open({str(counter)!r}, 'w').write(str(n))\n"
            "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1', "
            "'kind': 'ExecCredential', 'status': {'token': f'tok-{n}', "
            f"'expirationTimestamp': {later!r}}}}}))")  # fmt: skip
    script = plugin(tmp_path, body)
    async with serve() as endpoint:
        exec_ = {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "./plugin.py",
                 "env": [{"name": "X", "value": "y"}], "provideClusterInfo": True}  # fmt: skip
        path = kubeconfig(tmp_path / "config", {"server": endpoint.url}, {"exec": exec_})
        async with await KubeClient.connect(path) as kube:
            await read_scale(kube)
            await read_scale(kube)  # cached: no second run
            endpoint.refused.add("Bearer tok-1")  # revoked: the 401 makes it ask again
            await read_scale(kube)
    assert script.exists()
    assert endpoint.seen == [("Bearer tok-1", False)] * 3 + [("Bearer tok-2", False)]
    info = runs(tmp_path)
    assert len(info) == 2
    assert info[0]["spec"] == {"interactive": False, "cluster": {"server": endpoint.url}}


async def test_exec_plugin_credential_is_fetched_again_when_it_expires(tmp_path: Path) -> None:
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)).isoformat()  # inside the margin
    plugin(tmp_path, credential({"token": "short", "expirationTimestamp": soon}))
    async with serve() as endpoint:
        exec_ = {"apiVersion": V1, "command": str(tmp_path / "plugin.py")}
        path = kubeconfig(tmp_path / "config", {"server": endpoint.url}, {"exec": exec_})
        async with await KubeClient.connect(path) as kube:
            await read_scale(kube)
            await read_scale(kube)
    assert len(runs(tmp_path)) == 2
    assert endpoint.seen == [("Bearer short", False)] * 2


async def test_exec_plugin_client_certificate(pki: Pki, tmp_path: Path) -> None:
    status = {"clientCertificateData": pki.cert.read_text(), "clientKeyData": pki.key.read_text()}
    plugin(tmp_path, credential(status))
    async with serve(server_tls(pki, client_certs=True)) as endpoint:
        cluster = {"server": endpoint.url, "certificate-authority": str(pki.ca)}
        exec_ = {"apiVersion": V1, "command": str(tmp_path / "plugin.py")}
        path = kubeconfig(tmp_path / "config", cluster, {"exec": exec_})
        async with await KubeClient.connect(path) as kube:
            await read_scale(kube)
    assert endpoint.seen == [(None, True)]


async def test_a_failing_exec_plugin_is_one_line_naming_it(tmp_path: Path) -> None:
    plugin(tmp_path, "print('please log in first', file=sys.stderr); sys.exit(3)")
    exec_ = {"apiVersion": V1, "command": str(tmp_path / "plugin.py")}
    missing = {**exec_, "command": "no-such-plugin", "installHint": "install it with brew"}
    async with serve() as endpoint:
        for user, message in (
            (exec_, r"exec plugin '.*plugin.py': exit code 3: please log in first$"),
            (missing, r"exec plugin 'no-such-plugin': .*No such file.* \(install it with brew\)"),
        ):
            path = kubeconfig(tmp_path / "config", {"server": endpoint.url}, {"exec": user})
            async with await KubeClient.connect(path) as kube:
                with pytest.raises(KubeError, match=message):
                    await read_scale(kube)
    assert endpoint.seen == []


async def test_in_cluster_token_is_reread_after_a_401(tmp_path: Path, pki: Pki) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(pki.ca.read_bytes())
    (account / "token").write_text("first\n")
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "0"}
    assert kubeconfig_paths(None, environ) is None
    assert in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"},
                      account).server == "https://[fd00::1]:443"  # fmt: skip
    async with serve(server_tls(pki, client_certs=False)) as endpoint:
        port = endpoint.url.rsplit(":", 1)[1]
        found = in_cluster({**environ, "KUBERNETES_SERVICE_PORT": port}, account)
        async with KubeClient(Transport(found)) as kube:
            await read_scale(kube)
            (account / "token").write_text("second\n")  # the kubelet rotated it
            endpoint.refused.add("Bearer first")
            await read_scale(kube)
    assert endpoint.seen == [("Bearer first", False)] * 2 + [("Bearer second", False)]
    assert TOKEN_REREAD_S == 60.0


async def test_an_exec_plugin_printing_json_that_is_not_a_credential_is_one_line(
    tmp_path: Path,
) -> None:
    plugin(tmp_path, "print(json.dumps(['not', 'a', 'credential']))")
    exec_ = {"apiVersion": V1, "command": str(tmp_path / "plugin.py")}
    async with serve() as endpoint:
        path = kubeconfig(tmp_path / "config", {"server": endpoint.url}, {"exec": exec_})
        async with await KubeClient.connect(path) as kube:
            with pytest.raises(KubeError, match=r"its output is not an ExecCredential of .*/v1$"):
                await read_scale(kube)
    assert endpoint.seen == []
