"""Run by test_exit.py: syncs, awaits, and exits at once with every kind of call from Tandem's
threads into Python live or in flight (issue 14: "FATAL: exception not rethrown", exit 134).

    python3 exit_script.py URL CA TOKEN DIR

Live at exit: results listeners (the store's notifier thread), state,
progress and error listeners (session notifier thread), a token provider, a log listener at
TRACE (every thread that logs, the sync runtime's included), a listener still inside a call
(it sleeps), and awaits left pending on sessions whose server never answers (on daemon
threads; one a flexible sync session's wait for its subscriptions). Prints ``ok`` last.
"""

import asyncio
import sys
import threading
import time

import tandem

url, ca, token, directory = sys.argv[1:5]


def prop(name: str, ptype: tandem.PropertyType) -> tandem.PropertySpec:
    return tandem.PropertySpec(name=name, property_type=ptype, nullable=False,
                               collection=tandem.Collection.SINGLE, link_target=None)


CLASSES = [tandem.ClassSpec(name="Task", primary_key="_id",
                            properties=[prop("_id", tandem.PropertyType.INT),
                                        prop("title", tandem.PropertyType.STRING)])]


class Quiet(tandem.ResultsListener, tandem.SyncStateListener, tandem.ProgressListener,
            tandem.ErrorListener, tandem.LogListener):
    def on_change(self, change: object) -> None:
        pass

    def on_state(self, state: object) -> None:
        pass

    def on_progress(self, progress: object) -> None:
        pass

    def on_error(self, code: int, message: str, will_retry: bool) -> None:
        pass

    def on_log(self, level: object, target: str, message: str) -> None:
        pass


class Slow(tandem.ResultsListener):
    """Still inside its call when the interpreter starts to exit."""

    def on_change(self, change: object) -> None:
        time.sleep(0.05)


class Tokens(tandem.TokenProvider):
    def fetch_token(self) -> str:
        return token


def options(server_url: str, tls_ca: "str | None") -> tandem.SyncOptions:
    return tandem.SyncOptions(url=server_url, path="/todos", token="", ca_file=tls_ca,
                              allow_insecure=False,
                              client_reset=tandem.ClientResetMode.RECOVER_OR_DISCARD)


quiet = Quiet()
tandem.set_log_listener(quiet, tandem.LogLevel.TRACE)
db = tandem.Database.open(f"{directory}/db.sqlite", CLASSES)
results = db.query("Task", "TRUEPREDICATE", [])
handles = [results.observe(quiet), results.observe(Slow())]
session = db.sync(options(url, ca), Tokens())
handles += [session.observe_state(quiet), session.observe_progress(quiet),
            session.observe_errors(quiet)]

# Awaits that never complete, left pending at exit on daemon threads (as an app's background
# loop would leave them).
nowhere = tandem.Database.open(f"{directory}/nowhere.sqlite", CLASSES)
stuck = nowhere.sync(options("wss://localhost:9/", None), None)
nowhere.write([tandem.WriteOp.CREATE(class_name="Task", key=tandem.Key.INT(1),
                                     values={"title": tandem.Value.STRING("never uploaded")})])
for wait in (stuck.wait_for_upload, stuck.wait_for_download):
    threading.Thread(target=lambda w=wait: asyncio.run(w(None)), daemon=True).start()
# And a flexible sync session's wait for a subscription set the server never bootstraps.
flexible = tandem.Database.open(f"{directory}/flexible.sqlite", CLASSES)
flexible.update_subscriptions([tandem.SubscriptionChange.ADD(name=None, class_name="Task",
                                                             query="TRUEPREDICATE", args=[])])
stuck_flexible = flexible.sync(tandem.SyncOptions(
    url="wss://localhost:9/", path="/flx", token="", ca_file=None, allow_insecure=False,
    client_reset=tandem.ClientResetMode.RECOVER_OR_DISCARD, flexible=True), None)
threading.Thread(target=lambda: asyncio.run(stuck_flexible.wait_for_subscriptions()),
                 daemon=True).start()


async def main() -> None:
    with db.write() as tx:
        tx.create("Task", tandem.Key.INT(time.time_ns()), {"title": tandem.Value.STRING("x")})
    await session.wait_for_upload(30_000)
    await session.wait_for_download(30_000)
    # An await cancelled half-way (its blocking call is cancelled too).
    try:
        await asyncio.wait_for(stuck.wait_for_upload(None), 0.01)
    except asyncio.TimeoutError:
        pass
    # A last write: the listeners are being called as the interpreter exits.
    db.write([tandem.WriteOp.CREATE(class_name="Task", key=tandem.Key.INT(time.time_ns()),
                                    values={"title": tandem.Value.STRING("y")})])


asyncio.run(main())
print("ok", flush=True)
# No stop(), no cancel(): the interpreter finalizes with everything live.
