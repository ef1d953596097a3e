"""Flexible sync through a real tandem-server (TLS, real tokens, an app with `--app-id`):
subscriptions decide what a file downloads; a set the server cannot evaluate fails alone; the
server's `--flx-rules` revert forbidden writes (compensating writes)."""

import asyncio
import json
import threading

import pytest

import tandem
from conftest import FLX_APP, eventually, flx_options, options, run_server
from flexible_fixture import (
    MODELS,
    Project,
    Todo,
    ids,
    rejected,
    subscribe_all,
    subscribe_big,
    summary,
    untyped_subscribe,
    untyped_wait_blocking,
    wait,
    wait_untyped,
)

S = tandem.SubscriptionState
WAIT = 30_000


class Errors(tandem.ErrorListener):
    def __init__(self):
        self.seen = []
        self.lock = threading.Lock()

    def on_error(self, code, message, will_retry):
        with self.lock:
            self.seen.append((code, message, will_retry))

    def codes(self):
        with self.lock:
            return [(code, retry) for code, _, retry in self.seen]

    def messages(self, code):
        with self.lock:
            return [m for c, m, _ in self.seen if c == code]


def writer(server, tmp_path, user="writer"):
    """A file subscribed to every todo and project, syncing as `user`."""
    db = tandem.open(tmp_path / f"{user}.sqlite", MODELS)
    subs = subscribe_all(db)
    session = db.sync(flx_options(server, user))
    assert asyncio.run(wait(subs)) is S.COMPLETE
    return db, session


def test_subscriptions_choose_what_a_file_downloads(flx_server, tmp_path):
    w, ws = writer(flx_server, tmp_path)
    with w.write() as tx:
        for i in range(1, 11):
            tx.add(Todo(id=i, title=f"todo {i}", done=i % 2 == 0, count=i))
    asyncio.run(ws.wait_for_upload(WAIT))

    # Before any session, the file's first set is pending and the active one is the empty 0.
    r = tandem.open(tmp_path / "reader.sqlite", MODELS)
    assert (r.subscriptions.version, r.subscriptions.state, len(r.subscriptions)) == (0, S.COMPLETE, 0)
    first = subscribe_big(r, 5)
    assert (first.version, first.state, first.error) == (1, S.PENDING, None)
    assert summary(first) == [("big", "Todo", "count > 5")]
    assert first.find("big").model is Todo and first.find("nope") is None
    assert r.active_subscriptions.version == 0
    assert r.subscriptions.state is S.PENDING

    rs = r.sync(flx_options(flx_server, "reader"))
    done = asyncio.run(first.wait_for_synchronization(WAIT))
    assert (done.version, done.state) == (1, S.COMPLETE)
    assert ids(r) == [6, 7, 8, 9, 10]
    assert r.get(Todo, 7) == Todo(id=7, title="todo 7", done=False, count=7)
    assert r.active_subscriptions.version == 1

    # The same name, a narrower query: the subscription is replaced and objects leave. The
    # untyped session wait (no arguments: the latest set, as long as it takes) returns it.
    with r.subscriptions.update() as subs:
        subs.add(Todo, "count > $0", 8, name="big")
    assert summary(r.subscriptions) == [("big", "Todo", "count > 8")]
    latest = asyncio.run(wait_untyped(rs))
    assert latest.version == 2 and latest.state == tandem.SubscriptionSetState.COMPLETE()
    assert ids(r) == [9, 10]
    # The older set was overtaken: waiting for it now reports it superseded.
    assert asyncio.run(first.wait_for_synchronization(WAIT)).state is S.SUPERSEDED
    assert r.active_subscriptions.version == 2

    # A second named subscription with a bool argument: objects enter; an unnamed one is
    # subscribed once however often it is added.
    third = r.update_subscriptions(
        lambda subs: subs.add(Todo, "done == $0 AND count < $1", True, 5, name="even")
        .add(Todo, "_id == 1")
        .add(Todo, "_id == 1")
    )
    assert summary(third) == [
        ("big", "Todo", "count > 8"),
        ("even", "Todo", "done == true AND count < 5"),
        (None, "Todo", "_id == 1"),
    ]
    assert asyncio.run(wait(third)) is S.COMPLETE
    assert ids(r) == [1, 2, 4, 9, 10]

    # Remove by name: its objects leave, the others stay.
    fourth = r.update_subscriptions(lambda subs: subs.remove("big"))
    assert [s.name for s in fourth] == ["even", None]
    assert asyncio.run(wait(fourth)) is S.COMPLETE
    assert ids(r) == [1, 2, 4]

    # Another client's writes move objects into the view and out of it.
    with w.write() as tx:
        tx.set((Todo, 3), done=True)  # done, count 3: matches "even" now
        tx.set((Todo, 4), count=50)  # no longer below 5
    asyncio.run(ws.wait_for_upload(WAIT))
    asyncio.run(rs.wait_for_download(WAIT))
    assert ids(r) == [1, 2, 3]

    # The reader's own writes reach the writer.
    with r.write() as tx:
        tx.set((Todo, 1), title="edited by the reader")
    asyncio.run(rs.wait_for_upload(WAIT))
    asyncio.run(ws.wait_for_download(WAIT))
    assert w.get(Todo, 1).title == "edited by the reader"

    # Remove every subscription on the class: the file keeps nothing of it.
    fifth = r.update_subscriptions(lambda subs: subs.remove_all(Todo))
    assert len(fifth) == 0
    assert asyncio.run(wait(fifth)) is S.COMPLETE
    assert ids(r) == []
    assert len(w.objects(Todo)) == 10, "unsubscribing deletes nothing on the server"
    rs.stop()
    ws.stop()


