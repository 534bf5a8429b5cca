"""PostgreSQL for tests and benchmarks: ``GASGATE_TEST_PG_DSN`` (a server DSN whose user may
create databases), else a private cluster of the product's own (central/private_services.py,
what ``gasgate demo --central`` runs on)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from central.private_services import PostgreSQL, fresh_database, pg_bin

__all__ = ["PostgreSQL", "fresh_database", "pg_bin", "server"]


@contextlib.contextmanager
def server() -> Iterator[str]:
    """A server DSN: ``GASGATE_TEST_PG_DSN``, else a private cluster for the block."""
    given = os.environ.get("GASGATE_TEST_PG_DSN")
    if given:
        yield given
        return
    cluster = PostgreSQL()
    cluster.start()
    try:
        yield cluster.dsn
    finally:
        cluster.remove()
