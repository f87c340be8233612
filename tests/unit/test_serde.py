from __future__ import annotations

import dataclasses
import datetime
import enum
import typing
from typing import Any, Optional, TypedDict

import msgspec
import pydantic
import pytest

from unbroken.sdk.serde import (
    BytesSerde,
    DefaultSerde,
    JsonSerde,
    PydanticJsonSerde,
    Serde,
    SerdeError,
    json_schema_for,
    serde_for_type,
)
from unbroken.sdk.serde.select import pick_serde

# --------------------------------------------------------------------------- fixtures / types


class Greeting(pydantic.BaseModel):
    name: str
    count: int = 1


@dataclasses.dataclass
class Address:
    street: str
    zip: int


@dataclasses.dataclass
class Item:
    sku: str
    qty: int = 1


@dataclasses.dataclass
class Order:
    id: int
    address: Address
    items: list[Item]
    by_name: dict[str, Item] = dataclasses.field(default_factory=dict)
    gift: Item | None = None
    note: str | None = None


@dataclasses.dataclass
class Node:
    name: str
    children: list[Node] = dataclasses.field(default_factory=list)


class Movie(TypedDict):
    title: str
    year: int


class Point(msgspec.Struct):
    x: int
    y: int
    label: str = ""


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclasses.dataclass
class Event:
    color: Color
    at: datetime.datetime


ORDER = Order(
    id=7,
    address=Address("Main St", 12345),
    items=[Item("a", 2), Item("b")],
    by_name={"a": Item("a", 2)},
    gift=Item("g"),
)
ORDER_BYTES = (
    b'{"id":7,"address":{"street":"Main St","zip":12345},'
    b'"items":[{"sku":"a","qty":2},{"sku":"b","qty":1}],'
    b'"by_name":{"a":{"sku":"a","qty":2}},"gift":{"sku":"g","qty":1},"note":null}'
)


# --------------------------------------------------------------------------- plain JSON


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (42, b"42"),
        (-1, b"-1"),
        (1.5, b"1.5"),
        (True, b"true"),
        ("hello", b'"hello"'),
        ("", b'""'),
        ("héllo", '"héllo"'.encode()),
        ({"a": 1, "b": [1, 2]}, b'{"a":1,"b":[1,2]}'),
        ([1, "x", None], b'[1,"x",null]'),
        ({}, b"{}"),
    ],
)
@pytest.mark.parametrize("serde", [JsonSerde(), DefaultSerde()], ids=["json", "default"])
def test_plain_json_exact_bytes_and_round_trip(serde: Serde[Any], value: object, expected: bytes) -> None:
    assert serde.serialize(value) == expected
    assert serde.deserialize(expected) == value


@pytest.mark.parametrize("serde", [JsonSerde(), DefaultSerde(), DefaultSerde(int), DefaultSerde(Greeting)])
def test_none_and_empty(serde: Serde[Any]) -> None:
    assert serde.serialize(None) == b""
    assert serde.deserialize(b"") is None


@pytest.mark.parametrize(
    ("tp", "value", "expected"),
    [
        (int, 5, b"5"),
        (str, "s", b'"s"'),
        (float, 2.5, b"2.5"),
        (bool, False, b"false"),
        (dict, {"k": "v"}, b'{"k":"v"}'),
        (list, [1], b"[1]"),
        (list[int], [1, 2, 3], b"[1,2,3]"),
        (dict[str, int], {"a": 1}, b'{"a":1}'),
        (Optional[int], 3, b"3"),  # noqa: UP045 (typing.Union origin on purpose)
        (int | None, None, b""),
        (int | str, "x", b'"x"'),
        (tuple[int, str], (1, "a"), b'[1,"a"]'),
        (typing.Literal["a", "b"], "b", b'"b"'),
    ],
)
def test_typed_json_round_trip(tp: Any, value: object, expected: bytes) -> None:
    serde = DefaultSerde(tp)
    assert serde.serialize(value) == expected
    assert serde.deserialize(expected) == value


def test_typed_float_accepts_integers() -> None:
    value = DefaultSerde(float).deserialize(b"3")
    assert value == 3.0 and isinstance(value, float)


