"""bench/services.py written with Unbroken's SDK, as a Restate deployment only (``app.deployment()``: the
protocol, no embedded engine), for bench/deployment_cost.py: ``hypercorn deployment_services:deployment``."""

from services import app

deployment = app.deployment()
