"""``GET /invocations/{id}/explain``: why an invocation is (not) progressing, in one answer.

Everything is computed from what the engine stores (invocation row, journal, lock, inbox, timers,
promises), read through the read model (``core.read_model.Snapshot``)::

    {"invocation_id": "inv_1…", "target": "Svc/handler", "status": "suspended", "attempts": 1,
     "summary": "one sentence",
     "reasons": [{"kind": "sleep", ...}, ...],     # structured, one per thing it waits on
     "chain": [{"invocation_id", "target", "status", "summary", "reasons", "depth", "waited_on_by"}, ...]}

``chain`` follows what the invocation waits on to other invocations (the callee of a pending call, the
target of an attach, the holder of the key's lock it is queued behind) recursively, depth first, each
invocation once, at most ``limits.explain_chain_links_max`` hops.

Reason kinds: ``queued`` (behind the key's lock holder), ``scheduled`` (delayed send), ``running``,
``sleep``, ``awakeable``, ``promise``, ``call``, ``attach``, ``run`` (a ``ctx.run`` in flight),
``completion`` (anything else awaited), ``cancel_requested``, ``backing_off``, ``paused``,
``completed``.

Not a case here: Restate can report an invocation "pinned to a deployment that is gone". Unbroken's
handlers run in-process, registered by the very process that runs the engine, so there is no deployment
that can disappear under a started invocation (a removed handler fails its attempt with 404 and shows as
backing-off/paused with that error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unbroken.core import journal as j
from unbroken.core import limits
from unbroken.core.ids import InvocationId, awakeable_id
from unbroken.core.invocation import Invocation, Status
from unbroken.core.read_model import Snapshot, rfc3339
from unbroken.core.storage import TimerKind


@dataclass
class _Journal:
    """One invocation's journal, indexed for the questions explain asks."""

    commands: list[tuple[int, j.Entry]] = field(default_factory=list)
    notified: set[int] = field(default_factory=set)  # completion ids answered
    signals: set[int] = field(default_factory=set)  # signal indexes received
    call_ids: dict[int, str] = field(default_factory=dict)  # invocation-id completion id -> callee id
    cancel_index: int | None = None  # journal index of the CANCEL signal

    @classmethod
    def read(cls, conn: Snapshot, invocation_id: str) -> _Journal:
        out = cls()
        for idx, entry in enumerate(conn.journal(invocation_id)):
            if not isinstance(entry, j.Notification):
                out.commands.append((idx, entry))
            elif entry.signal_idx:
                out.signals.add(entry.signal_idx)
                if entry.signal_idx == j.CANCEL_SIGNAL:
                    out.cancel_index = idx
            else:
                out.notified.add(entry.completion_id)
                if entry.kind == "call_id":
                    callee = entry.invocation_id or _utf8(entry.result.value)
                    if callee:
                        out.call_ids[entry.completion_id] = callee
        return out

    def pending(self) -> list[tuple[int, j.Entry]]:
        """Commands whose result completion has not been answered yet, in journal order."""
        return [(i, c) for i, c in self.commands if _result_cid(c) and _result_cid(c) not in self.notified]

    def compensating(self) -> bool:
        """Commands were journaled after the CANCEL signal: the handler got it and runs its compensation."""
        c = self.cancel_index
        return c is not None and any(idx > c for idx, _ in self.commands)

    def by_completion(self, cid: int) -> tuple[int, j.Entry, bool] | None:
        """The command answered by completion ``cid`` (the flag: it is a call's invocation-id completion)."""
        for idx, cmd in self.commands:
            if _result_cid(cmd) == cid:
                return idx, cmd, False
            if getattr(cmd, "invocation_id_completion_id", None) == cid:
                return idx, cmd, True
        return None


@dataclass
class _Hop:
    """The explanation of one invocation, and the invocations it waits on (for the chain)."""

    body: dict[str, Any]
    next_ids: list[str] = field(default_factory=list)


