"""``unbroken.serde``: the same module path as ``restate.serde``."""

from unbroken.sdk.serde import BytesSerde, DefaultSerde, JsonSerde, PydanticJsonSerde, Serde

__all__ = ["BytesSerde", "DefaultSerde", "JsonSerde", "PydanticJsonSerde", "Serde"]
