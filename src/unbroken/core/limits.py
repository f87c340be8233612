"""Every bound the engine enforces, named, with its unit last."""

from __future__ import annotations

# processor
batch_records_max = 512  # records applied in one storage transaction (one fsync)
records_queued_max = 16_384  # records waiting for the processor; past it the ingress answers 503 + Retry-After
reply_waiters_max = 65_536  # HTTP callers waiting for a reply (each partition's waiting callers); past it new requests get 503
record_store_attempts_max = 8  # commits of one record alone that the store refused before the engine gives up on it
invariant_recoveries_max = 16  # in-process recoveries after invariant violations before the partition stays stopped
retry_after_s = 1  # the Retry-After of a 503 while the engine is overloaded or its store is failing

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

# admin POST /query
query_rows_max = 10_000  # rows of one answer; more are cut (``"truncated": true``)
# Bytes of one answer as JSON (blobs count as hex): one row with the largest state value (32 MiB; 64 MiB as
# hex plus its 32 MiB ``value_utf8``) fits. More is refused (400) with a hint to narrow the query.
query_answer_bytes_max = 128 * 1024 * 1024
query_value_bytes_max = 64 * 1024 * 1024  # any one string or blob a query computes (SQLITE_LIMIT_LENGTH)
query_decode_cache_entries_max = 256  # decoded rows the running statement keeps (small fields only)
# SQLite page cache of each reader connection (queries, explain/state reads); the writer's is 64 MiB. WAL readers
# lose their cache whenever the store changes, so a large one buys little and holds blob pages resident.
reader_page_cache_bytes_max = 8 * 1024 * 1024
query_timeout_s_max = 10.0  # the default and the ceiling of a query's ``timeout``
query_inflight_max = 16  # queries running or waiting for a reader at once; more are answered 429

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

# timers
timers_in_memory_max = 10_000  # the earliest timers held in memory; the others wait in storage

# retention sweep
clean_expired_batch_max = 1000
clean_expired_interval_ms = 60_000