def test_a_failed_update_commits_nothing_and_a_discarded_block_neither(tmp_path):
    db = tandem.open(tmp_path / "a.sqlite", MODELS)
    subscribe_big(db, 1)
    for bad in ("count > 1 SORT(count ASC)", "count > 1 LIMIT(2)", "nope == 1"):
        with pytest.raises(tandem.TandemError.InvalidArgument):
            db.update_subscriptions(lambda subs: subs.add(Todo, "_id == 1").add(Todo, bad))
    with pytest.raises(tandem.TandemError.InvalidArgument):
        db.update_subscriptions(lambda subs: subs.add("Nope"))
    with pytest.raises(tandem.TandemError.InvalidArgument):  # a link argument
        db.update_subscriptions(lambda subs: subs.add(Todo, "project == $0", Project(id=1)))
    with pytest.raises(TypeError):  # no query argument type: refused before anything is sent
        db.update_subscriptions(lambda subs: subs.add(Todo, "count == $0", object()))
    with pytest.raises(TypeError):  # an embedded or unknown class
        db.update_subscriptions(lambda subs: subs.add(dict))
    with pytest.raises(RuntimeError):
        with db.subscriptions.update() as subs:
            subs.remove_all()
            raise RuntimeError("discarded")
    assert (db.subscriptions.version, summary(db.subscriptions)) == (1, [("big", "Todo", "count > 1")])
    # A change that changes nothing makes no new version.
    assert db.update_subscriptions(lambda subs: subs.add(Todo, "count > $0", 1, name="big")).version == 1
    # No session started through this database: the typed wait says so.
    with pytest.raises(RuntimeError, match="no sync session"):
        asyncio.run(db.subscriptions.wait_for_synchronization(1_000))


def test_untyped_subscriptions_and_the_blocking_wait(flx_server, tmp_path):
    w, ws = writer(flx_server, tmp_path)
    with w.write() as tx:
        for i in range(1, 6):
            tx.add(Todo(id=i, title=f"todo {i}", count=i))
    asyncio.run(ws.wait_for_upload(WAIT))

    raw = tandem.Database.open(str(tmp_path / "raw.sqlite"), tandem.schema(MODELS))
    first = untyped_subscribe(raw, "count >= $0", 4)
    assert first.version == 1 and first.state == tandem.SubscriptionSetState.PENDING()
    assert [(s.name, s.class_name, s.query) for s in first.subscriptions] == [("q", "Todo", "count >= 4")]
    session = raw.sync(flx_options(flx_server, "raw"), None)
    done = untyped_wait_blocking(session, first.version)
    assert done.state == tandem.SubscriptionSetState.COMPLETE()
    assert raw.active_subscriptions() == done
    assert raw.query("Todo", "TRUEPREDICATE", []).count() == 2

    # A cancelled token ends a blocking wait (Stopped; normally cancelled from another thread).
    token = tandem.CancelToken()
    untyped_subscribe(raw, "count == $0", 99)  # pending until its bootstrap arrives
    token.cancel()
    with pytest.raises(tandem.TandemError.Stopped):
        session.wait_for_subscriptions_blocking(None, WAIT, token)

    # A session that is not flexible cannot wait for subscriptions.
    plain = tandem.Database.open(str(tmp_path / "plain.sqlite"), tandem.schema(MODELS))
    plain_session = plain.sync(options(flx_server, path="/todos"), None)
    with pytest.raises(tandem.TandemError.Sync):
        plain_session.wait_for_subscriptions_blocking(None, 1_000)
    with pytest.raises(tandem.TandemError.Sync):
        asyncio.run(plain_session.wait_for_subscriptions())
    plain_session.stop()
    session.stop()
    ws.stop()


