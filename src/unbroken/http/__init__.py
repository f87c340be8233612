"""HTTP plumbing shared by the ingress and the admin API (ASGI helpers, request-head bounds)."""
