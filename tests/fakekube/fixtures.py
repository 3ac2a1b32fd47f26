"""The ``fake_kube`` fixture: a started ``FakeKubeServer`` with a kubeconfig written.

Use it from a test module with ``from tests.fakekube.fixtures import fake_kube``
(re-exported by ``tests/conftest.py`` once wired). ``fake_kube.kubeconfig`` is the path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.fakekube.server import FakeKubeServer


@pytest_asyncio.fixture
async def fake_kube(tmp_path: Path) -> AsyncIterator[FakeKubeServer]:
    async with FakeKubeServer() as server:
        server.write_kubeconfig(tmp_path / "kubeconfig")
        yield server
