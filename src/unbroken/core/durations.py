"""Durations and timestamps as users and Restate write them.

Pure module: no I/O, no clock reads, no global mutable state.

Accepted duration syntaxes (case-insensitive, surrounding whitespace ignored):

* Restate "friendly" format: one or more ``<number><unit>`` parts, largest unit
  first, optionally separated by spaces and/or commas: ``10s``, ``1h 30m``,
  ``2 days``, ``1.5s``, ``1h, 30m``.  Only the last part may have a fraction.
* ISO-8601: ``P[nW][nD][T[nH][nM][nS]]``, e.g. ``PT60S``, ``P1D``, ``PT1H30M``,
  ``PT0.5S``.  Only the last component may have a fraction; years and months
  are rejected (they are not fixed-length).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

from unbroken.core import limits

__all__ = [
    "InvalidDuration",
    "format_duration",
    "format_rfc3339",
    "format_rfc3339_ms",
    "format_rfc3339_nanos",
    "parse_delay_ms",
    "parse_duration_ms",
]

_NS_PER_US: Final = 1_000
_NS_PER_MS: Final = 1_000_000
_NS_PER_S: Final = 1_000_000_000
_NS_PER_M: Final = 60 * _NS_PER_S
_NS_PER_H: Final = 60 * _NS_PER_M
_NS_PER_D: Final = 24 * _NS_PER_H
_NS_PER_W: Final = 7 * _NS_PER_D


def _aliases(ns: int, *names: str) -> dict[str, int]:
    return dict.fromkeys(names, ns)


# Lower-cased unit designator -> length of one unit in nanoseconds.
_UNITS: Final[dict[str, int]] = {
    **_aliases(_NS_PER_W, "w", "wk", "wks", "week", "weeks"),
    **_aliases(_NS_PER_D, "d", "day", "days"),
    **_aliases(_NS_PER_H, "h", "hr", "hrs", "hour", "hours"),
    **_aliases(_NS_PER_M, "m", "min", "mins", "minute", "minutes"),
    **_aliases(_NS_PER_S, "s", "sec", "secs", "second", "seconds"),
    **_aliases(_NS_PER_MS, "ms", "msec", "msecs", "milli", "millis", "millisecond", "milliseconds"),
    **_aliases(
        _NS_PER_US,
        "us",
        "µs",
        "μs",
        "usec",
        "usecs",
        "micro",
        "micros",
        "microsecond",
        "microseconds",
    ),
    **_aliases(1, "ns", "nsec", "nsecs", "nano", "nanos", "nanosecond", "nanoseconds"),
}

_MS_RANGE_MAX: Final = (1 << 63) - 1  # what a stored signed 64-bit integer of milliseconds holds

_NUMBER: Final = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
# One friendly part: optional separator, number, optional spaces, optional unit.
_FRIENDLY_PART: Final = re.compile(rf"[\s,]*({_NUMBER})\s*([^\W\d_]*)")
_ISO: Final = re.compile(
    rf"P(?:({_NUMBER})W)?(?:({_NUMBER})D)?"
    rf"(?:T(?:({_NUMBER})H)?(?:({_NUMBER})M)?(?:({_NUMBER})S)?)?",
    re.IGNORECASE,
)
_ISO_UNITS: Final = (_NS_PER_W, _NS_PER_D, _NS_PER_H, _NS_PER_M, _NS_PER_S)
_BARE_INT: Final = re.compile(r"[0-9]+")

_NO_UNIT_HINT: Final = "expected to find unit designator suffix (e.g. '10s', '500ms', 'PT1S')"


class InvalidDuration(ValueError):
    """Raised when a duration string cannot be parsed; the message says why."""


def _error(text: str, reason: str) -> InvalidDuration:
    return InvalidDuration(f"invalid duration '{text}': {reason}")


def _scaled_ns(number: str, unit_ns: int) -> int:
    """``number`` (decimal digits, optional fraction) times ``unit_ns``, exact, rounded down."""
    whole, _, frac = number.partition(".")
    total = int(whole or "0") * unit_ns
    if frac:
        total += int(frac) * unit_ns // 10 ** len(frac)
    return total


def _parse_friendly_ns(text: str, body: str) -> int:
    """Parse the friendly format (``body`` is stripped ``text``) into nanoseconds."""
    total, pos, prev_unit, fractional = 0, 0, 0, False
    while pos < len(body):
        match = _FRIENDLY_PART.match(body, pos)
        if match is None:
            raise _error(text, f"unexpected character {body[pos]!r} at position {pos}")
        number, unit = match.group(1), match.group(2).lower()
        if not unit:
            raise _error(text, _NO_UNIT_HINT)
        unit_ns = _UNITS.get(unit)
        if unit_ns is None:
            raise _error(text, f"unknown unit designator '{match.group(2)}'")
        if fractional:
            raise _error(text, "only the last part of a duration may have a fraction")
        if prev_unit and unit_ns >= prev_unit:
            raise _error(text, "units must be given from largest to smallest, each at most once")
        fractional = "." in number
        total += _scaled_ns(number, unit_ns)
        prev_unit, pos = unit_ns, match.end()
    return total


def _parse_iso_ns(text: str, body: str) -> int:
    """Parse an ISO-8601 duration (``body`` starts with 'P') into nanoseconds."""
    match = _ISO.fullmatch(body)
    if match is None:
        raise _error(text, "not a valid ISO-8601 duration (e.g. 'PT1S', 'P1D', 'PT1H30M')")
    present = [(g, unit) for g, unit in zip(match.groups(), _ISO_UNITS, strict=True) if g is not None]
    if not present or body.upper().endswith("T"):
        raise _error(text, "ISO-8601 duration has no components")
    if any("." in g for g, _ in present[:-1]):
        raise _error(text, "only the last component of a duration may have a fraction")
    return sum(_scaled_ns(g, unit) for g, unit in present)


def parse_duration_ms(text: str) -> int:
    """Parse a friendly or ISO-8601 duration into whole milliseconds (rounded down).

    Raises :class:`InvalidDuration` for empty input, negative durations, bare
    numbers without a unit, unknown units, malformed text, or results above
    ``2**63 - 1`` ms.
    """
    body = text.strip()
    if not body:
        raise _error(text, "empty duration")
    if len(body) > limits.duration_text_chars_max:
        raise _error(text[:32] + "...", "duration text too long")
    if body[0] == "-" or body.lower().endswith("ago"):
        raise _error(text, "negative durations are not allowed")
    if body[0] == "+":
        body = body[1:].lstrip()
        if not body:
            raise _error(text, "empty duration")
    if body[0] in ("P", "p"):
        total_ns = _parse_iso_ns(text, body)
    else:
        total_ns = _parse_friendly_ns(text, body)
    total_ms = total_ns // _NS_PER_MS
    if total_ms > _MS_RANGE_MAX:
        raise _error(text, "duration too large")
    return total_ms


def parse_delay_ms(text: str) -> int:
    """Like :func:`parse_duration_ms`, but a bare non-negative integer means milliseconds.

    ``"1500"`` -> 1500; ``"1.5s"`` -> 1500; ``"-5"`` raises :class:`InvalidDuration`.
    """
    body = text.strip()
    if _BARE_INT.fullmatch(body) and len(body) <= limits.duration_text_chars_max:
        value = int(body)
        if value > _MS_RANGE_MAX:
            raise _error(text, "duration too large")
        return value
    return parse_duration_ms(text)


_FORMAT_UNITS: Final = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1))


def format_duration(ms: int) -> str:
    """Restate-style friendly string, largest units first: ``90_000`` -> ``"1m 30s"``.

    Units are d, h, m, s, ms; zero components are omitted; ``0`` -> ``"0s"``.
    Raises ``ValueError`` for negative input.
    """
    if ms < 0:
        raise ValueError(f"cannot format negative duration: {ms}")
    if ms == 0:
        return "0s"
    parts: list[str] = []
    for suffix, size in _FORMAT_UNITS:
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{suffix}")
    return " ".join(parts)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(epoch_ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=epoch_ms)


def format_rfc3339(epoch_ms: int, *, fraction_digits: int = 3, utc_suffix: str = "Z") -> str:
    """UTC timestamp of epoch milliseconds: ``2026-11-25T20:02:09.374Z``. The one formatter every spelling
    below uses: digits past the third are zeros (the engine's clock counts milliseconds)."""
    dt = _utc(epoch_ms)
    fraction = f"{dt.microsecond // 1000:03d}".ljust(fraction_digits, "0")
    return f"{dt.replace(tzinfo=None).isoformat(timespec='seconds')}.{fraction}{utc_suffix}"


def format_rfc3339_ms(epoch_ms: int) -> str:
    """UTC timestamp with millisecond precision: ``2026-11-25T20:02:09.374+00:00`` (Restate's
    ``idempotency-expires`` header)."""
    return format_rfc3339(epoch_ms, utc_suffix="+00:00")


def format_rfc3339_nanos(epoch_ms: int) -> str:
    """UTC timestamp with 9 fractional digits and 'Z': ``2026-11-24T20:00:53.299000000Z`` (Restate's
    ``executionTime``)."""
    return format_rfc3339(epoch_ms, fraction_digits=9)
