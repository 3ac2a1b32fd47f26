"""The shipped RBAC, judged by the real authorizer: over every scenario of the session, the
controller was never denied, and every permission deploy/ grants it was used.

Runs after every other test of tests/cluster/ (``after_all_cluster_tests``): it reads what
they made the controller do, from the apiserver's audit log. Requests the tests themselves
made with the controller's token (tests/cluster/test_admission.py, through httpx) are not the
controller's and are left out.
"""

from __future__ import annotations

import pytest

from tests.cluster import audit
from tests.cluster.conftest import Cluster


def _controller_requests(cluster: Cluster) -> list[audit.Request]:
    return [
        r
        for r in audit.read(cluster.plane.audit_log)
        if not r.user_agent.startswith("python-httpx")
    ]


@pytest.mark.after_all_cluster_tests
def test_the_controller_is_never_denied_and_uses_every_grant(
    cluster: Cluster, request: pytest.FixtureRequest
) -> None:
    scenarios = [
        i
        for i in request.session.items
        if i.get_closest_marker("cluster") and i is not request.node
    ]
    if len(scenarios) < 5:
        pytest.skip("needs the whole tests/cluster/ session (it judges what they all did)")
    requests = _controller_requests(cluster)
    assert requests, "the controller made no request the audit log recorded"
    # Secret access is opt-in per namespace (a RoleBinding to queue-autoscaler-secrets):
    # before it, a workload's redis-auth-secret is a documented 403 (test_redis_secret.py).
    denied = sorted(
        {(r.verb, r.resource, r.namespace) for r in requests if r.decision == "forbid"}
        - {("get", "secrets", r.namespace) for r in requests}
    )
    assert denied == [], denied
    granted = (
        audit.granted(cluster.role("ClusterRole", "queue-autoscaler"))
        | audit.granted(cluster.role("Role", "queue-autoscaler-leader-election"))
        | audit.granted(cluster.role("ClusterRole", "queue-autoscaler-secrets"))
    )
    used = {r.grant for r in requests if r.decision == "allow"}
    assert used <= granted
    unused = sorted(granted - used)
    assert unused == [], f"granted but never used by any scenario: {unused}"