def test_typed_dict_with_int_keys() -> None:
    serde = DefaultSerde(dict[int, str])
    data = serde.serialize({1: "a", 2: "b"})
    assert data == b'{"1":"a","2":"b"}'
    assert serde.deserialize(data) == {1: "a", 2: "b"}


def test_untyped_deserialize_gives_plain_values() -> None:
    assert DefaultSerde().deserialize(b'{"a":[1,{"b":null}]}') == {"a": [1, {"b": None}]}


def test_big_ints_serialize() -> None:
    assert DefaultSerde().serialize(2**70) == b"1180591620717411303424"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("serde", [JsonSerde(), DefaultSerde(), DefaultSerde(Order), DefaultSerde(list[int])])
def test_invalid_json_raises_serde_error(serde: Serde[Any]) -> None:
    with pytest.raises(SerdeError, match=r"^invalid JSON: ") as info:
        serde.deserialize(b"{not json")
    assert isinstance(info.value, ValueError)


def test_invalid_json_names_expected_type() -> None:
    with pytest.raises(SerdeError, match=r"invalid JSON: .*\(expected Order\)"):
        DefaultSerde(Order).deserialize(b"[1,")


@pytest.mark.parametrize(
    ("tp", "buf", "message"),
    [
        (int, b'"abc"', "cannot deserialize int: expected integer, got string"),
        (str, b"1", "cannot deserialize str: expected string, got number"),
        (list[int], b'[1,"x"]', r"cannot deserialize list\[int\]: at \$\[1\]: expected integer, got string"),
        (dict, b"[]", "cannot deserialize dict: expected object, got array"),
        (typing.Literal["a"], b'"z"', "expected Literal\\['a'\\], got 'z'"),
    ],
)
def test_type_mismatch_raises_serde_error(tp: Any, buf: bytes, message: str) -> None:
    with pytest.raises(SerdeError, match=message):
        DefaultSerde(tp).deserialize(buf)


def test_unserializable_value_raises_serde_error() -> None:
    with pytest.raises(SerdeError, match="cannot serialize object"):
        DefaultSerde().serialize(object())


# --------------------------------------------------------------------------- pydantic


def test_pydantic_round_trip() -> None:
    serde = DefaultSerde(Greeting)
    data = serde.serialize(Greeting(name="ann", count=2))
    assert data == b'{"name":"ann","count":2}'
    value = serde.deserialize(b'{"name":"bob"}')
    assert value == Greeting(name="bob", count=1)
    assert isinstance(value, Greeting)


def test_pydantic_json_serde_directly() -> None:
    serde = PydanticJsonSerde(Greeting)
    assert serde.serialize(Greeting(name="x")) == b'{"name":"x","count":1}'
    assert serde.deserialize(b'{"name":"x","count":3}') == Greeting(name="x", count=3)
    assert serde.serialize(None) == b""
    assert serde.deserialize(b"") is None


def test_serde_for_pydantic_is_pydantic_serde() -> None:
    assert isinstance(serde_for_type(Greeting), PydanticJsonSerde)


@pytest.mark.parametrize("buf", [b'{"count":1}', b'{"name":"x","count":"many"}', b"[]"])
def test_pydantic_invalid_input_mentions_model(buf: bytes) -> None:
    with pytest.raises(SerdeError, match="cannot deserialize Greeting: .*validation error"):
        DefaultSerde(Greeting).deserialize(buf)


def test_pydantic_invalid_json() -> None:
    with pytest.raises(SerdeError, match=r"^invalid JSON: .*\(expected Greeting\)"):
        DefaultSerde(Greeting).deserialize(b'{"name":')


def test_pydantic_inside_generic() -> None:
    serde = DefaultSerde(list[Greeting])
    data = serde.serialize([Greeting(name="a"), Greeting(name="b", count=5)])
    assert data == b'[{"name":"a","count":1},{"name":"b","count":5}]'
    assert serde.deserialize(data) == [Greeting(name="a"), Greeting(name="b", count=5)]


# --------------------------------------------------------------------------- dataclasses


