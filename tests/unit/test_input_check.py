"""The handler input check the ingress runs before accepting an invocation (sdk/serde/input_check.py)."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, TypedDict

import pytest
from pydantic import BaseModel

from unbroken.sdk.serde import BytesSerde, JsonSerde, PydanticJsonSerde, Serde, serde_for_type
from unbroken.sdk.serde.input_check import input_validator


@dataclasses.dataclass
class Address:
    street: str
    number: int = 1


class Point(TypedDict):
    x: int
    y: int


class Person(BaseModel):
    name: str
    age: int


OPT_INT = Optional[int]  # noqa: UP045 - the spelling users write


class Upper(Serde[str]):
    """A serde of the user's own: its wire format is not JSON."""

    def deserialize(self, buf: bytes) -> str | None:
        return buf.decode().upper()

    def serialize(self, obj: str | None) -> bytes:
        return (obj or "").encode()


def check(tp: Any, body: bytes, serde: Serde[Any] | None = None) -> str | None:
    validate = input_validator("Svc/h", tp, serde if serde is not None else serde_for_type(tp))
    assert validate is not None
    return validate(body)


@pytest.mark.parametrize(
    ("tp", "body", "problem"),
    [
        (str, b"", "Svc/h expects str, got an empty body"),
        (str, b"null", "Svc/h expects str: Expected 'str', got 'null'"),
        (int, b'"5"', "Svc/h expects int: Expected 'int', got 'str'"),
        (Address, b'{"street": null}', "Svc/h expects Address: Expected 'str', got 'null' - at '$.street'"),
        (Address, b"{}", "Svc/h expects Address: Object missing required field 'street'"),
        (Point, b'{"x": 1}', "Svc/h expects Point: Object missing required field 'y'"),
        (Person, b'{"name": "a"}', "Svc/h expects Person: age: Field required"),
        (
            list[Person],
            b'[{"name": "a", "age": null}]',
            "Svc/h expects list[",
        ),
        (
            dict[str, int],
            b'{"a": "b"}',
            "Svc/h expects dict[str, int]: Expected 'int', got 'str' - at '$[...]'",
        ),
    ],
)
def test_what_does_not_fit_the_hint_is_named(tp: Any, body: bytes, problem: str) -> None:
    found = check(tp, body)
    assert found is not None and found.startswith(problem), found


@pytest.mark.parametrize(
    ("tp", "body"),
    [
        (str, b'"x"'),
        (int, b"5"),
        (float, b"5"),
        (Address, b'{"street": "s", "extra": 1}'),
        (Point, b'{"x": 1, "y": 2}'),
        (Person, b'{"name": "a", "age": 3}'),
        (OPT_INT, b""),
        (OPT_INT, b"null"),
        (int | None, b"null"),
        (list[int], b"[]"),
    ],
)
def test_what_fits_passes(tp: Any, body: bytes) -> None:
    assert check(tp, body) is None


def test_explicit_json_serdes_are_checked_against_the_hint() -> None:
    assert check(Person, b"", PydanticJsonSerde(Person)) == "Svc/h expects Person, got an empty body"
    assert check(int, b"null", JsonSerde()) is not None


@pytest.mark.parametrize(
    ("tp", "serde"),
    [(None, None), (Any, None), (bytes, None), (str, Upper()), (str, BytesSerde())],
)
def test_nothing_is_checked_without_a_hint_for_bytes_or_for_a_serde_of_the_users_own(
    tp: Any, serde: Serde[Any] | None
) -> None:
    assert input_validator("Svc/h", tp, serde if serde is not None else serde_for_type(tp)) is None
