"""A real Kubernetes control plane for the tests: etcd, kube-apiserver, kube-controller-manager.

The binaries come from ``scripts/control-plane.sh`` (built from source, pinned v1.37.2); their
directory is ``$QA_CONTROL_PLANE_BIN`` (``make test`` sets it), else the script's cache.

What runs, all on free loopback ports, in one temporary directory:

- **etcd**, ``--unsafe-no-fsync`` (a test cluster: speed over durability), its client URL
  plain HTTP (the tests force compactions through its gRPC gateway, ``POST /v3/kv/compaction``);
- **kube-apiserver**, ``--authorization-mode=Node,RBAC``, TLS on the secure port with a
  serving certificate for 127.0.0.1 signed by a throwaway CA, the harness authenticated by a
  client certificate in ``system:masters``, service-account tokens signed by an EC key made
  here, and an audit log (``AUDIT_POLICY``: every request of the controller's
  ServiceAccount at ``Metadata`` level, nothing else). The watch cache is off for
  ``deployments.apps`` only, so a watch resumed from a compacted revision meets etcd's
  compaction directly (410 Gone) — with the cache on, the cache's own window decides;
- **kube-controller-manager** with only the controllers the scenarios need (``CONTROLLERS``),
  no leader election, no serving port.

Certificates and keys are made with ``openssl`` (EC P-256: a fraction of RSA's time).
``start`` returns once ``/readyz`` answers ``ok`` (polled with a deadline); ``stop`` ends the
processes in reverse order and removes the directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.servers import free_port

KUBE_VERSION = "v1.37.2"
BIN_ENV = "QA_CONTROL_PLANE_BIN"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
CONTROLLER_SA = ("queue-autoscaler", "queue-autoscaler")  # (namespace, name), as deploy/
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "garbage-collector-controller",
    # Creates each namespace's "default" ServiceAccount, without which the ServiceAccount
    # admission plugin refuses every pod.
    "serviceaccount-controller",
)
START_TIMEOUT_S = 90.0
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "Metadata",
            "users": [f"system:serviceaccount:{CONTROLLER_SA[0]}:{CONTROLLER_SA[1]}"],
        },
        {"level": "None"},
    ],
}


def default_bin_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "queue-autoscaler" / "control-plane" / KUBE_VERSION / "bin"


def bin_dir() -> Path | None:
    """Where the binaries are; None when they were never built (no ``make test`` yet)."""
    configured = os.environ.get(BIN_ENV)
    path = Path(configured) if configured else default_bin_dir()
    if all((path / b).is_file() for b in BINARIES):
        return path
    if configured:
        raise RuntimeError(f"{BIN_ENV}={configured}: missing one of {', '.join(BINARIES)}")
    return None


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ec_key(cwd: Path, name: str) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name, cwd=cwd)


def _signed_cert(cwd: Path, name: str, subject: str, extensions: str) -> None:
    """``name.key`` + ``name.crt``, signed by ``ca.crt``."""
    _ec_key(cwd, f"{name}.key")
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=cwd)
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        cwd=cwd,
    )  # fmt: skip


def make_pki(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    _ec_key(pki, "ca.key")
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=queue-autoscaler-test-ca",
        "-days", "2", "-out", "ca.crt", cwd=pki,
    )  # fmt: skip
    _signed_cert(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    _signed_cert(pki, "admin", "/O=system:masters/CN=qa-admin", "extendedKeyUsage=clientAuth\n")
    _ec_key(pki, "sa.key")
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


@dataclass
class ControlPlane:
    bin: Path
    workdir: Path
    etcd_port: int = 0
    apiserver_port: int = 0
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    startup_s: dict[str, float] = field(default_factory=dict)

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def ssl_context(self, *, admin: bool = True) -> ssl.SSLContext:
        """Trusts the apiserver; ``admin``: presents the admin's client certificate (which
        the apiserver checks before any token: a token client must not present it)."""
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if admin:
            context.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        return context

    def kubeconfig(self, path: Path, user: dict[str, str]) -> Path:
        """A kubeconfig for this apiserver with ``user`` (a client cert or a token)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority": str(self.pki / "ca.crt"),
                    },
                }
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def kubeconfig_via(self, path: Path, server: str, token: str) -> Path:
        """A token kubeconfig for ``server`` (a proxy in front of this apiserver)."""
        self.kubeconfig(path, {"token": token})
        config = yaml.safe_load(path.read_text())
        config["clusters"][0]["cluster"]["server"] = server
        path.write_text(yaml.safe_dump(config))
        return path

    # ---- processes ------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [str(self.bin / name), *args], stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        log.close()
        self.processes.append((name, process))

    def _wait(self, name: str, ready: str, started: float) -> None:
        """Poll ``ready`` (a URL answering 200 ``ok``) until the deadline."""
        process = dict(self.processes)[name]
        context = self.ssl_context() if ready.startswith("https") else None
        deadline = started + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited {process.returncode}:\n{self.tail(name)}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(ready, timeout=2, context=context) as response,
            ):
                if response.status == 200:
                    self.startup_s[name] = round(time.monotonic() - started, 2)
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{name} not ready after {START_TIMEOUT_S}s:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        text = (self.workdir / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def start_etcd(self) -> None:
        self.etcd_port, peer = free_port(), free_port()
        client, peer_url = self.etcd_url, f"http://127.0.0.1:{peer}"
        started = time.monotonic()
        self._spawn(
            "etcd",
            [
                "--name=qa", f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=qa={peer_url}", "--unsafe-no-fsync", "--log-level=warn",
            ],
        )  # fmt: skip
        self._wait("etcd", f"{client}/health", started)

    def start_apiserver(self) -> None:
        self.apiserver_port = free_port()
        pki = self.pki
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        started = time.monotonic()
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                # The "kubernetes" Service's endpoints may not be loopback, and no pod needs it.
                "--endpoint-reconciler-type=none",
                f"--secure-port={self.apiserver_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer={self.url}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/24",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxbackup=0",
                "--watch-cache-sizes=deployments.apps#0",
            ],
        )  # fmt: skip
        self._wait("kube-apiserver", f"{self.url}/readyz", started)

    def start_controller_manager(self) -> None:
        kubeconfig = self.kubeconfig(
            self.admin_kubeconfig,
            {
                "client-certificate": str(self.pki / "admin.crt"),
                "client-key": str(self.pki / "admin.key"),
            },
        )
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={kubeconfig}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--leader-elect=false",
                "--secure-port=0",
                "--use-service-account-credentials=false",
            ],
        )  # fmt: skip

    def stop(self) -> None:
        for _, process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for _, process in reversed(self.processes):
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start(bin_path: Path) -> ControlPlane:
    workdir = Path(tempfile.mkdtemp(prefix="qa-control-plane-"))
    plane = ControlPlane(bin_path, workdir)
    started = time.monotonic()
    try:
        make_pki(plane.pki)
        plane.startup_s["pki"] = round(time.monotonic() - started, 2)
        plane.start_etcd()
        plane.start_apiserver()
        plane.start_controller_manager()
    except BaseException:
        plane.stop()
        raise
    plane.startup_s["total"] = round(time.monotonic() - started, 2)
    return plane


def remove(plane: ControlPlane) -> None:
    plane.stop()
    shutil.rmtree(plane.workdir, ignore_errors=True)
