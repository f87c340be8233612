"""Every bound the engine enforces, named, with its unit last.

The relationships between them are asserted at import (as TigerBeetle's ``constants.zig`` does at comptime): a
build whose bounds contradict each other does not start.
"""

from __future__ import annotations

# processor
batch_records_max = 512  # records applied in one storage transaction (one fsync)
records_queued_max = (
    16_384  # records waiting for the processor; past it the ingress answers 503 + Retry-After
)
reply_waiters_max = 65_536  # HTTP callers waiting for a reply (each partition's waiting callers); past it new requests get 503
record_store_attempts_max = (
    8  # commits of one record alone that the store refused before the engine gives up on it
)
invariant_recoveries_max = (
    16  # in-process recoveries after invariant violations before the partition stays stopped
)
retry_after_s = 1  # the Retry-After of a 503 while the engine is overloaded or its store is failing
store_retry_delay_min_s = 0.01  # the first pause after the store failed; doubled per failure in a row
store_retry_delay_max_s = 1.0  # the longest pause between two tries of a store that keeps failing
# A batch refused by a transaction conflict (PostgreSQL's 40001/40P01 in strict mode) is applied again at
# once, quietly, this many times in a row; past that the conflicts are a store failure (logged, 503, pauses).
conflict_retries_max = 20
processor_stop_timeout_s = (
    10.0  # bound of each wait in Processor.stop(): the queue to drain, the writer thread to exit
)

# storage
# Bound of the SQLite store's id -> storage-key cache; it is emptied between transactions once it holds more.
storage_key_cache_entries_max = 65_536

# ingress and admin
request_body_bytes_max = 32 * 1024 * 1024  # as Restate's default request-size-limit
service_name_bytes_max = 255
handler_name_bytes_max = 255
object_key_bytes_max = 4096
idempotency_key_bytes_max = 1024
header_count_max = 100  # as hyper (Restate's HTTP stack): more is 431
header_bytes_max = 64 * 1024  # all header names and values of one request together: more is 431
deployment_metadata_entries_max = 100  # labels of one registered deployment (``metadata``)
deployment_metadata_bytes_max = 64 * 1024  # all its keys and values together
url_bytes_max = 32 * 1024  # the request target (path and query) as sent: more is 414
duration_text_chars_max = 256  # a duration ("10s", "PT1H", ?delay=) longer than this is refused unparsed
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
# One statement's text: Restate's CLI sends at most ~41 bytes per id it lists (``--limit 5000`` fits); the
# dialect rewrite of the worst 256 KiB statement takes ~1 s of a query reader. More is 400.
query_sql_bytes_max = 256 * 1024
query_inflight_max = 16  # queries running or waiting for a reader at once; more are answered 429

# ingress hardening: body nesting, bodies in flight, connections (ingress/body.py, ingress/wire.py)
json_depth_max = 128  # arrays/objects nested in a request body (orjson serializes at most 254): more is 400
ingress_inflight_body_bytes_max = (
    128 * 1024 * 1024
)  # bodies held by the ingress at once: more is 503 + Retry-After
http_head_timeout_ms = 10_000  # from connect (or a request's first byte) to its complete head; then closed
http_body_idle_timeout_ms = (
    20_000  # a request body's window: one that brings too little in it gets 408, closed
)
# Bytes a request body must bring in each window (~400 B/s): a trickle (slowloris, a byte now and then) is
# cut, a slow but real upload is not. A body that completes within its window is never judged.
http_body_window_bytes_min = 8 * 1024
http_connections_max = (
    4096  # open connections per listener (lowered to fit the open-file limit): more get 503
)

# handlers
journal_entries_max = 100_000  # per invocation; past it the attempt fails with a clear error
state_value_bytes_max = 32 * 1024 * 1024  # one ctx.set value (as Restate's eager-state-size-limit)
journal_entry_bytes_max = 32 * 1024 * 1024  # payload of one journal entry (as Restate's message-size-limit)
failure_message_chars_max = 64 * 1024  # longer error messages are cut (they are stored and shown)
failure_metadata_entries_max = 64  # entries of a TerminalError's metadata kept (the others are dropped)
failure_metadata_key_chars_max = 1024  # a metadata key is cut here (values are cut as messages are)

# remote deployments (Restate's service protocol)
protocol_message_bytes_max = 32 * 1024 * 1024  # one frame's body from or to an SDK (message-size-limit)
protocol_response_bytes_max = 256 * 1024 * 1024  # one attempt's whole response (request/response mode)
discovery_manifest_bytes_max = 4 * 1024 * 1024  # a deployment's endpoint manifest (GET /discover)
deployment_services_max = 1000  # services one deployment may declare
deployment_error_quote_bytes_max = 4096  # what an attempt's failure quotes of a non-200 answer's body
deployment_request_timeout_s = 10.0  # connect + discover, and connect to invoke (Restate's connect-timeout)
# An App serving as a deployment (sdk/deployment.py), its last message written, waits this long for the server to
# end its side of an HTTP/2 stream before ending the response (an HTTP/2 server may drop a stream answered
# whole while its request still sends, and with it the connection: hypercorn does).
deployment_request_end_wait_s = 5.0
# While a server may still send notifications, an App serving as a deployment never suspends on its own: the
# server decides (it ends its request stream after its inactivity timeout). A day stands for "not before then".
deployment_open_input_timeout_ms = 24 * 3600 * 1000
deployment_h2_streams_per_connection_max = 100  # attempts sharing one h2c connection (fewer if the peer says)
deployment_h2_idle_close_s = 2.0  # an h2c connection without streams is closed (hypercorn's keep-alive: 5 s)