def explain(conn: Snapshot, invocation_id: str) -> dict[str, Any] | None:
    """The explanation of ``invocation_id`` (None if it does not exist)."""
    inv = _load(conn, invocation_id)
    if inv is None:
        return None
    top = _explain_one(conn, inv)
    chain: list[dict[str, Any]] = []
    seen = {inv.id}
    stack = [(nid, 1, inv.id) for nid in reversed(top.next_ids)]
    while stack and len(chain) < limits.explain_chain_links_max:
        nid, depth, parent = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        child = _load(conn, nid)
        if child is None:
            chain.append(
                {
                    "invocation_id": nid,
                    "target": None,
                    "status": None,
                    "depth": depth,
                    "waited_on_by": parent,
                    "reasons": [],
                    "summary": "not found: it was purged, or has not been created yet",
                }
            )
            continue
        hop = _explain_one(conn, child)
        chain.append({**hop.body, "depth": depth, "waited_on_by": parent})
        stack.extend((n, depth + 1, child.id) for n in reversed(hop.next_ids))
    return {**top.body, "chain": chain}


def _load(conn: Snapshot, invocation_id: str) -> Invocation | None:
    return conn.invocation(invocation_id)


def _explain_one(conn: Snapshot, inv: Invocation) -> _Hop:
    match inv.status:
        case Status.COMPLETED:
            hop = _completed(inv)
        case Status.SCHEDULED:
            hop = _scheduled(conn, inv)
        case Status.PENDING:
            hop = _queued(conn, inv)
        case Status.BACKING_OFF:
            hop = _backing_off(conn, inv)
        case Status.PAUSED:
            hop = _paused(conn, inv)
        case Status.SUSPENDED:
            hop = _suspended(conn, inv)
        case _:  # running / ready
            hop = _running(conn, inv)
    hop.body = {
        "invocation_id": inv.id,
        "target": str(inv.target),
        "status": inv.status.value,
        "attempts": inv.attempts,
        **hop.body,
    }
    return hop


# ------------------------------------------------------------------------------------------ statuses
def _completed(inv: Invocation) -> _Hop:
    result = inv.result
    assert result is not None
    when = rfc3339(inv.completed_at_ms)
    reason: dict[str, Any] = {
        "kind": "completed",
        "completed_at": when,
        "expires_at": rfc3339(inv.expires_at_ms),
    }
    if result.failure is not None:
        reason.update(
            result="failure", failure={"code": result.failure.code, "message": result.failure.message}
        )
        summary = f"completed at {when} with failure [{result.failure.code}] {result.failure.message}"
    else:
        value = _utf8(result.value)
        reason.update(result="success", value=_clip(value))
        summary = f"completed successfully at {when}" + (f" with result {_clip(value, 80)}" if value else "")
    if inv.expires_at_ms:
        summary += f"; the result is kept until {rfc3339(inv.expires_at_ms)}"
    return _Hop({"summary": summary, "reasons": [reason]})


def _scheduled(conn: Snapshot, inv: Invocation) -> _Hop:
    start_at = rfc3339(conn.next_timer_ms(inv.id, TimerKind.INVOKE) or inv.execute_at_ms)
    summary = f"scheduled (a delayed send): it starts at {start_at}"
    return _Hop({"summary": summary, "reasons": [{"kind": "scheduled", "start_at": start_at}]})


def _queued(conn: Snapshot, inv: Invocation) -> _Hop:
    service, key = inv.target.service, inv.target.key or ""  # queued and promises: keyed services only
    holder_id = conn.lock_holder(service, key)
    spot = conn.inbox_spot(service, key, inv.id)
    ahead = 0 if spot is None else spot.ahead
    holder = _load(conn, holder_id) if holder_id else None
    reason: dict[str, Any] = {
        "kind": "queued",
        "service": service,
        "key": key,
        "lock_holder": holder_id,
        "lock_holder_target": None if holder is None else str(holder.target),
        "holding_since": None if holder is None else rfc3339(holder.running_at_ms),
        "queued_since": None if spot is None else rfc3339(spot.queued_at_ms),
        "ahead_in_inbox": ahead,
    }
    if holder_id is None:
        summary = f"queued for the lock of {service}/{key}"
    else:
        since = f" since {reason['holding_since']}" if reason["holding_since"] else ""
        target = f" ({reason['lock_holder_target']})" if holder is not None else ""
        summary = f"queued behind {holder_id}{target}, which holds the lock of {service}/{key}{since}"
    if reason["queued_since"]:
        summary += f"; queued since {reason['queued_since']}"
    if ahead:
        summary += f", {ahead} more ahead of it in the inbox"
    return _Hop({"summary": summary, "reasons": [reason]}, [holder_id] if holder_id else [])


