"""The JSON API's routers, one module per resource; `onduty.api.app.build_app` composes them.

Each module has one function that builds an `APIRouter` over the service (and the ingest path,
for the routes that record something): `incidents`, `approvals` (approvals and autonomy
raises), `silences`, `policy`, `events` (the log and its audit) and `probes` (liveness,
readiness, metrics). Who may call what is one table, `onduty.api.app.ROUTE_ROLES`."""
