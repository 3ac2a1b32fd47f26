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


# ---- what a user reads (issue 15) ----------------------------------------------------------


def test_the_table_explains_its_columns_and_judges_nothing(
    trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--trace", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "goal" not in out and "NOT met" not in out  # the project's own target is not news
    head = next(line for line in out.splitlines() if line.startswith("trace"))
    assert "reversals" in head and "first_up_after_s" in head
    legend = out.split("columns:")[1].splitlines()
    for column in ("reversals", "first_up_after_s", "replica_s", "interrupted"):
        assert any(line.strip().startswith(column) for line in legend)
    assert "queue-autoscaler vs KEDA + HPA:" in out


@pytest.mark.parametrize(("suffix", "magic"), [(".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_plot_format_follows_the_extension_and_says_where_it_went(
    trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str, magic: bytes
) -> None:
    path = tmp_path / f"out{suffix}"
    assert main(["simulate", "--trace", str(trace), "--json", "--plot", str(path)]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)  # stdout stays the JSON alone
    assert f"simulate: plot written to {path}" in captured.err
    assert path.read_bytes().startswith(magic)


def test_a_long_replay_reports_its_progress() -> None:
    from autoscaler.simulate import Params, run
    from autoscaler.simulate.ours import Ours, default_spec
    from autoscaler.simulate.trace import parse_trace

    rows = "".join(f"{t},{t % 7}\n" for t in range(2000))
    trace = parse_trace(("t_s,arrivals\n" + rows).encode(), "long")
    seen: list[tuple[str, float]] = []
    run(trace, Ours(default_spec(), 1), Params(), progress=lambda p, share: seen.append((p, share)),
        progress_every=100)  # fmt: skip
    shares = [share for _, share in seen]
    assert len(seen) > 5 and {p for p, _ in seen} == {"queue_autoscaler"}
    assert shares == sorted(shares) and shares[0] > 0 and shares[-1] <= 1.0


def test_keda_keeps_only_the_scale_events_of_its_periods() -> None:
    """Summing a whole run's scale events each sync made a 1,000,000-second trace take
    minutes; the HPA too forgets events older than its policy periods."""
    from autoscaler.simulate import Params, run
    from autoscaler.simulate.keda import KedaHpa, KedaSettings
    from autoscaler.simulate.ours import default_spec
    from autoscaler.simulate.trace import parse_trace

    rows = "".join(f"{t},{200 if t % 600 < 30 else 0}\n" for t in range(6000))
    trace = parse_trace(("t_s,arrivals\n" + rows).encode(), "bursts")
    keda = KedaHpa(KedaSettings.like(default_spec()), 1)
    result = run(trace, keda, Params())
    assert result.scale_events > 20  # it did scale, up and down, many times
    last = result.end_tick
    settings = keda.settings
    assert all(at > last - settings.scale_up_period_s - 60 for at, _ in keda.scale_ups)
    assert all(at > last - settings.scale_down_period_s - 60 for at, _ in keda.scale_downs)
    assert len(keda.scale_ups) + len(keda.scale_downs) < result.scale_events
