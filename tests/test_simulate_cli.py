"""``autoscaler simulate`` end to end through ``autoscaler.cli.main``: output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoscaler.cli import main
from autoscaler.simulate.report import METRICS

TRACE = "t_s,arrivals\n0,0\n20,200\n" + "".join(f"{t},0\n" for t in range(21, 400))


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "short.csv"
    path.write_text(TRACE)
    return path


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_json_has_both_policies_with_every_metric(
    trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--trace", str(trace), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document["policies"]) == {"queue_autoscaler", "keda_hpa"}
    for summary in document["policies"].values():
        assert set(summary) == set(METRICS)
        assert summary["unfinished_messages"] == 0
    assert document["policies"]["queue_autoscaler"]["interrupted_messages"] == 0
    assert document["inputs"]["messages"] == 200
    assert document["inputs"]["keda_hpa"]["polling_interval_s"] == 30


def test_table_by_default_and_flags_reach_the_model(
    trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write(
        tmp_path, "spec.yaml", "queue-autoscaler.io/redis-list: jobs\nmessages-per-replica: 5\n"
    )
    argv = ["simulate", "--trace", str(trace), "--spec", spec, "--service-time", "0.5"]
    assert main([*argv, "--concurrency", "2", "--startup-delay", "3"]) == 0
    out = capsys.readouterr().out
    assert "service 0.5 s × 2 slot(s) per replica, startup 3 s" in out
    assert "5 msgs/replica" in out
    lines = out.splitlines()
    assert any(line.startswith("short") and "queue_autoscaler" in line for line in lines)
    assert any(line.startswith("short") and "keda_hpa" in line for line in lines)


def test_bundled_trace_by_name_several_traces_and_a_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "out.png"
    assert (
        main(["simulate", "--trace", "burst", "--trace", "spiky", "--json", "--plot", str(png)])
        == 0
    )
    document = json.loads(capsys.readouterr().out)
    assert set(document["traces"]) == {"burst", "spiky"}
    assert document["traces"]["burst"]["inputs"]["messages"] == 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("files", "flags", "message"),
    [
        ({"t.csv": "t_s,arrivals\n0,1\n1,x\n"}, [], "t.csv:3: arrivals 'x'"),
        ({"t.csv": "t_s,arrivals\n0,-4\n"}, [], "t.csv:2: arrivals -4 is negative"),
        ({"t.csv": "t_s,arrivals\n5,1\n5,1\n"}, [], "t.csv:3: t_s 5 is duplicate"),
        ({"t.csv": "0,1\n"}, [], "t.csv:1: expected the header"),
        (
            {
                "t.csv": TRACE,
                "s.yaml": "redis-list: q\nmessages-per-replica: 10\nscale-up-max-pod: 9\n",
            },
            ["--spec"],
            "s.yaml:3: annotation scale-up-max-pod",
        ),
        (
            {"t.csv": TRACE, "s.yaml": "redis-list: q\nmessages-per-replica: ten\n"},
            ["--spec"],
            "s.yaml:2: annotation messages-per-replica",
        ),
        (
            {"t.csv": TRACE, "s.yaml": "redis-list: q\n  bad: [\n"},
            ["--spec"],
            "s.yaml:2: not valid YAML",
        ),
        (
            {"t.csv": TRACE, "s.yaml": "redis-list: q\nredis-list: r\n"},
            ["--spec"],
            "s.yaml:2: redis-list: duplicate key (first on line 1)",
        ),
        ({"t.csv": TRACE, "s.yaml": "- a\n"}, ["--spec"], "s.yaml:1: expected a mapping"),
        ({"t.csv": TRACE, "s.yaml": ""}, ["--spec"], "s.yaml: empty"),
        ({"t.csv": TRACE, "s.yaml": "redis-list: {a: 1}\n"}, ["--spec"], "s.yaml:1: redis-list"),
        (
            {"t.csv": TRACE, "s.yaml": "prometheus-query: up\nprometheus-target: 1\n"},
            ["--spec"],
            "simulate needs a redis-list trigger",
        ),
        ({"t.csv": TRACE}, ["--service-time", "0"], "--service-time: 0: expected seconds > 0"),
        (
            {"t.csv": TRACE},
            ["--service-time", "0.001"],
            "--service-time: 0.001: expected a multiple",
        ),
        ({"t.csv": TRACE}, ["--concurrency", "0"], "--concurrency: 0"),
        ({"t.csv": TRACE}, ["--startup-delay", "nan"], "--startup-delay: nan"),
    ],
)
def test_bad_input_exits_2_naming_file_and_line_or_key_or_flag(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    files: dict[str, str],
    flags: list[str],
    message: str,
) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    argv = ["simulate", "--trace", str(tmp_path / "t.csv")]
    if flags == ["--spec"]:
        argv += ["--spec", str(tmp_path / "s.yaml")]
    else:
        argv += flags
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--trace", "--spec"])
def test_a_missing_file_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    missing = tmp_path / "missing.file"
    assert main(["simulate", flag, str(missing)]) == 2
    assert f"{missing}: no such file" in capsys.readouterr().err


def test_a_flag_that_is_not_a_number_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--concurrency", "two"])
    assert exited.value.code == 2
    assert "--concurrency" in capsys.readouterr().err