def _running(conn: Snapshot, inv: Invocation) -> _Hop:
    journal = _Journal.read(conn, inv.id)
    reason: dict[str, Any] = {
        "kind": "running",
        "attempt": inv.attempts,
        "running_since": rfc3339(inv.running_at_ms),
    }
    if inv.last_failure:
        reason.update(previous_error=_first_line(inv.last_failure), previous_error_code=inv.last_failure_code)
    waits = [_wait_on_command(conn, inv, journal, idx, cmd) for idx, cmd in journal.pending()]
    waits += [
        _wait_on_awakeable(conn, inv, sig, open_only=True) for sig in _open_awakeables(conn, inv, journal)
    ]
    lead = f"running (attempt {inv.attempts})"
    if _current(waits, journal):
        summary = f"{lead}, " + "; ".join(w.body["phrase"] for w in _current(waits, journal))
    else:
        summary = f"{lead}, executing handler code: no journaled operation or awakeable is pending"
    return _finish(summary, [reason], waits, journal, inv.status)


def _suspended(conn: Snapshot, inv: Invocation) -> _Hop:
    journal = _Journal.read(conn, inv.id)
    waits: list[_Hop] = []
    for cid in sorted(inv.waiting_completions):
        found = journal.by_completion(cid)
        if found is None:
            waits.append(_Hop({"kind": "completion", "completion_id": cid, "phrase": f"completion {cid}"}))
        else:
            idx, cmd, for_id = found
            waits.append(_wait_on_command(conn, inv, journal, idx, cmd, for_id=for_id))
    for sig in sorted(inv.waiting_signals):
        if sig >= j.FIRST_AWAKEABLE_SIGNAL:
            waits.append(_wait_on_awakeable(conn, inv, sig))
    # The CANCEL signal (1) is in every suspension's wait set: a suspended handler stays cancellable.
    phrases = (
        "; ".join(w.body["phrase"] for w in _current(waits, journal))
        or "waiting on nothing but a cancellation"
    )
    return _finish(f"suspended, {phrases}", [], waits, journal, inv.status)


def _backing_off(conn: Snapshot, inv: Invocation) -> _Hop:
    next_at = rfc3339(conn.next_timer_ms(inv.id, TimerKind.RETRY) or inv.next_retry_at_ms)
    error = _first_line(inv.last_failure or "unknown error")
    reason = {
        "kind": "backing_off",
        "attempt": inv.attempts,
        "error": error,
        "error_code": inv.last_failure_code,
        "error_detail": inv.last_failure,
        "next_retry_at": next_at,
        "failed_attempts": inv.retry_count,
    }
    head = f"backing off after error {_quote(error)} on attempt {inv.attempts}"
    return _with_step(conn, inv, head, f"; next retry at {next_at}", reason)


def _paused(conn: Snapshot, inv: Invocation) -> _Hop:
    reason: dict[str, Any] = {"kind": "paused", "attempts": inv.attempts, "failed_attempts": inv.retry_count}
    resume = f"resume it with `unbroken invocations resume {inv.id}`"
    if inv.last_failure:
        error = _first_line(inv.last_failure)
        reason.update(error=error, error_code=inv.last_failure_code, error_detail=inv.last_failure)
        head = f"paused after {inv.attempts} attempts with error {_quote(error)}"
    else:
        reason.update(error=None, error_code=None, error_detail=None)
        head = f"paused by an operator after {inv.attempts} attempts"
    return _with_step(conn, inv, head, f"; {resume}", reason)


def _with_step(conn: Snapshot, inv: Invocation, head: str, tail: str, reason: dict[str, Any]) -> _Hop:
    """A failing invocation: name the journaled step it was at (e.g. the ``ctx.run`` that fails)."""
    journal = _Journal.read(conn, inv.id)
    steps = [_wait_on_command(conn, inv, journal, idx, cmd) for idx, cmd in journal.pending()]
    runs = [s.body for s in _current(steps, journal) if s.body["kind"] == "run"]
    for run in runs:
        run["phrase"] = run["phrase"].replace("executing ", "the failing step: ", 1)
    if runs:
        label = f"ctx.run '{runs[0]['name']}'" if runs[0]["name"] else "a ctx.run"
        head += f" in {label} (journal entry {runs[0]['entry_index']})"
    return _finish(head + tail, [reason], steps, journal, inv.status)


