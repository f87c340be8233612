"""Schema changes are records: ``ModifyService`` (admin ``PATCH /services/{name}``)."""

from __future__ import annotations

from unbroken.core import records as r
from unbroken.core.actions import Done, NotFound, UpdateService
from unbroken.core.state_machine.step import Step


def on_modify_service(step: Step, rec: r.ModifyService) -> None:
    """Merge the change into the stored override, in the batch's transaction; the engine takes the new
    options (``UpdateService``) only once that committed, so a lost batch changed nothing anywhere."""
    if step.service(rec.service) is None:
        step.reply(rec.request_id, NotFound(rec.service))
        return
    old = step.txn.get_service_override(rec.service)
    merged = rec.change if old is None else old.merged(rec.change)
    step.txn.put_service_override(rec.service, merged)
    step.emit(UpdateService(rec.service, merged))
    step.reply(rec.request_id, Done())