# admin explain (GET /invocations/{id}/explain)
explain_chain_links_max = 10  # invocations followed along a chain of callers/callees
explain_value_chars_max = 500  # a value or error message quoted in an explanation is cut here
explain_awakeable_signals_max = 256  # signal indexes looked at for the awakeables of a running handler
explain_awakeable_misses_max = 8  # consecutive indexes whose id is in no journal entry: the scan stops

# process
lock_holder_bytes_max = 4096  # what is read of the data dir's lock file to name the process holding it
listen_backlog_connections_max = (
    4096  # accepted connections the kernel queues per listener (as uvicorn's default)
)
# Descriptors kept for everything but the two listeners' connections (SQLite, logs, the handlers' clients).
fds_reserved_count = 128

# timers
timers_in_memory_max = 10_000  # the earliest timers held in memory; the others wait in storage

# retention sweep
clean_expired_batch_max = 1000
clean_expired_interval_ms = 60_000

# PostgreSQL store: partition leases (storage/postgres_lease.py)
pg_lease_ttl_s = 3.0  # a lease not renewed for this long may be taken by another node
pg_lease_renew_interval_s = 1.0  # how often the leader renews its leases
pg_lease_poll_interval_s = 0.5  # how often a node reads the leases and the nodes to balance them
# A leader that has had no renewal acknowledged for (ttl - this) stops committing: it fences itself before
# another node can take its partitions (measured from when the last acknowledged renewal was sent).
pg_lease_self_fence_margin_s = 1.0
pg_lease_acquire_wait_s = 10.0  # at start, how long to wait for another node's leases to expire
pg_commit_resolve_timeout_s = 10.0  # after a COMMIT whose outcome is unknown: how long to try to learn it
pg_connect_timeout_s = 10  # to open one connection
pg_keepalive_idle_s = 5  # a connection silent this long is probed (then every interval, 3 times)
pg_keepalive_interval_s = 2
# Every wait of the store's reader and writer connections on the server (the event loop makes some): a row
# lock another session holds (a paused leader's open transaction; the server ends an idle one after the
# lease's TTL, but not one whose client stopped mid-pipeline) and a whole statement. Past it the statement
# fails with a StoreError and the batch loop retries it later. Longer than the TTL: waiting that long for a
# fenced leader's transaction to end is expected.
pg_lock_timeout_s = 5.0
pg_statement_timeout_s = 15.0
# The partition inbox (cross-partition records for partitions another node leads): how often a leader looks
# in its partitions' inboxes when no NOTIFY woke it (NOTIFY is a hint; this poll alone must suffice), and
# how many records one batch takes from them.
inbox_poll_interval_s = 0.2
inbox_records_per_batch_max = 256
# The leader's cache of committed invocation rows (storage/postgres.py): emptied when it grows past this.
pg_invocation_cache_rows_max = 10_000
# The leader's cache of its keys' lock holders and state maps (storage/postgres_keys.py): emptied when it
# holds more keys than this; a key whose state outgrows the second bound is not kept.
pg_key_cache_keys_max = 10_000
pg_key_cache_state_bytes_max = 64 * 1024
# ... and of the queue of invocations waiting for a key's lock: a key with more waiting is not kept (each pop
# of it is then a round trip, as without the cache).
pg_key_cache_queue_max = 1024
# Invocation ids whose partition a PostgreSQL store remembers (parsing one costs ~4 µs; emptied when full).
pg_id_partitions_max = 65_536
# The leader's cache of whole journals (storage/postgres_journal.py): emptied past the first bound (encoded
# bytes held); a journal over the second is not kept.
pg_journal_cache_bytes_max = 32 * 1024 * 1024
pg_journal_cache_journal_bytes_max = 256 * 1024
# A batch holding at most this many rows of writes at its COMMIT (and having sent nothing before) goes as
# one simple query with its values as literals; a larger one as statements over binary arrays in pipeline
# mode, which the server parses and runs for less from ~64 W2 records (bench/pg_commit.py --records 16,64).
pg_text_batch_rows_max = 64
# POST /query on PostgreSQL copies the tables into a SQLite file with the views (storage/sqlite_mirror.py):
# past this many rows in all, the query is refused rather than copying the database.
pg_query_rows_copied_max = 200_000

