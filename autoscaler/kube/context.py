"""The namespace a command defaults to, as kubectl chooses it (``autoscaler status``)."""

from __future__ import annotations

import os

import yaml
from kubernetes.aio import config as k8s_config
from kubernetes.aio.config import ConfigException

from autoscaler.errors import KubeError

from .client import kubeconfig_path
from .leader import default_namespace


def context_namespace(kubeconfig: str | os.PathLike[str] | None, context: str | None = None) -> str:
    """The kubeconfig context's namespace, else the pod's (in a cluster), else ``default``."""
    path = kubeconfig_path(kubeconfig)
    if path is None:
        return default_namespace()
    try:
        contexts, active = k8s_config.list_kube_config_contexts(config_file=str(path))  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:
        raise KubeError(f"cannot load the Kubernetes configuration: {e}") from e
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")
