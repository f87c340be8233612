"""Schema changes are records: ``ModifyService`` (admin ``PATCH /services/{name}``), ``RegisterDeployment``
and ``RemoveDeployment`` (admin ``/deployments``)."""

from __future__ import annotations

from unbroken.core import records as r
from unbroken.core.actions import Done, NotFound, UpdateDeployments, UpdateService
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


def on_register_deployment(step: Step, rec: r.RegisterDeployment) -> None:
    """Store the deployment in the batch's transaction (the admin API checked it against the services served
    now); the node serves its services once that committed (``UpdateDeployments``)."""
    removed = tuple(d for d in rec.replaces if step.txn.get_deployment(d) is not None)
    for deployment_id in removed:
        step.txn.delete_deployment(deployment_id)
    step.txn.put_deployment(rec.deployment)
    step.emit(UpdateDeployments(rec.deployment, removed))
    step.reply(rec.request_id, Done())


def on_remove_deployment(step: Step, rec: r.RemoveDeployment) -> None:
    if step.txn.get_deployment(rec.deployment_id) is None:
        step.reply(rec.request_id, NotFound(rec.deployment_id))
        return
    step.txn.delete_deployment(rec.deployment_id)
    step.emit(UpdateDeployments(None, (rec.deployment_id,)))
    step.reply(rec.request_id, Done())
