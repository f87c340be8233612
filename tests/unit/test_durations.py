"""Unit tests for unbroken.core.durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unbroken.core.durations import (
    InvalidDuration,
    format_duration,
    format_rfc3339,
    format_rfc3339_ms,
    format_rfc3339_nanos,
    parse_delay_ms,
    parse_duration_ms,
)
from unbroken.core.read_model import rfc3339

NO_UNIT = "expected to find unit designator suffix (e.g. '10s', '500ms', 'PT1S')"


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("10s", 10_000),
        ("500ms", 500),
        ("60sec", 60_000),
        ("60 sec", 60_000),
        ("1h", 3_600_000),
        ("1h 30m", 5_400_000),
        ("1h30m", 5_400_000),
        ("1h, 30m", 5_400_000),
        ("1h,30m", 5_400_000),
        ("2 days", 172_800_000),
        ("5 hours", 18_000_000),
        ("1d", 86_400_000),
        ("1m", 60_000),
        ("100 milliseconds", 100),
        ("1.5s", 1_500),
        (".5s", 500),
        ("1.s", 1_000),
        ("1w", 604_800_000),
        ("2 weeks", 1_209_600_000),
        ("1d 2h 3m 4s 5ms", 93_784_005),
        ("  10s  ", 10_000),
        ("+10s", 10_000),
        ("10S", 10_000),
        ("1H 30M", 5_400_000),
        ("0s", 0),
        ("0.0001s", 0),
        ("1.9999ms", 1),
        ("PT60S", 60_000),
        ("P1D", 86_400_000),
        ("PT1H30M", 5_400_000),
        ("PT0.5S", 500),
        ("pt1s", 1_000),
        ("P1W", 604_800_000),
        ("P1DT1H", 90_000_000),
        ("PT1.5M", 90_000),
        ("PT0S", 0),
    ],
)
def test_parse_duration_ms_accepts(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize(
    ("units", "ns_per_unit"),
    [
        (["ns", "nsec", "nsecs", "nanosecond", "nanoseconds"], 1),
        (["us", "µs", "μs", "usec", "usecs", "microsecond", "microseconds"], 1_000),
        (["ms", "msec", "msecs", "millisecond", "milliseconds"], 1_000_000),
        (["s", "sec", "secs", "second", "seconds"], 1_000_000_000),
        (["m", "min", "mins", "minute", "minutes"], 60_000_000_000),
        (["h", "hr", "hrs", "hour", "hours"], 3_600_000_000_000),
        (["d", "day", "days"], 86_400_000_000_000),
        (["w", "week", "weeks"], 604_800_000_000_000),
    ],
)
def test_all_unit_aliases(units: list[str], ns_per_unit: int) -> None:
    for unit in units:
        for spelled in (unit, unit.upper(), unit.capitalize()):
            assert parse_duration_ms(f"3000000{spelled}") == 3_000_000 * ns_per_unit // 1_000_000
            assert parse_duration_ms(f"3000000 {spelled}") == 3_000_000 * ns_per_unit // 1_000_000


def test_sub_millisecond_rounds_down() -> None:
    assert parse_duration_ms("999us") == 0
    assert parse_duration_ms("1999999ns") == 1
    assert parse_duration_ms("1ms 999us") == 1


@pytest.mark.parametrize("text", ["1000", "0", "10 ", "1.5", "1h 30"])
def test_bare_number_rejected_with_hint(text: str) -> None:
    with pytest.raises(InvalidDuration) as exc:
        parse_duration_ms(text)
    assert str(exc.value) == f"invalid duration '{text}': {NO_UNIT}"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("+", "empty duration"),
        ("-1s", "negative durations are not allowed"),
        ("-PT1S", "negative durations are not allowed"),
        ("5s ago", "negative durations are not allowed"),
        ("10x", "unknown unit designator 'x'"),
        ("1y", "unknown unit designator 'y'"),
        ("1s 1h", "units must be given from largest to smallest, each at most once"),
        ("1s 2s", "units must be given from largest to smallest, each at most once"),
        ("1.5h 30m", "only the last part of a duration may have a fraction"),
        ("10s,", "unexpected character ',' at position 3"),
        ("10s;", "unexpected character ';' at position 3"),
        ("ten seconds", "unexpected character 't' at position 0"),
        ("\u0661s", "unexpected character '\u0661' at position 0"),
        ("PT", "ISO-8601 duration has no components"),
        ("P", "ISO-8601 duration has no components"),
        ("P1DT", "ISO-8601 duration has no components"),
        ("P1Y", "not a valid ISO-8601 duration (e.g. 'PT1S', 'P1D', 'PT1H30M')"),
        ("P1M", "not a valid ISO-8601 duration (e.g. 'PT1S', 'P1D', 'PT1H30M')"),
        ("PT1S1H", "not a valid ISO-8601 duration (e.g. 'PT1S', 'P1D', 'PT1H30M')"),
        ("PT-1S", "not a valid ISO-8601 duration (e.g. 'PT1S', 'P1D', 'PT1H30M')"),
        ("PT1.5H30M", "only the last component of a duration may have a fraction"),
    ],
)
def test_parse_duration_ms_rejects(text: str, reason: str) -> None:
    with pytest.raises(InvalidDuration) as exc:
        parse_duration_ms(text)
    assert str(exc.value) == f"invalid duration '{text}': {reason}"
    assert isinstance(exc.value, ValueError)


def test_rejects_overlong_and_too_large() -> None:
    with pytest.raises(InvalidDuration, match="too long"):
        parse_duration_ms("1" * 300 + "s")
    with pytest.raises(InvalidDuration, match="duration too large"):
        parse_duration_ms(f"{2**63}ms")
    assert parse_duration_ms(f"{2**63 - 1}ms") == 2**63 - 1


# -- parse_delay_ms ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [("1500", 1500), ("0", 0), (" 42 ", 42), ("1.5s", 1500), ("PT2S", 2000), ("10 sec", 10_000)],
)
def test_parse_delay_ms(text: str, ms: int) -> None:
    assert parse_delay_ms(text) == ms


@pytest.mark.parametrize("text", ["-5", "", "1.5", "abc", "\u0661\u0662", "5x"])
def test_parse_delay_ms_rejects(text: str) -> None:
    with pytest.raises(InvalidDuration):
        parse_delay_ms(text)


def test_parse_delay_ms_too_large() -> None:
    with pytest.raises(InvalidDuration, match="duration too large"):
        parse_delay_ms(str(2**63))


# -- format_duration --------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (1, "1ms"),
        (500, "500ms"),
        (1_000, "1s"),
        (2_500, "2s 500ms"),
        (60_000, "1m"),
        (600_000, "10m"),
        (5_400_000, "1h 30m"),
        (86_400_000, "1d"),
        (8 * 86_400_000, "8d"),
        (93_784_005, "1d 2h 3m 4s 5ms"),
        (86_400_001, "1d 1ms"),
    ],
)
def test_format_duration(ms: int, text: str) -> None:
    assert format_duration(ms) == text


def test_format_duration_rejects_negative() -> None:
    with pytest.raises(ValueError):
        format_duration(-1)


@given(st.integers(min_value=0, max_value=10**15))
def test_prop_format_then_parse_round_trips(ms: int) -> None:
    assert parse_duration_ms(format_duration(ms)) == ms


# -- RFC 3339 ---------------------------------------------------------------------


def test_format_rfc3339_ms() -> None:
    assert format_rfc3339_ms(1_795_636_929_374) == "2026-11-25T20:02:09.374+00:00"
    assert format_rfc3339_ms(0) == "1970-01-01T00:00:00.000+00:00"
    assert format_rfc3339_ms(-1) == "1969-12-31T23:59:59.999+00:00"


def test_format_rfc3339_nanos() -> None:
    assert format_rfc3339_nanos(1_795_550_453_299) == "2026-11-24T20:00:53.299000000Z"
    assert format_rfc3339_nanos(0) == "1970-01-01T00:00:00.000000000Z"
    assert format_rfc3339_nanos(-1) == "1969-12-31T23:59:59.999000000Z"


def test_the_admin_timestamps_use_the_same_formatter() -> None:
    assert rfc3339(1_795_636_929_374) == format_rfc3339(1_795_636_929_374) == "2026-11-25T20:02:09.374Z"
    assert rfc3339(0) is None and rfc3339(None) is None  # not set
    # Years before 1000 keep their four digits (strftime's %Y dropped the zeros on Linux).
    assert rfc3339(-62_135_596_800_000) == "0001-01-01T00:00:00.000Z"


@given(st.integers(min_value=0, max_value=253_402_300_799_999))
def test_prop_rfc3339_matches_datetime(epoch_ms: int) -> None:
    text = format_rfc3339_ms(epoch_ms)
    parsed = datetime.fromisoformat(text)
    assert parsed.utcoffset() == timedelta(0)
    assert (parsed - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1) == epoch_ms
    nanos = format_rfc3339_nanos(epoch_ms)
    assert nanos.endswith("000000Z") and len(nanos) == 30
    assert nanos[:23] == text[:23]
