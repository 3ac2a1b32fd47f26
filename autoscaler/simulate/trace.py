"""Workload traces: ``t_s,arrivals`` CSV files, parsed with errors that name file and line.

A trace is the number of messages arriving in each second. The format is deliberately
small so that a trace can be exported from anything (a Redis ``INFO`` scrape, a log
count, a spreadsheet)::

    t_s,arrivals        ← header, exactly these two names
    0,5                 ← 5 messages arrive at second 0
    3,1000              ← seconds 1 and 2 are absent: nothing arrived then
    # a comment         ← blank lines and lines starting with # are skipped

``t_s`` is a whole number of seconds from the start, strictly increasing (a duplicate or a
step back is an error, not something to sort silently: it usually means two files were
glued together). ``arrivals`` is a whole, non-negative count. The trace lasts until
``last t_s + 1``: trailing ``t,0`` rows are meaningful, they keep the simulation (and the
replica bill) running through an idle tail.

Every problem raises :class:`~autoscaler.errors.InputError` as ``FILE:LINE: what``; no
other exception escapes, whatever the bytes (a hypothesis test holds us to it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from autoscaler.errors import InputError

HEADER = ("t_s", "arrivals")
# A guard against a typo'd timestamp turning a replay into a month of idle polling.
MAX_T_S = 31 * 24 * 3600
_WHOLE = re.compile(r"[0-9]+")
BUNDLED = ("steady", "burst", "diurnal", "spiky")


@dataclass(frozen=True)
class Trace:
    """Seconds with arrivals (``times`` strictly increasing) and the trace's length."""

    source: str
    times: tuple[int, ...]
    arrivals: tuple[int, ...]
    end_s: int  # last t_s + 1: the trace covers [0, end_s)

    @property
    def total(self) -> int:
        return sum(self.arrivals)

    @property
    def first_arrival_s(self) -> int | None:
        return next((t for t, n in zip(self.times, self.arrivals, strict=True) if n > 0), None)


def parse_trace(data: bytes, source: str) -> Trace:
    """Parse the bytes of a trace file; ``source`` names it in error messages."""
    text = _decode(data, source)
    times: list[int] = []
    arrivals: list[int] = []
    seen_header = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        fields = tuple(f.strip() for f in line.split(","))
        if not seen_header:
            if fields != HEADER:
                raise InputError(f"{where}: expected the header 't_s,arrivals', got {_show(line)}")
            seen_header = True
            continue
        t_s, count = _row(fields, where)
        if times and t_s <= times[-1]:
            what = "duplicate" if t_s == times[-1] else "out of order"
            raise InputError(
                f"{where}: t_s {t_s} is {what}: it must be greater than the previous row's "
                f"{times[-1]}"
            )
        times.append(t_s)
        arrivals.append(count)
    if not seen_header:
        raise InputError(f"{source}: empty: expected the header 't_s,arrivals' and rows")
    if not times:
        raise InputError(f"{source}: no rows after the header 't_s,arrivals'")
    return Trace(source, tuple(times), tuple(arrivals), times[-1] + 1)


def load_trace(name_or_path: str) -> Trace:
    """A trace file, or a bundled trace by name (``burst``, ``steady``, ``diurnal``, ``spiky``)."""
    if name_or_path in BUNDLED and not Path(name_or_path).exists():
        resource = resources.files("autoscaler") / "data" / f"trace-{name_or_path}.csv"
        return parse_trace(resource.read_bytes(), f"<bundled {name_or_path}>")
    path = Path(name_or_path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        names = ", ".join(BUNDLED)
        raise InputError(f"{path}: no such file (bundled traces: {names})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from e
    return parse_trace(data, str(path))


def _decode(data: bytes, source: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"{source}:{line}: not UTF-8 text (byte {e.start})") from None
    return text.removeprefix("\ufeff")  # a BOM from a spreadsheet export is harmless


def _row(fields: tuple[str, ...], where: str) -> tuple[int, int]:
    if len(fields) != 2:
        raise InputError(f"{where}: expected 2 fields 't_s,arrivals', got {len(fields)}")
    t_text, count_text = fields
    if count_text.startswith("-") and _WHOLE.fullmatch(count_text[1:]):
        raise InputError(f"{where}: arrivals {count_text} is negative")
    if not _WHOLE.fullmatch(t_text):
        raise InputError(f"{where}: t_s {_show(t_text)} is not a whole number of seconds ≥ 0")
    if not _WHOLE.fullmatch(count_text):
        raise InputError(f"{where}: arrivals {_show(count_text)} is not a whole number ≥ 0")
    t_s = int(t_text)
    if t_s > MAX_T_S:
        raise InputError(f"{where}: t_s {t_s} is beyond the {MAX_T_S} s (31 days) limit")
    return t_s, int(count_text)


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "…")
