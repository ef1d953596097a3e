"""Two Python clients syncing through a real tandem-server (TLS, a real token)."""

import asyncio

import pytest

import tandem
from conftest import eventually, make_token, options, task_classes


def test_two_clients_sync_and_wait(server, tmp_path):
    a = tandem.Database.open(str(tmp_path / "a.sqlite"), task_classes())
    b = tandem.Database.open(str(tmp_path / "b.sqlite"), task_classes())
    sa = a.sync(options(server), None)
    sb = b.sync(options(server), None)
    with a.write() as tx:
        for i in range(20):
            tx.create("Task", tandem.Key.INT(i), {"title": tandem.Value.STRING(f"from a {i}")})

    async def waits():
        await sa.wait_for_upload(30_000)
        await sb.wait_for_download(30_000)

    asyncio.run(waits())
    # No polling: the waits are the guarantee.
    assert b.query("Task", "TRUEPREDICATE", []).count() == 20
    assert sa.state() == tandem.SyncState.CONNECTED()
    sa.stop()
    sb.stop()


def test_open_synced_downloads_the_state(server, tmp_path):
    a = tandem.Database.open(str(tmp_path / "a.sqlite"), task_classes())
    sa = a.sync(options(server), None)
    with a.write() as tx:
        tx.create("Task", tandem.Key.INT(7), {"title": tandem.Value.STRING("seven")})
    asyncio.run(sa.wait_for_upload(30_000))
    synced = asyncio.run(tandem.open_synced(str(tmp_path / "b.sqlite"), task_classes(),
                                            options(server), None, 30_000))
    assert synced.database.object("Task", tandem.Key.INT(7)) is not None


def test_open_synced_database_writes_both_ways(server, tmp_path):
    from untyped_fixture import open_synced_and_write

    synced = asyncio.run(open_synced_and_write(str(tmp_path / "a.sqlite"), task_classes(),
                                               options(server)))
    b = tandem.Database.open(str(tmp_path / "b.sqlite"), task_classes())
    sb = b.sync(options(server), None)
    asyncio.run(sb.wait_for_download(30_000))
    assert b.object("Task", tandem.Key.INT(11)) is not None
    synced.session.stop()
    sb.stop()


class Tokens(tandem.TokenProvider):
    def __init__(self):
        self.calls = 0

    def fetch_token(self):
        self.calls += 1
        return make_token(["/todos"])


class Errors(tandem.ErrorListener):
    def __init__(self):
        self.seen = []

    def on_error(self, code, message, will_retry):
        self.seen.append((code, will_retry))


def test_token_provider_and_error_events(server, tmp_path):
    a = tandem.Database.open(str(tmp_path / "a.sqlite"), task_classes())
    tokens = Tokens()
    session = a.sync(options(server, token=""), tokens)
    eventually(lambda: session.state() == tandem.SyncState.CONNECTED())
    assert tokens.calls >= 1
    session.stop()
    b = tandem.Database.open(str(tmp_path / "b.sqlite"), task_classes())
    errors = Errors()
    bad = b.sync(options(server, token=make_token(["/elsewhere"])), None)
    handle = bad.observe_errors(errors)
    eventually(lambda: isinstance(bad.state(), tandem.SyncState.ERROR))
    eventually(lambda: (206, False) in errors.seen)
    handle.cancel()


class FailingOnce(tandem.TokenProvider):
    """Fails its first call, then hands out tokens."""

    def __init__(self):
        self.calls = 0

    def fetch_token(self):
        self.calls += 1
        if self.calls == 1:
            raise tandem.CallbackError.Failed("auth backend down")
        return make_token(["/todos"])


class Messages(tandem.ErrorListener):
    def __init__(self):
        self.seen = []

    def on_error(self, code, message, will_retry):
        self.seen.append((code, message, will_retry))


