"""Every bound the engine enforces, named, with its unit last."""

from __future__ import annotations

# processor
batch_records_max = 512  # records applied in one storage transaction (one fsync)

# ingress and admin
request_body_bytes_max = 32 * 1024 * 1024  # as Restate's default request-size-limit
service_name_bytes_max = 255
handler_name_bytes_max = 255
object_key_bytes_max = 4096
idempotency_key_bytes_max = 1024
header_count_max = 100  # as hyper (Restate's HTTP stack): more is 431
header_bytes_max = 64 * 1024  # all header names and values of one request together: more is 431
url_bytes_max = 32 * 1024  # the request target (path and query) as sent: more is 414
delay_ms_max = 10 * 365 * 24 * 3600 * 1000  # ?delay= of a send; a timer further out is refused (400)

# ingress hardening: body nesting, bodies in flight, connections (ingress/body.py, ingress/wire.py)
json_depth_max = 128  # arrays/objects nested in a request body (orjson serializes at most 254): more is 400
ingress_inflight_body_bytes_max = 128 * 1024 * 1024  # bodies held by the ingress at once: more is 503 + Retry-After
http_head_timeout_ms = 10_000  # from connect (or a request's first byte) to its complete head; then closed
http_body_idle_timeout_ms = 20_000  # longest pause while a request body arrives: then 408 and closed
http_connections_max = 4096  # open connections per listener (lowered to fit the open-file limit): more get 503

# handlers
journal_entries_max = 100_000  # per invocation; past it the attempt fails with a clear error
state_value_bytes_max = 32 * 1024 * 1024  # one ctx.set value (as Restate's eager-state-size-limit)
journal_entry_bytes_max = 32 * 1024 * 1024  # payload of one journal entry (as Restate's message-size-limit)
failure_message_chars_max = 64 * 1024  # longer error messages are cut (they are stored and shown)

# retention sweep
clean_expired_batch_max = 1000
clean_expired_interval_ms = 60_000
