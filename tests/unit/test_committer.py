"""The committer's handling of a COMMIT awaited on its socket (``runtime/committer.py``), with a stand-in for
the store's pending commit over a real socket pair: what the processor is told, and that no reader or writer
is left registered on the loop."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from unbroken.runtime.committer import Batch, ThreadCommitter
from unbroken.runtime.faults import FaultPoints


class _Pending:
    """A pending commit over one end of a socket pair: the answer is a byte from the other end."""

    def __init__(self, sock: socket.socket, flush_fails: bool = False, writes_left: int = 0) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.error: Exception | None = None
        self.flush_fails = flush_fails
        self.writes_left = writes_left  # flushes that report the request not sent in full yet
        self.finished_on: list[str] = []

    @property
    def failed(self) -> bool:
        return self.error is not None

    def flush(self) -> bool:
        if self.flush_fails:
            self.sock.close()  # as libpq closes the socket of a connection that failed
            self.error = OSError("the connection failed while the request was written")
            return True
        if self.writes_left:
            self.writes_left -= 1
            return False
        return True

    def poll(self) -> bool:
        answer = self.sock.recv(1)
        if answer != b"k":
            self.error = OSError(f"answer {answer!r}")
        return True

    def finish(self) -> None:
        self.finished_on.append(threading.current_thread().name)
        if self.error is not None:
            raise self.error


class _Txn:
    def __init__(self, pending: _Pending) -> None:
        self.pending = pending

    def commit_nowait(self) -> _Pending:
        return self.pending

    def commit(self) -> None:
        raise AssertionError("a batch sent without waiting is not committed again")


class CommitOutcome:
    """The processor's side of a committer: what it was told (None: committed; else the failure)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.outcome: asyncio.Future[BaseException | None] = loop.create_future()

    def committed(self, batch: Batch) -> None:
        self.outcome.set_result(None)

    def commit_failed(self, batch: Batch, exc: BaseException) -> None:
        self.outcome.set_result(exc)


async def _run(pending: _Pending, answer: bytes | None, peer: socket.socket) -> BaseException | None:
    loop = asyncio.get_running_loop()
    committer = ThreadCommitter(loop, FaultPoints())
    sink = CommitOutcome(loop)
    committer.start(sink)
    try:
        txn: Any = _Txn(pending)
        committer.commit(Batch(txn, [], []))
        if answer is not None:
            peer.send(answer)
        outcome = await asyncio.wait_for(sink.outcome, 10)
        selector: Any = getattr(loop, "_selector", None)
        if selector is not None:  # nothing left registered on the socket's number
            assert pending.fd not in selector.get_map()
        return outcome
    finally:
        await committer.stop()


def test_an_answer_read_off_the_socket_commits_on_the_loop() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        pending = _Pending(ours, writes_left=2)  # the request went in three writes
        assert asyncio.run(_run(pending, b"k", peer)) is None
        assert pending.finished_on == ["MainThread"]


def test_a_failed_answer_is_settled_on_the_writer_thread() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        pending = _Pending(ours)
        outcome = asyncio.run(_run(pending, b"x", peer))
        assert isinstance(outcome, OSError) and "answer" in str(outcome)
        assert pending.finished_on == ["unbroken-processor"]


def test_a_request_that_cannot_be_written_is_settled_without_waiting_on_its_closed_socket() -> None:
    ours, peer = socket.socketpair()
    with peer:
        pending = _Pending(ours, flush_fails=True)
        outcome = asyncio.run(_run(pending, None, peer))
        assert isinstance(outcome, OSError) and "written" in str(outcome)
        assert pending.finished_on == ["unbroken-processor"]
