"""The Prometheus source: a real prometheus for queries, fake aiohttp servers for the rest."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from autoscaler.policy.spec import PrometheusTrigger
from autoscaler.policy.state import Reading
from autoscaler.sources import Source
from autoscaler.sources.prometheus import PrometheusAuth, PrometheusSource, reading_from_response
from tests.servers import PrometheusServer, free_port, wait_until

JOB = "qa-sources"


@pytest.fixture(scope="module")
def scraped(prometheus_server: PrometheusServer) -> Iterator[str]:
    """A prometheus_client target with two series, scraped by the real prometheus."""
    registry = CollectorRegistry()
    gauge = Gauge("qa_sources_value", "test value", ["kind"], registry=registry)
    gauge.labels("a").set(7)
    gauge.labels("b").set(5)
    port = free_port()
    httpd, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    prometheus_server.set_targets(JOB, [f"127.0.0.1:{port}"])

    def present() -> bool:
        body = prometheus_server.query(f'count(qa_sources_value{{job="{JOB}"}})')
        result = body.get("data", {}).get("result")  # type: ignore[attr-defined]
        return bool(result) and result[0]["value"][1] == "2"

    wait_until(present, 30, "the first scrape of the test target", step_s=0.2)
    yield prometheus_server.url
    prometheus_server.set_targets(JOB, [])
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
async def source(scraped: str) -> AsyncIterator[Source[PrometheusTrigger]]:
    src: Source[PrometheusTrigger] = PrometheusSource(scraped, auth=None)
    yield src
    await src.aclose()


def q(expr: str) -> PrometheusTrigger:
    return PrometheusTrigger(expr, target=1)


async def test_vector_and_scalar_values(source: Source[PrometheusTrigger]) -> None:
    a, total, as_scalar, again = await source.read(
        [
            q(f'qa_sources_value{{job="{JOB}",kind="a"}}'),
            q(f'sum(qa_sources_value{{job="{JOB}"}})'),
            q(f'scalar(qa_sources_value{{job="{JOB}",kind="b"}})'),
            q(f'qa_sources_value{{job="{JOB}",kind="a"}}'),
        ]
    )
    assert (a.value, total.value, as_scalar.value, again.value) == (7, 12, 5, 7)


async def test_the_query_text_reaches_prometheus_intact(source: Source[PrometheusTrigger]) -> None:
    # '+', '&', '=', '#', '%', quotes, braces and spaces must be escaped in the query string
    plus, regex = await source.read(
        [
            q("1 + 2 * 3"),
            q(f'sum(qa_sources_value{{job="{JOB}",kind=~"a|b",kind!="&x=1#%20"}}) + 0.5'),
        ]
    )
    assert (plus.value, regex.value) == (7, 12.5)


async def test_unknowns_are_failed_never_zero(source: Source[PrometheusTrigger]) -> None:
    many = f'qa_sources_value{{job="{JOB}"}}'
    empty, multi, inf, nan_scalar = await source.read(
        [
            q(f'qa_sources_value{{job="{JOB}",kind="missing"}}'),
            q(many),
            q(f'qa_sources_value{{job="{JOB}",kind="a"}} / 0'),
            q("scalar(absent_metric_xyz)"),
        ]
    )
    assert empty.value is None and empty.error is not None and "empty result" in empty.error
    assert multi.value is None and multi.error is not None
    assert "2 series" in multi.error and repr(many) in multi.error
    assert inf.value is None and inf.error is not None and "+Inf" in inf.error
    assert nan_scalar.value is None and nan_scalar.error is not None and "NaN" in nan_scalar.error


async def test_a_bad_query_fails_with_the_status_and_body(
    source: Source[PrometheusTrigger],
) -> None:
    (bad,) = await source.read([q("sum(")])
    assert bad.value is None and bad.error is not None
    assert "HTTP 400" in bad.error and "parse error" in bad.error and "'sum('" in bad.error
    (ok,) = await source.read([q("vector(3)")])  # a bad query does not back the server off
    assert ok.value == 3


async def test_server_down_fails_then_backs_off() -> None:
    src = PrometheusSource(f"http://127.0.0.1:{free_port()}", auth=None)
    try:
        (down,) = await src.read([q("up")])
        assert down.value is None and down.error is not None
        assert "ClientConnectorError: Cannot connect to host 127.0.0.1" in down.error
        (waiting,) = await src.read([q("up")])  # "backing off": answered without an attempt
        assert waiting.error is not None and "backing off" in waiting.error
    finally:
        await src.aclose()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def fake() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Serve a handler at ``/api/v1/query`` on a free port; yields a function giving its URL."""
    runners: list[web.AppRunner] = []

    async def serve(handler: Handler) -> str:
        app = web.Application()
        app.router.add_get("/prom/api/v1/query", handler)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}/prom/"

    yield serve
    for runner in runners:
        await runner.cleanup()


