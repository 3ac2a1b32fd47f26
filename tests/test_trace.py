"""The trace parser: precise errors (file:line), and no crash whatever the bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.errors import InputError
from autoscaler.simulate.trace import BUNDLED, MAX_T_S, Trace, load_trace, parse_trace

REPO = Path(__file__).resolve().parent.parent


def test_parses_rows_comments_blank_lines_bom_and_crlf() -> None:
    data = "\ufeff# exported\r\nt_s, arrivals\r\n\r\n0,5\r\n3 , 1000\r\n# idle tail\r\n9,0\r\n"
    trace = parse_trace(data.encode(), "x.csv")
    assert trace == Trace("x.csv", (0, 3, 9), (5, 1000, 0), 10)
    assert trace.total == 1005
    assert trace.first_arrival_s == 0


def test_first_arrival_skips_zero_rows() -> None:
    assert parse_trace(b"t_s,arrivals\n0,0\n7,2\n", "x").first_arrival_s == 7
    assert parse_trace(b"t_s,arrivals\n0,0\n", "x").first_arrival_s is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "x.csv: empty: expected the header"),
        ("# only a comment\n", "x.csv: empty"),
        ("0,5\n1,3\n", "x.csv:1: expected the header 't_s,arrivals', got '0,5'"),
        ("time,count\n0,5\n", "x.csv:1: expected the header"),
        ("t_s,arrivals\n", "x.csv: no rows after the header"),
        ("t_s,arrivals\n0,1\n1,2,3\n", "x.csv:3: expected 2 fields 't_s,arrivals', got 3"),
        ("t_s,arrivals\n0\n", "x.csv:2: expected 2 fields"),
        ("t_s,arrivals\n0,1\n\n2,-3\n", "x.csv:4: arrivals -3 is negative"),
        ("t_s,arrivals\n0,x\n", "x.csv:2: arrivals 'x' is not a whole number"),
        ("t_s,arrivals\n0,1.5\n", "x.csv:2: arrivals '1.5' is not a whole number"),
        ("t_s,arrivals\n-1,1\n", "x.csv:2: t_s '-1' is not a whole number of seconds"),
        ("t_s,arrivals\n0.5,1\n", "x.csv:2: t_s '0.5' is not a whole number"),
        ("t_s,arrivals\n,1\n", "x.csv:2: t_s '' is not a whole number"),
        ("t_s,arrivals\n0,1\n5,1\n5,2\n", "x.csv:4: t_s 5 is duplicate"),
        ("t_s,arrivals\n0,1\n5,1\n4,2\n", "x.csv:4: t_s 4 is out of order"),
        (f"t_s,arrivals\n{MAX_T_S + 1},1\n", "x.csv:2: t_s 2678401 is beyond"),
        ("t_s,arrivals\n٣,1\n", "x.csv:2: t_s '٣' is not a whole number"),  # not ASCII digits
    ],
)
def test_bad_input_names_file_and_line(text: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_trace(text.encode(), "x.csv")
    assert message in str(caught.value)


def test_bytes_that_are_not_utf8_name_the_line() -> None:
    with pytest.raises(InputError, match=r"x.csv:3: not UTF-8 text"):
        parse_trace(b"t_s,arrivals\n0,1\n\xff\xfe,2\n", "x.csv")


def test_missing_file_names_it_and_the_bundled_traces(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(InputError, match=rf"{missing}: no such file \(bundled traces: steady"):
        load_trace(str(missing))


def test_a_directory_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=str(tmp_path)):
        load_trace(str(tmp_path))


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_traces_load_by_name_and_match_the_examples(name: str) -> None:
    bundled = load_trace(name)
    example = load_trace(str(REPO / "examples" / "traces" / f"{name}.csv"))
    assert bundled.times == example.times
    assert bundled.arrivals == example.arrivals
    assert bundled.total > 0


def test_burst_is_a_thousand_messages_in_one_second_after_two_idle_minutes() -> None:
    burst = load_trace("burst")
    assert [(t, n) for t, n in zip(burst.times, burst.arrivals, strict=True) if n] == [(120, 1000)]
    assert burst.end_s >= 120 + 15 * 60


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_a_trace_or_an_input_error(data: bytes) -> None:
    _check_never_crashes(data)


_line = st.one_of(
    st.just("t_s,arrivals"),
    st.from_regex(r"\A-?[0-9]{1,4} ?, ?-?[0-9]{1,4}\Z"),
    st.text(alphabet="0123456789,-.# \t\r", max_size=12),
)


@given(st.lists(_line, max_size=12))
def test_csv_like_text_gives_a_trace_or_an_input_error(lines: list[str]) -> None:
    _check_never_crashes("\n".join(lines).encode())


def _check_never_crashes(data: bytes) -> None:
    try:
        trace = parse_trace(data, "fuzz.csv")
    except InputError as e:
        assert str(e).startswith("fuzz.csv")
        return
    assert trace.times, "a trace has rows"
    assert all(a < b for a, b in zip(trace.times, trace.times[1:], strict=False))
    assert all(n >= 0 for n in trace.arrivals)
    assert trace.end_s == trace.times[-1] + 1
