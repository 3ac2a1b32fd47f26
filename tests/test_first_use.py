"""The rough edges a new user hit (issue 15): each bad flag, value or file is one line and
exit 2, found before anything starts; local mode is a leader; the docs' examples work."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from autoscaler.app.local import LocalRun
from autoscaler.cli import main
from autoscaler.demo.redisserver import free_port
from autoscaler.demo.run import DemoOptions, demo_workload

ROOT = Path(__file__).resolve().parent.parent
CONSUME = ["consume", "--queue", "q", "--forward", "http://127.0.0.1:9/process"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--redis-url", "http://x"], "argument --redis-url: not a redis:// URL"),
        (["demo", "--metrics-port", "99999"], "argument --metrics-port: not a port"),
        (["demo", "--log-level", "LOUD"], "argument --log-level: not a log level: 'LOUD'"),
        (["run", "--log-level", "LOUD"], "argument --log-level: not a log level: 'LOUD'"),
        ([*CONSUME, "--log-level", "LOUD"], "argument --log-level: not a log level"),
        (["demo", "--plot", "{tmp}/missing/t.png"], "directory {tmp}/missing does not exist"),
        (["demo", "--plot", "{tmp}"], "must end in .png, .svg, .pdf"),
        (["demo", "--plot", "{tmp}/t.bmp"], "must end in .png, .svg, .pdf"),
        (
            ["demo", "--export", "{tmp}/a-file"],
            "argument --export: {tmp}/a-file: exists and is not",
        ),
        (["demo", "--log-dir", "{tmp}/a-file"], "argument --log-dir: {tmp}/a-file: exists and is"),
        (["simulate", "--plot", "{tmp}/x.svgz"], "must end in .png, .svg, .pdf"),
        # absurd intervals: a heartbeat every nanosecond was 77,000 Redis commands in 2.5 s
        ([*CONSUME, "--heartbeat-interval", "1e-9"], "--heartbeat-interval: must be at least"),
        ([*CONSUME, "--reconcile-interval", "0"], "--reconcile-interval: must be at least"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2_before_anything_starts(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit) as exited:
        main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert message.format(tmp=tmp_path) in err
    assert "Traceback" not in err


def test_demo_with_an_unreachable_redis_exits_2_without_echoing_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"redis://user:sekret@127.0.0.1:{free_port()}/0"  # nothing listens there
    assert main(["demo", "--redis-url", url, "--messages", "1"]) == 2
    err = capsys.readouterr().err
    assert "autoscaler demo: --redis-url: redis://user:***@127.0.0.1" in err
    assert "cannot connect" in err
    assert "sekret" not in err and "Traceback" not in err


def test_run_local_with_a_command_not_on_path_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "workers.yaml"
    path.write_text(
        "- name: thumbs\n  redis-list: images\n  messages-per-replica: 20\n"
        "  command: no-such-worker-binary --queue {queue}\n"
    )
    argv = ["run", "--local", str(path), "--redis-url", "redis://127.0.0.1:9/0"]
    assert main([*argv, "--metrics-port", "0"]) == 2  # not retried for ever
    err = capsys.readouterr().err
    assert f"{path}:1: key command: 'no-such-worker-binary' is not on PATH" in err


def test_run_on_a_busy_metrics_port_exits_2_naming_the_flag(tmp_path: Path) -> None:
    """The real command in a process of its own; the API server it names is never reached
    (loading a kubeconfig makes no request), so the port is the first thing that fails."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{free_port()}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    with socket.create_server(("0.0.0.0", 0)) as busy:  # where the controller listens
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "autoscaler", "run", "--kubeconfig", str(kubeconfig),
             "--metrics-port", str(port)],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"autoscaler run: --metrics-port: cannot listen on {port}: ")


async def test_local_mode_is_its_own_leader(redis_url: str) -> None:
    """No election in local mode: ``queue_autoscaler_leader`` is 1, or NoLeader fires."""
    run = LocalRun([demo_workload(DemoOptions(), "q", "rec")], redis_url=redis_url)
    try:
        assert run.registry.get_sample_value("queue_autoscaler_leader") == 1
    finally:
        await run.aclose()


@pytest.mark.parametrize(("env", "level"), [("debug", "DEBUG"), (None, "INFO")])
def test_consume_takes_its_log_level_from_LOG_LEVEL(env: str | None, level: str) -> None:
    """What the docs' ``run --local`` example sets with ``env: {LOG_LEVEL: info}``."""
    environ = {k: v for k, v in os.environ.items() if k != "LOG_LEVEL"}
    if env is not None:
        environ["LOG_LEVEL"] = env
    code = (
        "from autoscaler.cli import build_parser; "
        f"print(build_parser().parse_args({CONSUME!r}).log_level)"
    )
    done = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    assert done.stdout.strip() == level


def test_make_demo_needs_only_redis_server() -> None:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("demo:"))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("\t"))
    target = "\n".join(lines[start:end])
    assert "redis-server" in target
    assert "prometheus" not in target
    assert "system-deps\n" not in target and "system-deps " not in target  # that one has it
