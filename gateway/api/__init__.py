"""The people-facing side: the HTTP API, the console and the operations endpoints.
See docs/api.md and docs/console.md.

Nothing is imported here: the gateway imports :mod:`gateway.api.room`, which loads the web stack
only when it starts, and the CLI's ``user`` and ``audit`` commands need none of it.
"""
