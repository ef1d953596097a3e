"""Write transactions in progress and closed databases: what the typed layer (``models.py``) and
the untyped API's Python additions (``__init__.py``) share.

*Nested writes.* A write transaction (a ``with db.write()`` block of either API) is open from
the start of its block to the end of its commit or rollback, for one database file (its device
and inode, so every handle opened in this process on that file counts, whatever path spelled
it) in one flow of execution: the thread, or, on a thread running an asyncio event loop, the
asyncio task. Opening a write on the same file in the same flow while one is open (another
``with db.write()``, ``db.write(ops)``, ``write_transaction()``, ``SyncSession.transact``) is
refused, as Realm refuses a nested ``beginWrite``: the inner one would commit on its own whatever
became of the outer one.

*Closing.* The generated ``Database`` has no ``close``; the Python layer gives it one. A closed
database's handle on the Rust object is released (the generated module's own free function, as
when it is garbage-collected), and so are those of the results, write transactions and sync
sessions made through it; their listener handles are cancelled and their sessions stopped. Any
later call on one of them raises :func:`closed_error` instead of reaching Rust.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from typing import Any, Callable, Dict, Hashable, Optional, Set, Tuple

from . import tandem as _ffi

NESTED_WRITE = (
    "a write transaction is already open on this thread: nested writes are not supported"
)
"""The message (its start) of the error a nested write raises."""

CLOSED = "the database is closed"
"""The message (its start) of the error any use of a closed database raises."""

FINISHED = "this transaction has ended"
"""The message (its start) of the error any use of a finished typed transaction raises."""


def nested_write_error() -> Exception:
    """The error for a write opened while another is open on the same file in the same flow."""
    return _ffi.TandemError.InvalidArgument(
        f"{NESTED_WRITE} (make these changes in the transaction that is open, or after its "
        "block ends)"
    )


def closed_error() -> Exception:
    """The error for any use of a closed database, or of results, transactions and sessions
    made through it."""
    return _ffi.TandemError.InvalidArgument(
        f"{CLOSED} (close() was called): open it again to use it"
    )


def finished_error() -> Exception:
    """The error for any use of a typed transaction after its ``with`` block ended."""
    return _ffi.TandemError.InvalidArgument(
        f"{FINISHED}: its `with db.write()` block is over (committed or rolled back); "
        "open a new one with db.write()"
    )


# --- write transactions in progress ------------------------------------------------------------

# The writes open on each thread: a set per thread of what ``write_key`` returns. The typed
# layer's write block inlines begin_write and end_write (``models._WriteBlock``): a function call
# is a noticeable part of a one-object transaction's Python side.
local = threading.local()
running_loop = asyncio._get_running_loop  # None outside a running loop; raises nothing
current_task = asyncio.current_task


class File:
    """Identifies one database file (:func:`file_key`); hashed by identity, so a write's key is
    cheap to hash."""

    __slots__ = ("name", "__weakref__")

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"File({self.name!r})"


_files: "weakref.WeakValueDictionary[Hashable, File]" = weakref.WeakValueDictionary()
_files_lock = threading.Lock()


def file_key(path: str) -> File:
    """The :class:`File` of the database file at ``path`` (it exists once opened): the same
    object for every path to the same file (device and inode, or the resolved path if it
    cannot be read), while any database holds it."""
    try:
        st = os.stat(path)
        identity: Hashable = ("inode", st.st_dev, st.st_ino)
    except OSError:
        identity = ("path", os.path.realpath(path))
    with _files_lock:
        found = _files.get(identity)
        if found is None:
            found = _files[identity] = File(path)
        return found


def held() -> Set[Any]:
    """The keys (:func:`write_key`) of the writes open on this thread."""
    try:
        found: Set[Any] = local.held
    except AttributeError:
        found = local.held = set()
    return found


def write_key(file: Hashable) -> Any:
    """What marks a write open on ``file`` in this flow of execution: the thread (the file
    itself, in the thread's set) or, on a thread running an event loop, the asyncio task."""
    loop = running_loop()
    return file if loop is None else (file, current_task(loop))


def begin_write(file: Hashable) -> Tuple[Set[Any], Any]:
    """Marks a write transaction open on ``file`` in this flow; raises
    :func:`nested_write_error` if one is open already. Returns what :func:`end_write` takes."""
    key = write_key(file)
    open_here = held()
    if key in open_here:
        raise nested_write_error()
    open_here.add(key)
    return open_here, key


def end_write(mark: Tuple[Set[Any], Any]) -> None:
    """Marks the write :func:`begin_write` returned ``mark`` for as no longer open."""
    open_here, key = mark
    open_here.discard(key)


def check_no_write(file: Hashable) -> None:
    """Raises :func:`nested_write_error` if a write transaction is open on ``file`` in this
    flow (for writes that open and commit in one call)."""
    if write_key(file) in held():
        raise nested_write_error()


# --- open and closed databases -----------------------------------------------------------------

# Taken around each clone of a handle of a database (or of an object made through it) and around
# its release, so that no call clones a handle after it was freed.
_handle_lock = threading.Lock()


class DatabaseState:
    """What the Python layer keeps about one untyped ``Database`` object (its ``_tandem_state``):
    the file it is on, whether it is closed, and what closing it releases (held weakly, so that
    dropping them still releases them as before)."""

    __slots__ = ("file_key", "closed", "children", "handles", "sessions", "on_close", "__weakref__")

    def __init__(self, file: Optional[File]) -> None:
        # A database the package did not open (no path known) is a file of its own.
        self.file_key: File = file if file is not None else File(f"<database {id(self):#x}>")
        self.closed = False
        self.children: "weakref.WeakSet[Any]" = weakref.WeakSet()
        """Results and write transactions made through the database: released at close."""
        self.handles: "weakref.WeakSet[Any]" = weakref.WeakSet()
        """Listener handles: cancelled at close."""
        self.sessions: "weakref.WeakSet[Any]" = weakref.WeakSet()
        """Sync sessions: stopped and released at close."""
        self.on_close: Dict[object, Callable[[], None]] = {}
        """Called at close (the typed database releasing its writer, async iterations ending)."""

    def adopt(self, obj: Any, kind: str) -> None:
        """Records ``obj`` (a ``child``, ``handle`` or ``session``) as made through the database;
        a child or session then refuses calls once the database is closed."""
        if obj is None:
            return
        if kind != "handle":
            obj._tandem_state = self
        with _handle_lock:  # not while close() takes its snapshot of them
            {"handle": self.handles, "session": self.sessions}.get(kind, self.children).add(obj)
            closed = self.closed
        if closed:  # closed meanwhile, by another thread
            if kind == "handle":
                obj.cancel()
                return
            if kind == "session":
                obj.stop()
            release(obj)

    def close(self, db: Any) -> None:
        """Closes database ``db`` (whose state this is): see the module's docstring."""
        with _handle_lock:
            if self.closed:
                return
            self.closed = True
            handles, sessions, children = list(self.handles), list(self.sessions), list(self.children)
        release(db)  # from here on, calls on it raise
        try:
            for handle in handles:
                handle.cancel()
            for session in sessions:
                try:
                    session.stop()
                finally:
                    release(session)
            # After the listeners are cancelled: an async iteration that ends has seen its last.
            for callback in list(self.on_close.values()):
                callback()
        finally:
            self.on_close.clear()
            for child in children:
                release(child)


def state_of(obj: Any) -> DatabaseState:
    """The state of a ``Database`` (made on first use for one the package did not open), or of
    the database an object was made through."""
    state: Optional[DatabaseState] = obj.__dict__.get("_tandem_state")
    if state is None:
        state = obj.__dict__.setdefault("_tandem_state", DatabaseState(None))
        assert state is not None
    return state


def adopt_database(db: Any, path: str) -> Any:
    """Gives a just-opened ``Database`` its state (the file at ``path``); returns it."""
    db._tandem_state = DatabaseState(file_key(path))
    return db


def release(obj: Any) -> None:
    """Marks a generated object closed and frees its handle on the Rust object now, as the
    generated ``__del__`` would (it then frees nothing). Objects of another uniffi generator,
    without ``_handle``, are only marked: Rust frees them when they are garbage-collected."""
    with _handle_lock:
        if obj.__dict__.get("_tandem_closed"):
            return
        obj._tandem_closed = True
        handle = obj.__dict__.get("_handle")
        if handle is None:
            return
        obj._handle = None
    # Freed outside the lock: dropping the last reference to the store may wait for its
    # notifier thread, whose listener may be cloning a handle.
    make_instance: Optional[Callable[[Any], Any]] = getattr(type(obj), "_uniffi_make_instance", None)
    if make_instance is not None:
        orphan = make_instance(handle)  # its __del__ frees the handle
        del orphan


def released(obj: Any) -> bool:
    """Whether :func:`release` released ``obj``."""
    return bool(obj.__dict__.get("_tandem_closed"))


def guard_handles(cls: Any) -> None:
    """Makes every call on an instance of generated class ``cls`` (each clones its handle first)
    raise :func:`closed_error` once the instance is released."""
    clone = getattr(cls, "_uniffi_clone_handle", None)
    if clone is None:  # pragma: no cover - another generator: nothing to guard
        return

    def _uniffi_clone_handle(self: Any) -> Any:
        with _handle_lock:
            if self.__dict__.get("_tandem_closed"):
                raise closed_error()
            return clone(self)

    cls._uniffi_clone_handle = _uniffi_clone_handle