def _current(waits: list[_Hop], journal: _Journal) -> list[_Hop]:
    """The waits that still matter: once the handler got a cancel, what it awaited before is abandoned (its
    calls are being cancelled too); only what it journaled since — its compensation — is current."""
    if not journal.compensating():
        return waits
    c = journal.cancel_index
    assert c is not None
    return [w for w in waits if w.body.get("entry_index") is None or w.body["entry_index"] > c]


_CANCELLED = {  # (status, compensation steps journaled since the cancel) -> what is true now
    (
        Status.RUNNING,
        True,
    ): "it was cancelled and the handler is running its compensation (the steps journaled since the cancel)",
    (
        Status.RUNNING,
        False,
    ): "it was cancelled: the cancellation was delivered to the handler, which raises it "
    "at the await it is at, or its next one; no compensation step is journaled yet",
    (Status.BACKING_OFF, True): "it was cancelled, and its compensation failed: the retry continues it",
    (Status.BACKING_OFF, False): "it was cancelled: the next attempt raises the cancellation in the handler",
    (Status.PAUSED, True): "it was cancelled, and its compensation failed until it paused",
    (Status.PAUSED, False): "it was cancelled, but paused before the handler got the cancellation",
}


def _finish(
    summary: str, reasons: list[dict[str, Any]], waits: list[_Hop], journal: _Journal, status: Status
) -> _Hop:
    if journal.cancel_index is not None:
        compensating = journal.compensating()
        reasons = [
            *reasons,
            {"kind": "cancel_requested", "entry_index": journal.cancel_index, "handler_got_it": compensating},
        ]
        summary += "; " + _CANCELLED.get((status, compensating), _CANCELLED[(Status.RUNNING, compensating)])
        c = journal.cancel_index
        for w in waits:
            at = w.body.get("entry_index")
            if compensating and at is not None and at < c:
                w.body["abandoned"] = True  # awaited before the cancel: no longer
    next_ids = [n for w in waits for n in w.next_ids]
    return _Hop({"summary": summary, "reasons": reasons + [w.body for w in waits]}, next_ids)


# ---------------------------------------------------------------------------------------------- waits
def _wait_on_command(
    conn: Snapshot, inv: Invocation, journal: _Journal, idx: int, cmd: j.Entry, for_id: bool = False
) -> _Hop:
    at = f"journal entry {idx}"
    name = getattr(cmd, "name", "") or None
    match cmd:
        case j.SleepCommand():
            until = rfc3339(cmd.wake_up_time_ms)
            label = f"ctx.sleep '{name}'" if name else "ctx.sleep"
            return _Hop(
                {
                    "kind": "sleep",
                    "entry_index": idx,
                    "name": name,
                    "wake_up_at": until,
                    "phrase": f"sleeping until {until} ({label} at {at})",
                }
            )
        case j.CallCommand():
            target = f"{cmd.service}/{cmd.key + '/' if cmd.key is not None else ''}{cmd.handler}"
            callee = journal.call_ids.get(cmd.invocation_id_completion_id)
            what = "the invocation id of a call" if for_id else "a call"
            phrase = f"waiting on {what} to {target}" + (f" ({callee})" if callee else "") + f" made at {at}"
            body = {
                "kind": "call",
                "entry_index": idx,
                "target": target,
                "callee_id": callee,
                "phrase": phrase,
            }
            return _Hop(body, [callee] if callee else [])
        case j.RunCommand():
            label = f"ctx.run '{name}'" if name else "a ctx.run"
            return _Hop(
                {"kind": "run", "entry_index": idx, "name": name, "phrase": f"executing {label} ({at})"}
            )
        case j.GetPromiseCommand() | j.PeekPromiseCommand() | j.CompletePromiseCommand():
            return _wait_on_promise(conn, inv, idx, cmd)
        case j.AttachInvocationCommand() | j.GetInvocationOutputCommand():
            phrase = f"waiting for the result of {cmd.invocation_id} ({at})"
            body = {
                "kind": "attach",
                "entry_index": idx,
                "invocation_id": cmd.invocation_id,
                "phrase": phrase,
            }
            return _Hop(body, [cmd.invocation_id])
        case _:
            kind = j.entry_type_name(cmd)
            return _Hop(
                {
                    "kind": "completion",
                    "entry_index": idx,
                    "entry_type": kind,
                    "phrase": f"waiting on {kind} ({at})",
                }
            )