def test_a_set_the_server_cannot_evaluate_fails_alone(flx_server, tmp_path):
    w, ws = writer(flx_server, tmp_path)
    with w.write() as tx:
        x = Project(id=1, name="x")
        tx.add(x)
        tx.add(Todo(id=1, title="one", count=1, project=x))
        tx.add(Todo(id=2, title="two", count=2))
    asyncio.run(ws.wait_for_upload(WAIT))

    r = tandem.open(tmp_path / "reader.sqlite", MODELS)
    one = r.update_subscriptions(lambda subs: subs.add(Todo, "count == 1", name="one"))
    rs = r.sync(flx_options(flx_server, "reader"))
    errors = Errors()
    handle = rs.observe_errors(errors)
    assert asyncio.run(wait(one)) is S.COMPLETE
    assert ids(r) == [1]

    # The local compiler takes a link path; the server does not evaluate one (QUERY_ERROR).
    bad = r.update_subscriptions(lambda subs: subs.add(Todo, "project.name == $0", "x", name="linked"))
    assert bad.state is S.PENDING
    with pytest.raises(tandem.TandemError.Sync) as refused:
        asyncio.run(bad.wait_for_synchronization(WAIT))
    assert "refused by the server" in refused.value.message
    latest = r.subscriptions
    assert (latest.version, latest.state) == (bad.version, S.ERROR)
    assert "link" in latest.error, latest.error
    assert r.active_subscriptions.version == one.version
    assert ids(r) == [1], "the active set still holds"
    eventually(lambda: (226, True) in errors.codes())
    # The untyped wait for that version raises the same way.
    with pytest.raises(tandem.TandemError.Sync):
        rs.wait_for_subscriptions_blocking(bad.version, WAIT)

    # The session goes on: a later valid set completes and steady state flows.
    good = r.update_subscriptions(lambda subs: subs.remove("linked").add(Todo, "count == 2", name="two"))
    assert summary(good) == [("one", "Todo", "count == 1"), ("two", "Todo", "count == 2")]
    assert asyncio.run(wait(good)) is S.COMPLETE
    assert ids(r) == [1, 2]
    with w.write() as tx:
        tx.add(Todo(id=3, title="three", count=2))
    asyncio.run(ws.wait_for_upload(WAIT))
    asyncio.run(rs.wait_for_download(WAIT))
    assert ids(r) == [1, 2, 3]
    assert rs.state() == tandem.SyncState.CONNECTED()
    handle.cancel()
    rs.stop()
    ws.stop()


def test_the_await_resumes_on_the_loop_and_cancelling_it_cancels_the_wait(flx_server, tmp_path):
    r = tandem.open(tmp_path / "reader.sqlite", MODELS)
    subs = subscribe_big(r, 0)
    session = r.sync(flx_options(flx_server, "reader"))

    async def resumed_on():
        done = await session.wait_for_subscriptions(subs.version, WAIT)
        assert done.version == subs.version
        return threading.current_thread()

    assert asyncio.run(resumed_on()) is threading.main_thread()
    session.stop()

    # A flexible session whose server never answers: the await is cancelled, and so is the
    # blocking call under it (its thread ends).
    stuck_db = tandem.open(tmp_path / "stuck.sqlite", MODELS)
    subscribe_big(stuck_db, 0)
    stuck = stuck_db.sync(tandem.SyncOptions(
        url="wss://localhost:9/", path="/flx", token="t", ca_file=None, allow_insecure=False,
        client_reset=tandem.ClientResetMode.RECOVER_OR_DISCARD, flexible=True))

    async def cancelled():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(stuck.wait_for_subscriptions(), 0.05)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(stuck_db.subscriptions.wait_for_synchronization(), 0.05)

    asyncio.run(cancelled())
    eventually(lambda: not [t for t in threading.enumerate() if t.name == "tandem-wait"], 10)
    with pytest.raises(tandem.TandemError.Timeout):
        asyncio.run(stuck.wait_for_subscriptions(None, 100))
    stuck.stop()
    with pytest.raises(tandem.TandemError.Stopped):
        stuck.wait_for_subscriptions_blocking(None, WAIT)


