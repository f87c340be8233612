"""Restate's service-protocol framing: an 8-byte header (type u16, flags u16, length u32, big-endian) and a
protobuf body; the content types that name the protocol version; the message type numbers.

Type ranges: 0x0000-0x03FF control, 0x0400-0x7FFF commands, 0x8000-0xFBFF notifications, 0xFC00-0xFFFF
custom entries (which Unbroken does not store: refused as unknown).
"""

from __future__ import annotations

from dataclasses import dataclass

from unbroken.core import limits
from unbroken.protocol.pb import violation

HEADER_BYTES = 8
REQUESTED_ACK = 0x8000  # the flags bit an SDK sets to ask for a CommandAck / ProposeRunCompletionAck

# The versions Unbroken speaks: v5 (commands and notifications) and v6 (+ random seed, failure metadata).
# restate-server 1.7.12 runs restate-sdk 1.2.0 on v6 too (v7 is behind an experimental flag there).
OLDEST_VERSION = 5
NEWEST_VERSION = 6
_CONTENT_TYPE_PREFIX = "application/vnd.restate.invocation.v"


def content_type(version: int) -> str:
    return f"{_CONTENT_TYPE_PREFIX}{version}"


def parse_content_type(value: str) -> int | None:
    """The protocol version a content type names (parameters after ``;`` ignored), or None."""
    base = value.split(";", 1)[0].strip().lower()
    if not base.startswith(_CONTENT_TYPE_PREFIX):
        return None
    digits = base[len(_CONTENT_TYPE_PREFIX) :]
    return int(digits) if digits.isdigit() and len(digits) <= 3 else None


def pick_version(deployment_min: int, deployment_max: int) -> int | None:
    """The highest version both sides speak, or None when the ranges do not overlap."""
    version = min(deployment_max, NEWEST_VERSION)
    return version if version >= max(deployment_min, OLDEST_VERSION) else None


# ------------------------------------------------------------------------------------------ message types
START = 0x0000
SUSPENSION = 0x0001
ERROR = 0x0002
END = 0x0003
COMMAND_ACK = 0x0004
PROPOSE_RUN_COMPLETION = 0x0005

INPUT = 0x0400
OUTPUT = 0x0401
GET_LAZY_STATE = 0x0402
SET_STATE = 0x0403
CLEAR_STATE = 0x0404
CLEAR_ALL_STATE = 0x0405
GET_LAZY_STATE_KEYS = 0x0406
GET_EAGER_STATE = 0x0407
GET_EAGER_STATE_KEYS = 0x0408
GET_PROMISE = 0x0409
PEEK_PROMISE = 0x040A
COMPLETE_PROMISE = 0x040B
SLEEP = 0x040C
CALL = 0x040D
ONE_WAY_CALL = 0x040E
SEND_SIGNAL = 0x0410
RUN = 0x0411
ATTACH_INVOCATION = 0x0412
GET_INVOCATION_OUTPUT = 0x0413
COMPLETE_AWAKEABLE = 0x0414

NOTIFICATION_BIT = 0x8000  # set in every notification's type
CALL_INVOCATION_ID = 0x800E  # the one notification not numbered after its command (Call's first answer)
SIGNAL = 0xFBFF

FIRST_COMMAND = 0x0400
FIRST_NOTIFICATION = 0x8000
FIRST_CUSTOM = 0xFC00


def notification_type(command_type: int) -> int:
    """The completion notification answering a command: its number in the notification range (Sleep
    0x040C -> 0x800C, Run 0x0411 -> 0x8011), as Restate's protocol numbers them (not ``type | 0x8000``)."""
    return FIRST_NOTIFICATION | (command_type - FIRST_COMMAND)


@dataclass(frozen=True, slots=True)
class Frame:
    type: int
    flags: int
    body: bytes


def encode_frame(msg_type: int, body: bytes, flags: int = 0) -> bytes:
    return msg_type.to_bytes(2, "big") + flags.to_bytes(2, "big") + len(body).to_bytes(4, "big") + body


class FrameDecoder:
    """Splits a byte stream into frames as it arrives; a header announcing more than
    ``limits.protocol_message_bytes_max`` is refused before its body is buffered."""

    __slots__ = ("_buf", "_max")

    def __init__(self, max_body_bytes: int = limits.protocol_message_bytes_max) -> None:
        self._buf = bytearray()
        self._max = max_body_bytes

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= HEADER_BYTES:
            msg_type = int.from_bytes(buf[pos : pos + 2], "big")
            flags = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            length = int.from_bytes(buf[pos + 4 : pos + 8], "big")
            if length > self._max:
                raise violation(
                    f"message of type 0x{msg_type:04x} announces {length} bytes, more than the "
                    f"{self._max} allowed"
                )
            if len(buf) - pos - HEADER_BYTES < length:
                break
            start = pos + HEADER_BYTES
            frames.append(Frame(msg_type, flags, bytes(buf[start : start + length])))
            pos = start + length
        del buf[:pos]
        return frames

    def finish(self) -> None:
        """The stream ended: anything left is a truncated frame."""
        if self._buf:
            raise violation(f"the stream ended inside a message ({len(self._buf)} bytes of it received)")


def decode_frames(data: bytes) -> list[Frame]:
    """Every frame of a complete byte string (a request/response body)."""
    decoder = FrameDecoder()
    frames = decoder.feed(data)
    decoder.finish()
    return frames