def _wait_on_promise(conn: Snapshot, inv: Invocation, idx: int, cmd: j.Entry) -> _Hop:
    name = str(getattr(cmd, "key", ""))
    service, key = inv.target.service, inv.target.key or ""  # queued and promises: keyed services only
    promise = conn.promise(service, key, name)
    completed = promise is not None and promise.result is not None
    verb = {
        j.GetPromiseCommand: "awaiting",
        j.PeekPromiseCommand: "peeking at",
        j.CompletePromiseCommand: "completing",
    }[type(cmd)]
    phrase = f"{verb} durable promise '{name}' of workflow {service}/{key} (journal entry {idx})"
    if verb == "awaiting" and not completed:
        phrase += f"; complete it from a shared handler of {service}/{key}"
    return _Hop(
        {
            "kind": "promise",
            "entry_index": idx,
            "promise": name,
            "workflow": f"{service}/{key}",
            "promise_completed": completed,
            "phrase": phrase,
        }
    )


def _open_awakeables(conn: Snapshot, inv: Invocation, journal: _Journal) -> list[int]:
    """Signal indexes of awakeables a running handler created, handed out through the journal and not
    resolved yet: what it most likely waits on, known before it suspends. Awakeables are numbered from
    ``FIRST_AWAKEABLE_SIGNAL`` in creation order; the scan stops after a few indexes not found."""
    found: list[int] = []
    misses, sig = 0, j.FIRST_AWAKEABLE_SIGNAL
    parsed = InvocationId.parse(inv.id)
    while (
        misses < limits.explain_awakeable_misses_max
        and sig < j.FIRST_AWAKEABLE_SIGNAL + limits.explain_awakeable_signals_max
    ):
        aid = awakeable_id(parsed, sig).encode()
        if conn.journal_entry_containing(inv.id, aid) is not None:
            misses = 0
            if sig not in journal.signals:
                found.append(sig)
        else:
            misses += 1
        sig += 1
    return found


def _wait_on_awakeable(conn: Snapshot, inv: Invocation, signal_idx: int, open_only: bool = False) -> _Hop:
    """An awakeable the handler awaits. Awakeables are no journal entries (protocol v5+: the SDK derives the
    id from the invocation id and a signal index), so where it was created is given as the first journal
    entry that carries its id (where the handler hands the id out: a send, a call, a ``ctx.run``, state)."""
    aid = awakeable_id(InvocationId.parse(inv.id), signal_idx)
    row = conn.journal_entry_containing(inv.id, aid.encode())
    entry_index = None if row is None else row[0]
    phrase = f"awakeable {aid} is not resolved yet" if open_only else f"awaiting awakeable {aid}"
    entry_type = None
    if row is not None:
        entry_type = j.entry_type_name(row[1])
        phrase += f" (created at journal entry {entry_index}, {entry_type}, which hands its id out)"
    else:
        phrase += " (its id appears in no journal entry)"
    phrase += f"; resolve it with `unbroken awakeables resolve {aid} JSON`"
    return _Hop(
        {
            "kind": "awakeable",
            "awakeable_id": aid,
            "signal_index": signal_idx,
            "entry_index": entry_index,
            "entry_type": entry_type,
            "phrase": phrase,
        }
    )


# -------------------------------------------------------------------------------------------- helpers
def _result_cid(cmd: j.Entry) -> int:
    """The completion id carrying a command's result (0: the command has no result to wait for)."""
    if isinstance(cmd, j.OneWayCallCommand | j.Notification):
        return 0
    return int(getattr(cmd, "completion_id", 0) or 0)


def _utf8(value: bytes | None) -> str | None:
    return None if value is None else bytes(value).decode("utf-8", errors="replace")


def _clip(text: str | None, limit: int = limits.explain_value_chars_max) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _quote(text: str) -> str:
    return (
        f"'{_clip(text, limits.explain_value_chars_max)}'"  # the error is the point of the answer: most of it
    )
