"""Request bodies: JSON validation with a nesting bound, and the global budget of bytes in flight.

Both exist because a body the ingress accepts is stored and handed to a handler: one the serializers
cannot handle (too deep) would fail the handler on every retry, and many large ones at once would take
the process's memory.
"""

from __future__ import annotations

import codecs

import msgspec
import orjson

from unbroken.core import limits
from unbroken.http.asgi import HttpError

_OPEN = b"[{"
_CLOSE = b"]}"
# Everything but brackets and quotes is deleted before the depth is measured (strings are cut out first).
_KEEP = set(b'[]{}"')
_DELETE = bytes(b for b in range(256) if b not in _KEEP)
_PARENS = bytes.maketrans(b"[{]}", b"(())")


# Bodies up to this size are checked by decoding them (exact, and cheap at this size). Larger ones are
# checked without building their value: a 30 MiB array of small numbers decodes to ~200 MB of objects.
_DECODE_BYTES_MAX = 64 * 1024
_UTF8_SLICE_BYTES = 1024 * 1024
# orjson (the SDK's decoder) refuses numbers beyond a float's range (1e309, 400 digits); msgspec's syntax
# check does not. Any number that could be that large (200+ digits, or an exponent of 100+) sends the
# body to the exact check; below both, a number is at most 10**299. (Searched for with bytes.find on a
# copy whose digits are all '0': a regex takes seconds on 30 MiB of numbers.)
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789E", b"000000000e")
_HUGE_MARKS = (b"0" * 200, b"e000", b"e+000")  # the longest is _MARK_BYTES_MAX


_MARK_BYTES_MAX = 200


def _maybe_huge_number(body: bytes) -> bool:
    """A slice at a time (overlapping by a mark's length), so the translated copy stays small."""
    view = memoryview(body)
    for start in range(0, len(body), _UTF8_SLICE_BYTES):
        text = bytes(view[start : start + _UTF8_SLICE_BYTES + _MARK_BYTES_MAX]).translate(_DIGITS_AS_ZERO)
        if any(mark in text for mark in _HUGE_MARKS):
            return True
    return False


def check_json(body: bytes) -> None:
    """Raise ``HttpError(400)`` unless ``body`` is JSON (as the SDK's orjson decodes it) nested at most
    ``limits.json_depth_max`` deep."""
    if json_depth_exceeds(body, limits.json_depth_max):
        raise HttpError(400, _too_deep())
    if len(body) <= _DECODE_BYTES_MAX or _maybe_huge_number(body):
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HttpError(400, f"input validation error: the body is not valid JSON ({exc})") from None
        return
    try:
        msgspec.json.decode(body, type=msgspec.Raw)  # the syntax, without building the value
        if not body.isascii():
            _check_utf8(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"input validation error: the body is not valid JSON ({exc})") from None


def _check_utf8(body: bytes) -> None:
    """Raise UnicodeDecodeError unless ``body`` is UTF-8, decoding a slice at a time (no full copy)."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    view = memoryview(body)
    for start in range(0, len(body), _UTF8_SLICE_BYTES):
        decoder.decode(view[start : start + _UTF8_SLICE_BYTES])
    decoder.decode(b"", final=True)


def _too_deep() -> str:
    return (
        f"input validation error: the body is nested too deep: at most {limits.json_depth_max} levels "
        "of arrays and objects"
    )


def json_depth_exceeds(body: bytes, depth_max: int) -> bool:
    """True if valid JSON ``body`` nests arrays/objects more than ``depth_max`` deep.

    Runs in C-level byte operations (no Python loop per byte): most bodies have fewer brackets than the
    bound and are answered by two counts.
    """
    if body.count(_OPEN[:1]) + body.count(_OPEN[1:]) <= depth_max:
        return False
    text = body
    if b"\\" in text:  # drop escape pairs so that every remaining '"' delimits a string
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    text = text.translate(None, _DELETE).replace(b'""', b"")  # most strings hold no bracket: gone here
    if b'"' in text:
        text = b"".join(text.split(b'"')[::2])  # outside strings: the even pieces
    parens = text.translate(_PARENS)
    # Each pass removes every innermost pair, so a body nested n deep is empty after exactly n passes.
    for _ in range(depth_max):
        if not parens:
            return False
        parens = parens.replace(b"()", b"")
    return bool(parens)


class BodyBudget:
    """Bytes of request bodies the ingress holds at once (being read, or waiting for their reply); a
    request that would pass ``limit`` is refused with 503 and ``Retry-After`` (see :class:`Overloaded`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self) -> Reservation:
        """A reservation (``with budget.reserve() as r``) that grows with the body (``r.charge``) and is
        given back when the block ends. A plain context manager: an async generator one costs an asyncgen
        registration with the loop per request (~2% of a W1 call's instructions)."""
        return Reservation(self)


class Reservation:
    __slots__ = ("budget", "size")

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.size = 0

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.budget.used -= self.size
        self.size = 0

    def charge(self, size: int) -> None:
        """Hold ``size`` bytes in all (no-op when already held); raise :class:`Overloaded` past the budget."""
        extra = size - self.size
        if extra <= 0:
            return
        budget = self.budget
        if budget.used + extra > budget.limit:
            raise Overloaded(
                f"the server is busy: request bodies in flight would pass {budget.limit} bytes "
                "(ingress_inflight_body_bytes_max); retry later"
            )
        budget.used += extra
        self.size = size


class Overloaded(HttpError):
    """503 with ``Retry-After``: a bound on work in flight was reached; the same request can succeed later."""

    retry_after_s = 1

    def __init__(self, message: str) -> None:
        super().__init__(503, message)
