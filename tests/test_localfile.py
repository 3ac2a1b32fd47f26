"""The ``run --local`` file: good files parse, bad ones name file, line and key."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from autoscaler.app.local import check_urls, run_local
from autoscaler.errors import InputError
from autoscaler.targets.local.file import fill, load_local_file, parse_local_file

GOOD = """\
- name: cities
  redis-list: jobs
  messages-per-replica: 10
  max-replicas: 8
  polling-interval: 1s
  command: [python, -m, worker, --id, "{replica_id}", --queue, "{queue}"]
  env:
    TARGET: "{redis_url}"
- name: thumbs
  redis-list: images,videos
  redis-url: redis://127.0.0.1:6379/1
  messages-per-replica: 5
  min-replicas: 1
  replicas: 2
  command: autoscaler consume --queue {queue} --meta '{"k":1}'
"""


def test_good_file_parses() -> None:
    cities, thumbs = parse_local_file(GOOD, "w.yaml")
    assert cities.name == "cities" and cities.queue == "jobs"
    assert cities.spec.max_replicas == 8 and cities.spec.polling_interval_s == 1.0
    assert cities.spec_keys["polling-interval"] == "1s"  # the text as written
    assert cities.command[-3:] == ("{replica_id}", "--queue", "{queue}")
    assert cities.env == {"TARGET": "{redis_url}"}
    assert cities.initial_replicas is None and cities.where == "w.yaml:1"
    assert thumbs.queue == "images" and thumbs.initial_replicas == 2
    assert thumbs.command[:2] == ("autoscaler", "consume")  # split like a shell, no shell
    assert thumbs.command[-1] == '{"k":1}'  # other braces stay
    assert thumbs.where == "w.yaml:9"


def test_workloads_key_and_fill() -> None:
    text = "workloads:\n  - {name: a, redis-list: q, messages-per-replica: 1, command: [w]}\n"
    [w] = parse_local_file(text, "f.yaml")
    assert w.name == "a"
    assert fill("{queue}/{replica_id}/{x}", {"queue": "q", "replica_id": "a-1"}) == "q/a-1/{x}"


BAD = [
    ("", "f.yaml: empty"),
    ("- name: a\n  command: [x]\n  redis-list: [q\n", "f.yaml:4: not valid YAML"),
    ("name: a\n", "f.yaml:1: expected a list of workloads"),
    ("- redis-list: q\n  command: [x]\n", "f.yaml:1: key name: missing"),
    ("- name: Bad_Name\n", "f.yaml:1: key name: 'Bad_Name'"),
    (
        "- name: a\n  redis-list: q\n  messages-per-replica: 10\n  max-replicas: zero\n"
        "  command: [x]\n",
        "f.yaml:4: key max-replicas: 'zero': expected an integer ≥ 1",
    ),
    (
        "- name: a\n  redis-list: q\n  messages-per-replica: 10\n  polling-intervall: 1s\n"
        "  command: [x]\n",
        "f.yaml:4: key polling-intervall: '1s': expected one of the documented keys "
        "(did you mean polling-interval?)",
    ),
    (
        "- name: a\n  redis-list: q\n  command: [x]\n",
        "f.yaml:1: key messages-per-replica: missing: expected a number > 0",
    ),
    ("- name: a\n  redis-list: q\n  messages-per-replica: 1\n", "f.yaml:1: key command: missing"),
    (
        "- name: a\n  redis-list: q\n  messages-per-replica: 1\n  command: [x, '{queu}']\n",
        "f.yaml:4: key command: unknown placeholder {queu}",
    ),
    (
        "- name: a\n  redis-list: q\n  messages-per-replica: 1\n  command: x\n  env: {1X: y}\n",
        "f.yaml:5: key env: '1X' is not a variable name",
    ),
    (
        "- name: a\n  redis-list: q\n  messages-per-replica: 1\n  max-replicas: 3\n"
        "  replicas: 9\n  command: x\n",
        "f.yaml:5: key replicas: '9': expected an integer from min-replicas (0) to "
        "max-replicas (3)",
    ),
    (
        "- name: a\n  redis-list: q\n  redis-list: r\n",
        "f.yaml:3: key redis-list: duplicate (first on line 2)",
    ),
    (
        "- {name: a, redis-list: q, messages-per-replica: 1, command: x}\n"
        "- {name: a, redis-list: r, messages-per-replica: 1, command: x}\n",
        "f.yaml:2: key name: 'a' is already used at f.yaml:1",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_file_names_file_line_and_key(text: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        parse_local_file(text, "f.yaml")
    assert str(info.value).startswith(message), str(info.value)


def test_missing_file_and_missing_redis_url(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.yaml: no such file"):
        load_local_file(str(tmp_path / "nope.yaml"))
    path = tmp_path / "w.yaml"
    path.write_text("- {name: a, redis-list: q, messages-per-replica: 1, command: x}\n")
    with pytest.raises(InputError, match=r"w.yaml:1: key redis-url: missing, and --redis-url"):
        check_urls(load_local_file(str(path)), None)


async def test_run_local_bad_file_raises_input_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(GOOD).replace("max-replicas: 8", "max-replicas: -1"))
    with pytest.raises(InputError, match=r"bad.yaml:4: key max-replicas: '-1'"):
        await run_local(
            str(path), redis_url=None, metrics_port=0, dry_run=False, stop=asyncio.Event()
        )


def test_cli_run_local_bad_file_exits_2_naming_file_line_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from autoscaler.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("max-replicas: 8", "max-replicas: zero"))
    assert main(["run", "--local", str(path), "--metrics-port", "0"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:4: key max-replicas: 'zero': expected an integer ≥ 1" in err


def test_cli_run_local_runs_and_stops_its_processes_on_sigterm(
    tmp_path: Path, redis_url: str
) -> None:
    import signal
    import subprocess
    import sys

    from tests.servers import wait_until
    from tests.test_local_target import pids_with

    marker = f"qa-run-local-{tmp_path.name}"
    path = tmp_path / "w.yaml"
    path.write_text(
        "- name: sleepers\n  redis-list: jobs\n  messages-per-replica: 10\n  replicas: 2\n"
        "  min-replicas: 2\n"  # stays at 2: the check below must not race a scale-down
        f"  command: [{sys.executable}, -c, 'import time; time.sleep(600)', {marker}]\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "autoscaler", "run", "--local", str(path),
         "--redis-url", redis_url, "--metrics-port", "0"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(lambda: len(pids_with(marker)) == 2, 20, "two replicas")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()
    assert pids_with(marker) == []