def test_the_error_listener_given_at_the_start_hears_the_first_error(server, tmp_path):
    # The session's first event is the provider's failure, before any connection: a listener
    # registered with observe_errors after sync() returns can miss it, this one cannot.
    a = tandem.Database.open(str(tmp_path / "a.sqlite"), task_classes())
    errors = Messages()
    session = a.sync(options(server, token=""), FailingOnce(), errors)
    eventually(lambda: session.state() == tandem.SyncState.CONNECTED())
    eventually(lambda: len(errors.seen) > 0)  # delivered on the notifier thread
    session.stop()
    code, message, will_retry = errors.seen[0]
    assert code == 0 and will_retry
    assert "auth backend down" in message


def test_timeouts_and_bad_options_are_typed_errors(tmp_path):
    a = tandem.Database.open(str(tmp_path / "a.sqlite"), task_classes())
    with pytest.raises(tandem.TandemError.Sync):
        a.sync(tandem.SyncOptions(url="http://nowhere", path="/x", token="t", ca_file=None,
                                  allow_insecure=False, client_reset=tandem.ClientResetMode.MANUAL), None)
    opts = tandem.SyncOptions(url="wss://localhost:9/", path="/x", token=make_token(["/x"]),
                              ca_file=None, allow_insecure=False,
                              client_reset=tandem.ClientResetMode.MANUAL)
    session = a.sync(opts, None)
    with a.write() as tx:
        tx.create("Task", tandem.Key.INT(1), {"title": tandem.Value.STRING("x")})
    with pytest.raises(tandem.TandemError.Timeout):
        asyncio.run(session.wait_for_upload(200))
    session.stop()


def test_dropping_the_last_references_closes_cleanly(server, tmp_path):
    import gc

    path = str(tmp_path / "a.sqlite")
    a = tandem.Database.open(path, task_classes())
    session = a.sync(options(server), None)
    with a.write() as tx:
        tx.create("Task", tandem.Key.INT(1), {"title": tandem.Value.STRING("kept")})
    asyncio.run(session.wait_for_upload(30_000))
    del session, a
    gc.collect()
    again = tandem.Database.open(path, task_classes())
    assert again.object("Task", tandem.Key.INT(1)) is not None
    resumed = again.sync(options(server), None)
    with again.write() as tx:
        tx.create("Task", tandem.Key.INT(2), {"title": tandem.Value.STRING("after reopen")})
    asyncio.run(resumed.wait_for_upload(30_000))
    resumed.stop()


def test_two_typed_clients_sync(server, tmp_path):
    from models_fixture import MODELS, Address, Dog, Person

    a = tandem.open(tmp_path / "a.sqlite", MODELS)
    b = tandem.open(tmp_path / "b.sqlite", MODELS)
    sa = a.sync(options(server, path="/typed", token=make_token(["/typed"])))
    sb = b.sync(options(server, path="/typed", token=make_token(["/typed"])))
    rex = Dog(id=tandem.ObjectId(), name="Rex")
    ada = Person(id=1, name="Ada", dog=rex, address=Address(street="1 Main St"), tags=["x", "y"])
    seen = []
    handle = b.objects(Person).observe(seen.append)
    with a.write() as tx:
        tx.add(rex)
        tx.add(ada)

    async def waits():
        await sa.wait_for_upload(30_000)
        await sb.wait_for_download(30_000)

    asyncio.run(waits())
    assert b.get(Person, 1) == ada
    eventually(lambda: any(c.objects == [ada] for c in seen))  # typed change from the server
    with b.write() as tx:
        tx.set(ada, name="Ada L.")
        tx.list_insert(ada, "tags", 0, "from b")

    async def back():
        await sb.wait_for_upload(30_000)
        await sa.wait_for_download(30_000)

    asyncio.run(back())
    got = a.get(Person, 1)
    assert got.name == "Ada L." and got.tags == ["from b", "x", "y"]
    handle.cancel()
    sa.stop()
    sb.stop()
