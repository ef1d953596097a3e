"""Interpreter exit with Tandem's threads busy (issue 14), and the awaitables behind it.

Python 3.11 ends a foreign thread that asks for the GIL during interpreter finalization with
pthread_exit; unwinding through Rust's frames aborts the process ("FATAL: exception not
rethrown", exit 134). The package makes sure no Tandem thread calls into Python by then: its
awaitables run blocking calls on Python threads, and an atexit hook closes Tandem's calls into
Python (tandem.close_callbacks). Before, every exit_script.py run below aborted (25 of 25 on
an idle 2-core machine; the todo example's wait_for_upload alone in 8 of 300 runs under load).
"""

import asyncio
import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest

import tandem
from conftest import make_token, task_classes

SCRIPT = pathlib.Path(__file__).with_name("exit_script.py")
RUNS = int(os.environ.get("TANDEM_EXIT_RUNS", "25"))


def test_exit_with_listeners_waits_and_log_calls_in_flight_never_aborts(server, tmp_path):
    failures = []
    for run in range(RUNS):
        directory = tmp_path / f"run{run}"
        directory.mkdir()
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), server["url"], server["ca"], make_token(["/todos"]),
             str(directory)],
            capture_output=True, text=True, timeout=120,
        )
        if proc.returncode != 0 or proc.stdout != "ok\n":
            failures.append(f"run {run}: exit {proc.returncode}, stdout {proc.stdout!r}, "
                            f"stderr {proc.stderr[-500:]!r}")
    assert not failures, f"{len(failures)} of {RUNS} runs failed:\n" + "\n".join(failures)


def unreachable():
    return tandem.SyncOptions(url="wss://localhost:9/", path="/x", token=make_token(["/x"]),
                              ca_file=None, allow_insecure=False,
                              client_reset=tandem.ClientResetMode.MANUAL)


def waits_running():
    return [t for t in threading.enumerate() if t.name == "tandem-wait"]


def test_cancelling_an_await_cancels_the_blocking_call(tmp_path):
    a = tandem.Database.open(str(tmp_path / "a.sqlite"), task_classes())
    session = a.sync(unreachable(), None)
    with a.write() as tx:
        tx.create("Task", tandem.Key.INT(1), {"title": tandem.Value.STRING("x")})

    async def cancelled(call):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(call, 0.05)

    asyncio.run(cancelled(session.wait_for_upload(None)))
    asyncio.run(cancelled(session.wait_for_download(None)))
    asyncio.run(cancelled(tandem.open_synced(str(tmp_path / "b.sqlite"), task_classes(),
                                             unreachable(), None, None)))
    deadline = time.time() + 10
    while waits_running():
        assert time.time() < deadline, "a cancelled call kept waiting"
        time.sleep(0.01)
    session.stop()


def test_awaits_run_off_tandems_threads_and_keep_their_errors(server, tmp_path):
    from conftest import options

    a = tandem.Database.open(str(tmp_path / "a.sqlite"), task_classes())
    session = a.sync(options(server), None)
    resumed_on = []

    async def waits():
        with a.write() as tx:
            tx.create("Task", tandem.Key.INT(1), {"title": tandem.Value.STRING("x")})
        await session.wait_for_upload(30_000)
        resumed_on.append(threading.current_thread())
        outcome = await session.transact(
            [tandem.WriteOp.CREATE(class_name="Task", key=tandem.Key.INT(2),
                                   values={"title": tandem.Value.STRING("cas")})], 30_000)
        assert isinstance(outcome, tandem.TransactOutcome.ACCEPTED)
        with pytest.raises(tandem.TandemError.InvalidArgument):  # an operation's own error
            await session.transact(
                [tandem.WriteOp.CREATE(class_name="Nope", key=tandem.Key.INT(3), values={})],
                30_000)
        synced = await tandem.open_synced(str(tmp_path / "b.sqlite"), task_classes(),
                                          options(server), None, 30_000)
        assert synced.database.object("Task", tandem.Key.INT(2)) is not None
        synced.session.stop()

    asyncio.run(waits())
    assert resumed_on == [threading.main_thread()]  # resumed on the loop's thread
    c = tandem.Database.open(str(tmp_path / "c.sqlite"), task_classes())
    stuck = c.sync(unreachable(), None)
    with c.write() as tx:
        tx.create("Task", tandem.Key.INT(1), {"title": tandem.Value.STRING("x")})
    with pytest.raises(tandem.TandemError.Timeout):
        asyncio.run(stuck.wait_for_upload(100))
    stuck.stop()
    session.stop()