def test_dataclass_nested_exact_bytes() -> None:
    serde = DefaultSerde(Order)
    assert serde.serialize(ORDER) == ORDER_BYTES
    assert serde.serialize(ORDER) == DefaultSerde().serialize(dataclasses.asdict(ORDER))


def test_dataclass_nested_round_trip_constructs_dataclasses() -> None:
    value = DefaultSerde(Order).deserialize(ORDER_BYTES)
    assert value == ORDER
    assert isinstance(value, Order)
    assert isinstance(value.address, Address)
    assert all(isinstance(i, Item) for i in value.items)
    assert isinstance(value.by_name["a"], Item)
    assert isinstance(value.gift, Item)


def test_dataclass_defaults_and_unknown_fields() -> None:
    value = DefaultSerde(Order).deserialize(
        b'{"id":1,"address":{"street":"s","zip":1},"items":[{"sku":"x"}],"extra":true}'
    )
    assert value == Order(id=1, address=Address("s", 1), items=[Item("x", 1)])


def test_recursive_dataclass() -> None:
    tree = Node("root", [Node("a"), Node("b", [Node("c")])])
    serde = DefaultSerde(Node)
    data = serde.serialize(tree)
    assert data == (
        b'{"name":"root","children":[{"name":"a","children":[]},'
        b'{"name":"b","children":[{"name":"c","children":[]}]}]}'
    )
    assert serde.deserialize(data) == tree


def test_dataclass_list_top_level() -> None:
    serde = DefaultSerde(list[Item])
    assert serde.serialize([Item("a"), Item("b", 3)]) == b'[{"sku":"a","qty":1},{"sku":"b","qty":3}]'
    assert serde.deserialize(b'[{"sku":"a"},{"sku":"b","qty":3}]') == [Item("a"), Item("b", 3)]


def test_dataclass_enum_and_datetime_fields() -> None:
    event = Event(Color.GREEN, datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC))
    serde = DefaultSerde(Event)
    data = serde.serialize(event)
    assert data == b'{"color":"green","at":"2024-05-01T12:30:00+00:00"}'
    assert serde.deserialize(data) == event


@pytest.mark.parametrize(
    ("buf", "message"),
    [
        (b"[]", "cannot deserialize Order: expected object for Order, got array"),
        (b'{"address":{"street":"s","zip":1},"items":[]}', "missing required field 'id' for Order"),
        (
            b'{"id":1,"address":{"street":"s","zip":1},"items":[{"sku":"a"},{"qty":2}]}',
            r"at \$\.items\[1\]: missing required field 'sku' for Item",
        ),
        (
            b'{"id":1,"address":{"street":"s","zip":"x"},"items":[]}',
            r"at \$\.address\.zip: expected integer, got string",
        ),
    ],
)
def test_dataclass_invalid_input(buf: bytes, message: str) -> None:
    with pytest.raises(SerdeError, match=message):
        DefaultSerde(Order).deserialize(buf)


# --------------------------------------------------------------------------- TypedDict / bytes / msgspec


def test_typed_dict() -> None:
    serde = DefaultSerde(Movie)
    movie: Movie = {"title": "Heat", "year": 1995}
    assert serde.serialize(movie) == b'{"title":"Heat","year":1995}'
    value = serde.deserialize(b'{"title":"Heat","year":1995}')
    assert value == movie
    assert type(value) is dict
    with pytest.raises(SerdeError, match="cannot deserialize Movie: expected object"):
        serde.deserialize(b"[1]")


@pytest.mark.parametrize("serde", [BytesSerde(), DefaultSerde(bytes)], ids=["bytes", "default"])
def test_bytes_identity(serde: Serde[Any]) -> None:
    raw = b"\x00\xffnot json{"
    assert serde.serialize(raw) == raw
    assert serde.deserialize(raw) == raw
    assert serde.serialize(None) == b""


def test_serde_for_bytes_is_bytes_serde() -> None:
    assert isinstance(serde_for_type(bytes), BytesSerde)


