"""The namespace a command defaults to, as kubectl chooses it (``autoscaler status``)."""

from __future__ import annotations

import os

from . import config
from .leader import default_namespace


def context_namespace(kubeconfig: str | os.PathLike[str] | None, context: str | None = None) -> str:
    """The kubeconfig context's namespace, else the pod's (in a cluster), else ``default``."""
    paths = config.kubeconfig_paths(kubeconfig)
    if paths is None:
        return default_namespace()
    _, chosen = config.Kubeconfig.load(paths).context(context)
    return str(chosen.get("namespace") or "default")
