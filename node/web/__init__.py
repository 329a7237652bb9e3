"""The IOC console: a web server on every node (`lienthong run`), its read API, accounts and
metrics. `app.py` (server, who may ask what), `api.py` (the read API's queries), `routes.py`
(URLs to handlers), `openapi.py`, `accounts.py`, `sessions.py`, `health.py` (/healthz),
`metrics.py` (/metrics), `pages.py` and `templates/` (the server-rendered pages)."""
