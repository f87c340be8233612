"""A deployment that breaks the service protocol on purpose (raw ASGI, served by hypercorn): discovery is
valid, every invoke answers wrongly in its own way. The engine must fail those attempts and keep serving."""

from __future__ import annotations

import json
from typing import Any

MANIFEST = {
    "protocolMode": "REQUEST_RESPONSE",
    "minProtocolVersion": 5,
    "maxProtocolVersion": 6,
    "services": [
        {
            "name": "Bad",
            "ty": "SERVICE",
            "handlers": [
                {"name": n, "input": {}, "output": {}} for n in ("garbage", "version", "truncated", "silent")
            ],
        }
    ],
}
V6 = "application/vnd.restate.invocation.v6"
ANSWERS = {
    # an unknown message type 0x0777
    "garbage": (V6, bytes.fromhex("07770000 00000002 0000")),
    # the protocol version the engine did not ask for
    "version": ("application/vnd.restate.invocation.v5", bytes.fromhex("0003000000000000")),
    # a frame header announcing 100 bytes, 3 sent
    "truncated": (V6, bytes.fromhex("04010000 00000064 010203")),
    # a complete, valid command, then the response ends without End/Suspension/Error
    "silent": (V6, bytes.fromhex("04110000 00000002 5801")),
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while True:  # drain the request body
        message = await receive()
        if not message.get("more_body"):
            break
    path = scope["path"]
    if path == "/discover":
        body = json.dumps(MANIFEST).encode()
        ctype = "application/vnd.restate.endpointmanifest.v3+json"
    else:
        ctype, body = ANSWERS.get(path.rsplit("/", 1)[-1], ("text/plain", b"no such handler"))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype.encode())]})
    await send({"type": "http.response.body", "body": body})