def scalar(value: str) -> web.Response:
    return web.json_response(
        {"status": "success", "data": {"resultType": "scalar", "result": [1.0, value]}}
    )


async def test_bearer_token_from_a_rotated_file(
    fake: Callable[[Handler], Awaitable[str]], tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("t1\n")
    environ = {
        "PROMETHEUS_BEARER_TOKEN_FILE": str(token),
        "PROMETHEUS_USERNAME": "ignored-when-a-token-is-set",
    }
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") not in ("Bearer t1", "Bearer t2"):
            return web.Response(status=401, text="unauthorized " + "x" * 1000)
        return scalar("4")

    src = PrometheusSource(await fake(handler), auth=PrometheusAuth.from_env(environ))
    try:
        assert (await src.read([q("up")]))[0].value == 4
        token.write_text("t2")
        assert (await src.read([q("up")]))[0].value == 4
        token.write_text("stale")
        (refused,) = await src.read([q("up")])
    finally:
        await src.aclose()
    assert seen == ["Bearer t1", "Bearer t2", "Bearer stale"]
    assert refused.error is not None and "HTTP 401" in refused.error
    assert "more chars" in refused.error and len(refused.error) < 400  # body truncated


async def test_basic_auth_from_the_environment(fake: Callable[[Handler], Awaitable[str]]) -> None:
    environ = {"PROMETHEUS_USERNAME": "alice", "PROMETHEUS_PASSWORD": "pw"}

    async def handler(request: web.Request) -> web.Response:
        ok = request.headers.get("Authorization") == "Basic YWxpY2U6cHc="
        return scalar("1") if ok else web.Response(status=401)

    src = PrometheusSource(await fake(handler), auth=PrometheusAuth.from_env(environ))
    try:
        assert (await src.read([q("up")]))[0].value == 1
    finally:
        await src.aclose()
    assert PrometheusAuth.from_env({}) is None


@pytest.mark.looptime  # the source's client and the fake server share the loop's fake clock
async def test_timeout_and_bounded_concurrency(fake: Callable[[Handler], Awaitable[str]]) -> None:
    running, peak, requests = 0, 0, 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal running, peak, requests
        running, requests = running + 1, requests + 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(5 if request.query["query"] == "slow" else 0.05)
        finally:
            running -= 1
        return scalar("2")

    url = await fake(handler)
    src = PrometheusSource(url, auth=None, max_concurrency=3, timeout_s=0.3)
    try:
        readings = await src.read([q(f"q{i % 12}") for i in range(24)])
        assert [r.value for r in readings] == [2] * 24
        assert requests == 12 and peak == 3  # one request per distinct query, 3 at a time
        loop = asyncio.get_running_loop()
        started = loop.time()
        (slow,) = await src.read([q("slow")])
        assert round(loop.time() - started, 6) == 0.3  # the timeout, not the 5 s answer
        assert slow.error is not None and "timed out after 0.3 s" in slow.error
    finally:
        await src.aclose()


async def test_an_injected_session_is_used_and_left_open(
    fake: Callable[[Handler], Awaitable[str]],
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return scalar("6") if request.headers.get("X-Tenant") == "t" else web.Response(status=403)

    url = await fake(handler)
    async with aiohttp.ClientSession(headers={"X-Tenant": "t"}) as session:
        src = PrometheusSource(url, session=session, auth=None)
        assert (await src.read([q("up")]))[0].value == 6
        await src.aclose()
        assert not session.closed


async def test_the_environments_auth_wins_over_credentials_in_the_url(
    fake: Callable[[Handler], Awaitable[str]],
) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return scalar("1")

    url = (await fake(handler)).replace("http://", "http://bob:pw@")
    with_env = PrometheusSource(url, auth=PrometheusAuth.from_env({"PROMETHEUS_BEARER_TOKEN": "t"}))
    url_only = PrometheusSource(url, auth=None)
    try:
        assert (await with_env.read([q("up")]))[0].value == 1
        assert (await url_only.read([q("up")]))[0].value == 1
    finally:
        await with_env.aclose()
        await url_only.aclose()
    assert seen == ["Bearer t", "Basic Ym9iOnB3"]  # base64("bob:pw")


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "http://bob:s3cr3t@/no-host",
        "http://bob:s3cr3t@[::1",
        "http://bob:s3cr3t@127.0.0.1:99999/",
        "ftp://bob:s3cr3t@127.0.0.1/",
    ],
)
async def test_an_invalid_url_fails_as_a_reading_without_its_password(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    src = PrometheusSource(url, auth=None)
    try:
        with caplog.at_level(logging.WARNING, logger="autoscaler.sources.prometheus"):
            (bad,) = await src.read([q("up")])
    finally:
        await src.aclose()
    assert bad.value is None and bad.error is not None
    assert "UrlClientError: not a valid http(s) URL; query 'up'" in bad.error
    assert "s3cr3t" not in bad.error and "s3cr3t" not in caplog.text
    assert "prometheus query failed" in caplog.text  # the failure is logged, redacted


def success(result_type: object, result: object) -> str:
    return json.dumps({"status": "success", "data": {"resultType": result_type, "result": result}})


@pytest.mark.parametrize(
    ("status", "body", "value", "error"),
    [
        (200, success("vector", [{"metric": {}, "value": [1, "3.5"]}]), 3.5, None),
        (200, success("scalar", [1, "-2"]), -2.0, None),
        (200, success("vector", []), None, "empty result"),
        (200, success("scalar", [1, "NaN"]), None, "NaN"),
        (200, success("vector", [{"value": [1, "1"]}, {"value": [1, "2"]}]), None, "2 series"),
        (200, success("matrix", []), None, "result type 'matrix'"),
        (200, success("string", [1, "x"]), None, "result type 'string'"),
        (200, success("scalar", [1, 3]), None, "malformed sample"),
        (200, success("scalar", [1, "abc"]), None, "not a number"),
        (200, '{"status": "error", "error": "boom"}', None, "not a success response"),
        (200, "<html>", None, "not JSON"),
        (503, "overloaded", None, "HTTP 503: overloaded"),
    ],
)
def test_response_table(status: int, body: str, value: float | None, error: str | None) -> None:
    reading = reading_from_response("http://p", "the_query", status, body)
    assert reading.value == value
    if error is None:
        assert reading.error is None
    else:
        assert reading.error is not None and error in reading.error
        assert reading.error.startswith("http://p: query 'the_query': ")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["NaN", "+Inf", "1", "0.5", "-3", "1e400"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["status", "data", "resultType", "result", "value", "metric", "x"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@given(status=st.integers(100, 599), doc=json_values)
def test_any_json_gives_a_reading(status: int, doc: object) -> None:
    reading = reading_from_response("http://p", "q", status, json.dumps(doc))
    assert isinstance(reading, Reading)
    assert (reading.value is None) != (reading.error is None)
    assert reading.value is None or math.isfinite(reading.value)


@given(body=st.text(max_size=200))
def test_any_text_gives_a_reading(body: str) -> None:
    assert isinstance(reading_from_response("http://p", "q", 200, body), Reading)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_finite_values_round_trip(value: float) -> None:
    doc = success("vector", [{"metric": {"a": "b"}, "value": [1.5, repr(value)]}])
    assert reading_from_response("http://p", "q", 200, doc).value == value
