"""The composition root: builds a process's Runtime (DB, store, broker with our actors).

Nothing in `workers/` imports this module; the CLI, the API app and the scripts do.
Keeping it apart is what lets the actors read the current runtime (`runtime.py`)
while the broker declares those actors, with no import running back.
"""

from __future__ import annotations

from mediamill.config.settings import Settings
from mediamill.storage.blobs import open_store
from mediamill.storage.db import database_for
from mediamill.workers.broker import get_broker
from mediamill.workers.runtime import Runtime


def build_runtime(settings: Settings) -> Runtime:
    """Wire one process. On the embedded SQLite default, migrations apply themselves."""
    db = database_for(settings.resolved_database_url)
    if settings.database_url is None:
        db.ensure_schema()
    store = open_store(settings)
    broker = get_broker(settings, db)
    return Runtime(settings=settings, db=db, store=store, broker=broker)