# Many nodes on one store (cluster/): requests for a partition led by another node are proxied to it
cluster_forward_connections_max = 64  # connections a node keeps to the other nodes, all together
cluster_forward_connect_timeout_s = 2.0  # to open one connection to the leader
# The channel forwarding ingress requests between nodes (cluster/channel.py): requests in flight on one
# connection, an answer's body cut into frames of at most this, and the bytes a connection may have queued for
# a peer that reads too slowly before it is closed.
cluster_channel_requests_max = 4096
cluster_channel_chunk_bytes = 1024 * 1024
cluster_channel_buffer_bytes_max = 64 * 1024 * 1024
# A channel with no request in flight this long is closed by its forwarder (a new one is opened when needed),
# and after twice this by its leader: one opened and left idle does not hold a listener connection for good.
cluster_channel_idle_s = 30.0
# While no node leads a request's partition (a failover), wait this long for one before answering 503:
# longer than a lease's TTL, so a dead leader's partitions are taken over within it.
cluster_leader_wait_s = 6.0
# A node that could not be reached is passed over this long; a request waiting for a leader looks again
# every half of it (the leases themselves are read by the lease thread, every pg_lease_poll_interval_s).
cluster_view_refresh_s = 0.5
# while a request waits for a partition's leader (a failover), how often it looks at the view in memory:
# a new leader is forwarded to within this of the lease thread's read, not half a refresh later
cluster_leader_poll_s = 0.05
cluster_suspects_max = 256  # nodes remembered as unreachable (for cluster_view_refresh_s each)
cluster_schema_poll_s = 1.0  # PATCH /services and deployments applied by another node are read this often

# CLI
# Rows `unbroken invocations` counts past its page; beyond, it says "more than" (counting a million rows is not
# worth the wait).
cli_count_rows_max = 100_000

# Test kit (unbroken.testing): how long a test waits before it reports instead of hanging
testkit_idle_wait_s_max = 10.0  # wait_idle()/advance(): a handler still busy after this is named in the error
testkit_replay_s_max = 10.0  # one invocation's dry replay (replay-check): a handler stuck outside ctx calls
testkit_replay_ids_per_read_max = 500  # replay-check reads the in-flight invocations' ids a page at a time
testkit_harness_start_s_max = 30.0  # test_harness(): the engine and both listeners up
testkit_harness_stop_s_max = 10.0


# Relationships between the bounds.
assert 1 <= batch_records_max <= records_queued_max  # a batch is taken from the queue
assert record_store_attempts_max >= 1 and invariant_recoveries_max >= 0 and conflict_retries_max >= 0
assert 0 < store_retry_delay_min_s <= store_retry_delay_max_s
assert store_retry_delay_max_s <= retry_after_s  # a caller told to retry after this finds the store retried
assert processor_stop_timeout_s > store_retry_delay_max_s  # stop() outlasts one pause of a failing store
assert storage_key_cache_entries_max >= batch_records_max  # a full batch's ids still hit the cache
assert pg_invocation_cache_rows_max >= batch_records_max  # the same on PostgreSQL
assert ingress_inflight_body_bytes_max >= request_body_bytes_max  # the largest body allowed can be held
assert state_value_bytes_max <= request_body_bytes_max  # a value taken from a request fits in one
assert delay_ms_max < 2**63  # stored as a signed 64-bit integer of milliseconds
assert journal_entries_max < 2**32  # the service protocol numbers entries with a u32
# A query answer holds one row with the largest state value: its hex (2x) plus its value_utf8 (1x).
assert query_value_bytes_max >= 2 * state_value_bytes_max
assert query_answer_bytes_max >= 3 * state_value_bytes_max
assert query_rows_max >= 1 and query_inflight_max >= 1 and query_timeout_s_max > 0
assert http_head_timeout_ms > 0 and http_body_idle_timeout_ms > 0 and http_connections_max >= 1
assert failure_metadata_key_chars_max <= failure_message_chars_max
assert explain_awakeable_misses_max <= explain_awakeable_signals_max and explain_chain_links_max >= 1
assert protocol_message_bytes_max >= journal_entry_bytes_max  # a stored entry fits in one frame
assert protocol_response_bytes_max >= protocol_message_bytes_max
assert inbox_poll_interval_s > 0 and inbox_records_per_batch_max >= 1
assert timers_in_memory_max >= 1  # the window holds the earliest timer, or no timer ever fires
assert clean_expired_batch_max >= 1 and clean_expired_interval_ms > 0
assert 0 < pg_lease_renew_interval_s < pg_lease_ttl_s - pg_lease_self_fence_margin_s  # renewed before fenced
assert pg_lease_self_fence_margin_s > 0 and pg_lease_acquire_wait_s > pg_lease_ttl_s
assert pg_lease_ttl_s < pg_lock_timeout_s <= pg_statement_timeout_s  # a fenced leader's locks are waited out
# a request outlasts a dead leader's lease, the poll that sees it expired and the one that sees a new leader
assert cluster_leader_wait_s > pg_lease_ttl_s + 2 * pg_lease_poll_interval_s + cluster_view_refresh_s
assert cluster_forward_connections_max >= 1 and cluster_schema_poll_s > 0
