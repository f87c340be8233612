"""A saga: book a flight, a car and a hotel; if a step fails for good, undo what was done.

Each booking is a durable step (``ctx.run``). Before a step runs, its compensation is registered:
the step may have taken effect even if it failed (the request reached the hotel, the reply was
lost), and cancellations are idempotent. On a ``TerminalError`` the compensations run in reverse
order, each as its own durable step with a bounded retry budget; a compensation that keeps failing
is logged (a human has to look at it) and the others still run. Then the error goes back to the
caller. Because every step is journaled, a crash in the middle resumes the saga where it was.

The ``Ledger`` object (one per trip) records what happened, so you can look at it:

    unbroken serve examples/travel_saga.py
    curl localhost:8080/Trip/book -H 'content-type: application/json' \
         -d '{"trip_id": "t1", "traveller": "Alice", "fail_hotel": true, "fail_car_cancellation": true}'
    curl localhost:8080/Ledger/t1/entries
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from pydantic import BaseModel

import unbroken as restate

log = logging.getLogger("examples.travel_saga")


class TripRequest(BaseModel):
    trip_id: str
    traveller: str
    fail_hotel: bool = False  # the hotel answers "fully booked" (a terminal failure)
    fail_car_cancellation: bool = False  # the car rental's cancellation endpoint is down for good


class TripBooking(BaseModel):
    trip_id: str
    flight: str
    car: str
    hotel: str


# --- stand-ins for the external booking APIs -------------------------------------------------------
def book_flight(req: TripRequest) -> str:
    return f"FL-{req.trip_id}"


def book_car(req: TripRequest) -> str:
    return f"CAR-{req.trip_id}"


def book_hotel(req: TripRequest) -> str:
    if req.fail_hotel:
        raise restate.TerminalError(f"no hotel room for trip {req.trip_id}: fully booked", status_code=409)
    return f"HOTEL-{req.trip_id}"


def cancel_flight(req: TripRequest) -> None:
    pass


def cancel_car(req: TripRequest) -> None:
    if req.fail_car_cancellation:
        raise ConnectionError("car rental API unreachable")  # retryable: ctx.run retries it


def cancel_hotel(req: TripRequest) -> None:
    pass


# --- the ledger: what the saga did, per trip ----------------------------------------------------------
ledger = restate.VirtualObject("Ledger")


@ledger.handler()
async def record(ctx: restate.ObjectContext, entry: str) -> None:
    entries = await ctx.get("entries", type_hint=list[str]) or []
    entries.append(entry)
    ctx.set("entries", entries)


@ledger.handler(kind="shared")
async def entries(ctx: restate.ObjectSharedContext) -> list[str]:
    return await ctx.get("entries", type_hint=list[str]) or []


# --- the saga -------------------------------------------------------------------------------------------
trip = restate.Service("Trip")

COMPENSATION_RETRIES = restate.RunOptions[None](
    max_attempts=3, initial_retry_interval=timedelta(milliseconds=100)
)


@trip.handler()
async def book(ctx: restate.Context, req: TripRequest) -> TripBooking:
    compensations: list[tuple[str, Callable[[], Awaitable[None]]]] = []

    async def note(entry: str) -> None:
        await ctx.object_call(record, req.trip_id, entry)

    def undo(what: str, action: Callable[[TripRequest], None]) -> Callable[[], Awaitable[None]]:
        async def compensate() -> None:
            await ctx.run_typed(f"cancel {what}", action, COMPENSATION_RETRIES, req)
            await note(f"{what} cancelled")

        return compensate

    try:
        compensations.append(("flight", undo("flight", cancel_flight)))
        flight = await ctx.run("book flight", book_flight, args=(req,))
        await note(f"flight booked: {flight}")

        compensations.append(("car", undo("car", cancel_car)))
        car = await ctx.run("book car", book_car, args=(req,))
        await note(f"car booked: {car}")

        compensations.append(("hotel", undo("hotel", cancel_hotel)))
        hotel = await ctx.run("book hotel", book_hotel, args=(req,))
        await note(f"hotel booked: {hotel}")
    except restate.TerminalError as failure:
        await note(f"booking failed: {failure.message}")
        for what, compensate in reversed(compensations):
            try:
                await compensate()
            except restate.TerminalError as stuck:
                # Retries are spent: log it for a human and keep undoing the rest.
                log.error("trip %s: could not cancel the %s: %s", req.trip_id, what, stuck.message)
                await note(f"{what} cancellation FAILED: {stuck.message}")
        raise

    return TripBooking(trip_id=req.trip_id, flight=flight, car=car, hotel=hotel)


app = restate.app([trip, ledger])
