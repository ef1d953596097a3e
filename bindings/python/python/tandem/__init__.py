"""Tandem: an offline-first object database with real-time sync.

The generated uniffi bindings live in ``tandem.tandem``; this module re-exports them and adds a
thin idiomatic layer:

* ``with db.write() as tx:`` commits on success and rolls back on an exception;
* ``Listener`` base classes whose callbacks may raise without stopping other listeners;
* ``asyncio``-friendly awaitables (``await session.wait_for_upload()``).
"""

from contextlib import contextmanager
from typing import Iterator

from .tandem import *  # noqa: F401,F403  (the generated API)
from .tandem import Database, WriteTransaction

__all__ = [name for name in dir() if not name.startswith("_")]


@contextmanager
def _write(self: Database) -> Iterator[WriteTransaction]:
    """A write transaction: committed when the block ends, rolled back if it raises."""
    tx = self.write_transaction()
    try:
        yield tx
    except BaseException:
        tx.rollback()
        raise
    tx.commit()


Database.write = _write  # type: ignore[method-assign]
