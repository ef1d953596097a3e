"""The untyped API as a user's ``mypy --strict`` sees it: test.sh checks this file, and
test_database.py / test_sync.py run it. ``Database.write`` is both ``with db.write() as tx:``
and ``db.write(ops)``, also on the database ``open_synced`` returns; the lines marked
``type: ignore`` must stay errors (``--strict`` reports an ignore that is no longer needed)."""

from typing import List, Optional, cast

import tandem


def create(key: int, title: str) -> tandem.WriteOp:
    # uniffi's enum variants (tandem.WriteOp.CREATE, tandem.Key.INT...) are not subclasses of
    # their enum for mypy, hence the cast and to_key / to_value (which return Any).
    return cast(tandem.WriteOp, tandem.WriteOp.CREATE(
        class_name="Task", key=tandem.to_key(key), values={"title": tandem.to_value(title)}))


def write_both_ways(raw: tandem.Database, first: int) -> Optional[int]:
    with raw.write() as tx:
        tx.create("Task", tandem.to_key(first), {"title": tandem.to_value("in a block")})
    ops: List[tandem.WriteOp] = [create(first + 1, "as a list")]
    version: Optional[int] = raw.write(ops)
    return version


def open_and_write(path: str, classes: List[tandem.ClassSpec]) -> tandem.Database:
    raw = tandem.Database.open(path, classes)
    write_both_ways(raw, 1)
    return raw


async def open_synced_and_write(path: str, classes: List[tandem.ClassSpec],
                                options: tandem.SyncOptions) -> tandem.SyncedDatabase:
    synced = await tandem.open_synced(path, classes, options, None, 30_000)
    write_both_ways(synced.database, 10)
    await synced.session.wait_for_upload(30_000)
    return synced


def misuse(raw: tandem.Database) -> None:
    with raw.write([]):  # type: ignore[union-attr]  # a version is no context manager
        pass
    raw.write(42)  # type: ignore[call-overload]
