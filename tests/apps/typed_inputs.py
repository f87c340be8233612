"""Handlers with typed inputs of every kind the SDK decodes: the ingress must refuse a body that does not fit
the hint (tests/e2e/test_first_hour.py)."""

from __future__ import annotations

import dataclasses
from typing import Optional, TypedDict

import msgspec
from pydantic import BaseModel

import unbroken as restate


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


class Item(msgspec.Struct):
    sku: str
    qty: int


typed = restate.Service("Typed")


@typed.handler()
async def address(ctx: restate.Context, a: Address) -> str:
    return f"{a.number} {a.street}"


@typed.handler()
async def point(ctx: restate.Context, p: Point) -> int:
    return p["x"] + p["y"]


@typed.handler()
async def person(ctx: restate.Context, p: Person) -> str:
    return f"{p.name} ({p.age})"


@typed.handler()
async def items(ctx: restate.Context, items: list[Item]) -> int:
    return sum(i.qty for i in items)


@typed.handler()
async def maybe(ctx: restate.Context, n: Optional[int]) -> str:  # noqa: UP045 - the spelling users write
    return "nothing" if n is None else str(n)


@typed.handler()
async def anything(ctx: restate.Context, value) -> str:  # type: ignore[no-untyped-def]  # untyped: any JSON
    return repr(value)


@typed.handler()
async def raw(ctx: restate.Context, data: bytes) -> int:
    return len(data)


app = restate.app([typed])
