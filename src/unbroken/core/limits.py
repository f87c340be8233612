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
header_count_max = 100

# handlers
journal_entries_max = 100_000  # per invocation; past it the attempt fails with a clear error
state_value_bytes_max = 32 * 1024 * 1024

# retention sweep
clean_expired_batch_max = 1000
clean_expired_interval_ms = 60_000