def test_msgspec_struct() -> None:
    serde = DefaultSerde(Point)
    assert serde.serialize(Point(1, 2, "p")) == b'{"x":1,"y":2,"label":"p"}'
    value = serde.deserialize(b'{"x":3,"y":4}')
    assert value == Point(3, 4)
    assert isinstance(value, Point)
    with pytest.raises(SerdeError, match="cannot deserialize Point: .*Expected `int`, got `str`"):
        serde.deserialize(b'{"x":"a","y":4}')
    with pytest.raises(SerdeError, match=r"^invalid JSON: .*\(expected Point\)"):
        serde.deserialize(b'{"x":')


def test_msgspec_struct_in_generic() -> None:
    serde = DefaultSerde(list[Point])
    assert serde.deserialize(b'[{"x":1,"y":2}]') == [Point(1, 2)]


# --------------------------------------------------------------------------- untyped serialize of rich values


def test_untyped_serialize_dataclass() -> None:
    assert DefaultSerde().serialize(ORDER) == ORDER_BYTES
    assert JsonSerde().serialize(Item("a")) == b'{"sku":"a","qty":1}'


def test_untyped_serialize_pydantic() -> None:
    assert DefaultSerde().serialize(Greeting(name="ann")) == b'{"name":"ann","count":1}'
    assert DefaultSerde().serialize({"g": [Greeting(name="b")]}) == b'{"g":[{"name":"b","count":1}]}'


def test_untyped_serialize_msgspec_struct() -> None:
    assert DefaultSerde().serialize(Point(1, 2)) == b'{"x":1,"y":2,"label":""}'


def test_untyped_serialize_misc() -> None:
    assert DefaultSerde().serialize({1, 2}) in (b"[1,2]", b"[2,1]")
    assert DefaultSerde().serialize(Color.RED) == b'"red"'
    assert DefaultSerde().serialize({1: "a"}) == b'{"1":"a"}'


# --------------------------------------------------------------------------- helpers


def test_serde_for_type_caches() -> None:
    assert serde_for_type(Order) is serde_for_type(Order)
    assert serde_for_type(list[int]) is serde_for_type(list[int])
    assert serde_for_type(None) is serde_for_type(None)


def test_with_maybe_type() -> None:
    serde = DefaultSerde().with_maybe_type(Item)
    assert isinstance(serde, DefaultSerde)
    assert serde.type_hint is Item
    assert serde.deserialize(b'{"sku":"z"}') == Item("z")
    assert DefaultSerde(int).with_maybe_type(None).deserialize(b'{"a":1}') == {"a": 1}


def test_json_schema_for() -> None:
    assert json_schema_for(int) == {"type": "integer"}
    assert json_schema_for(list[str]) == {"type": "array", "items": {"type": "string"}}
    schema = json_schema_for(Greeting)
    assert schema is not None and schema["properties"]["name"] == {"title": "Name", "type": "string"}
    assert json_schema_for(Item) is not None
    assert json_schema_for(Point) is not None
    assert json_schema_for(None) is None
    assert json_schema_for(bytes) is None


def test_json_schema_for_unsupported_type_is_none() -> None:
    class Opaque:
        pass

    assert json_schema_for(Opaque) is None


# ------------------------------------------------------------------------------------ serde selection
def test_one_selection_rule_for_ctx_calls_and_handlers() -> None:
    """``pick_serde``: a given serde is used, None or a plain ``DefaultSerde`` follows the hint; a
    ``DefaultSerde(X)`` gives way to the ``type_hint=`` of a ctx call, not to a handler's signature."""
    json_serde, of_int = JsonSerde(), DefaultSerde(int)
    for hint_wins in (True, False):
        assert pick_serde(json_serde, str, hint_wins=hint_wins) is json_serde
        assert pick_serde(None, str, hint_wins=hint_wins) is serde_for_type(str)
        assert pick_serde(DefaultSerde(), str, hint_wins=hint_wins) is serde_for_type(str)
        assert pick_serde(of_int, None, hint_wins=hint_wins) is of_int
    assert pick_serde(of_int, str) is serde_for_type(str)  # ctx.get(name, serde, type_hint=str)
    assert pick_serde(of_int, str, hint_wins=False) is of_int  # @handler(input_serde=DefaultSerde(int))