RULES = {
    "default": {"read": True, "write": True},
    "classes": {"Todo": {"read": True, "write": "owner == %%user.id"}},
}


def test_a_forbidden_write_is_reverted_with_a_compensating_write(tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    with run_server(tmp_path, "--app-id", FLX_APP, "--flx-rules", str(rules)) as server:
        bob, sb = writer(server, tmp_path, "bob")
        with bob.write() as tx:
            tx.add(Todo(id=1, title="bob's", owner="bob"))
        asyncio.run(sb.wait_for_upload(WAIT))

        alice, sa = writer(server, tmp_path, "alice")
        errors = Errors()
        handle = sa.observe_errors(errors)
        asyncio.run(sa.wait_for_download(WAIT))
        assert alice.get(Todo, 1) == Todo(id=1, title="bob's", owner="bob")

        # Alice may read bob's todo, not write it, nor create one owned by bob; her own stands.
        with alice.write() as tx:
            tx.set((Todo, 1), title="alice was here")
            tx.add(Todo(id=2, title="for bob", owner="bob"))
            tx.add(Todo(id=3, title="alice's", owner="alice"))
        assert alice.get(Todo, 1).title == "alice was here"  # locally, until the server answers
        asyncio.run(sa.wait_for_upload(WAIT))
        asyncio.run(sa.wait_for_download(WAIT))
        # The revert arrives as a normal download.
        eventually(lambda: ids(alice) == [1, 3] and alice.get(Todo, 1).title == "bob's")
        eventually(lambda: any(code == 231 for code, _ in errors.codes()))
        assert all(retry for code, retry in errors.codes() if code == 231)
        messages = errors.messages(231)
        assert all("rejectedUpdates" in m for m in messages), messages
        reverted = {
            (cls, pk) for m in messages for cls, pk, _ in rejected(tandem.COMPENSATING_WRITE, m)
        }
        assert reverted == {("Todo", 1), ("Todo", 2)}, messages
        assert all(reason for m in messages for _, _, reason in rejected(231, m))
        assert rejected(226, messages[0]) == []  # only code 231 is a compensating write
        assert sa.state() == tandem.SyncState.CONNECTED(), "a compensating write stops nothing"

        # Bob never sees the forbidden writes; he gets alice's own todo.
        asyncio.run(sb.wait_for_download(WAIT))
        eventually(lambda: ids(bob) == [1, 3])
        assert bob.get(Todo, 1).title == "bob's"
        assert bob.get(Todo, 3).owner == "alice"
        handle.cancel()
        sa.stop()
        sb.stop()


def test_compensating_writes_decode_every_primary_key_type():
    import base64
    import uuid

    oid, uid = tandem.ObjectId(), uuid.uuid4()
    keys = [
        bytes([1, 0xAC, 0x02]),  # Int 300 (Realm's sign-bit varint: AC 02)
        bytes([1, 0xC0, 0x40]),  # Int -65 (C0 40)
        bytes([3, 6]) + "héllo".encode(),  # String: length, UTF-8
        bytes([10]) + oid.binary,  # ObjectId
        bytes([11]) + uid.bytes,  # UUID
        bytes([0]),  # Null
    ]
    body = {"rejectedUpdates": [{"table": "T", "pk": base64.b64encode(k).decode(), "reason": "r"}
                                for k in keys]}
    message = "compensating write: " + json.dumps(body)
    assert [w.primary_key for w in tandem.compensating_writes(231, message)] == [
        300, -65, "héllo", oid, uid, None]
    assert tandem.compensating_writes(231, message)[0] == tandem.CompensatingWrite("T", 300, "r")
    assert tandem.compensating_writes(226, message) == []
    assert tandem.compensating_writes(231, "compensating write: not json {") == []
