"""The untyped API as a user's ``mypy --strict`` sees it: test.sh checks this file, and
test_database.py / test_sync.py run it. ``Database.write`` is both ``with db.write() as tx:``
and ``db.write(ops)``, also on the database ``open_synced`` returns; the lines marked
``type: ignore`` must stay errors (``--strict`` reports an ignore that is no longer needed)."""

from typing import List, Optional

import tandem


def create(key: int, title: str) -> tandem.WriteOp:
    # uniffi's enum variants are subclasses of their enum for mypy too (the stub
    # tandem/tandem/tandem.pyi, from bindings/python/stubgen.py): no cast.
    return tandem.WriteOp.CREATE(
        class_name="Task", key=tandem.Key.INT(key), values={"title": tandem.Value.STRING(title)})


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


def write_and_close(path: str, classes: List[tandem.ClassSpec]) -> bool:
    """``close()``, ``closed`` and the ``with`` block are typed on the untyped database too."""
    with tandem.Database.open(path, classes) as raw:
        write_both_ways(raw, 20)
    raw.close()  # a second close does nothing
    closed: bool = raw.closed
    return closed


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
    # A variant of one enum is no variant of another: a Value is no Key.
    raw.object("Task", tandem.Value.INT(1))  # type: ignore[arg-type]
    field: tandem.FieldValue = tandem.FieldValue.SINGLE(tandem.Value.INT(1))
    key: tandem.Key = field  # type: ignore[assignment]
    del key
    # A field named like a built-in type (bytes) keeps the built-in type in its constructor.
    tandem.Key.UUID("not bytes")  # type: ignore[arg-type]
    tandem.Value.OBJECT_ID(42)  # type: ignore[arg-type]


def refused(raw: tandem.Database) -> str:
    """An error variant is an exception class under its error type, as at run time."""
    try:
        raw.query("Nope", "TRUEPREDICATE", [])
    except tandem.TandemError.InvalidArgument as e:
        return str(e)
    except tandem.TandemError as e:
        return "other: " + str(e)
    return "no error"
