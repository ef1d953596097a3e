"""A small todo app on Tandem: add, complete, list, and watch live updates from other devices.

    python3 examples/python/todo.py --db alice.sqlite --url wss://localhost:7800/ \
        --token "$(tandem-server --jwt-secret-file secret --issue-token /todos)" --ca cert.pem add "buy milk"
    ... list | done 1 | watch

Each command opens the database, syncs with the server, waits until the change is uploaded (or
the server's news is downloaded), prints, and exits; `watch` keeps printing changes.
"""

import argparse
import asyncio
import time
from typing import Annotated

import tandem


class Todo(tandem.Model):
    # "_id", as the Kotlin, Swift and Rust todo apps name it (examples/interop.sh).
    id: Annotated[int, tandem.PrimaryKey, tandem.Persisted("_id")]
    title: str
    done: bool = False


def show(todos: "tandem.LiveResults[Todo]") -> None:
    for todo in todos:
        print(f"[{'x' if todo.done else ' '}] {todo.id}: {todo.title}")


def main() -> None:
    parser = argparse.ArgumentParser(description="A small todo app on Tandem")
    parser.add_argument("--db", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--ca")
    parser.add_argument("--path", default="/todos")
    parser.add_argument("command", choices=["add", "done", "list", "watch"])
    parser.add_argument("arg", nargs="?")
    args = parser.parse_args()

    db = tandem.open(args.db, [Todo])
    todos = db.objects(Todo, "TRUEPREDICATE SORT(_id ASC)")
    session = db.sync(tandem.SyncOptions(url=args.url, path=args.path, token=args.token,
                                         ca_file=args.ca, allow_insecure=False,
                                         client_reset=tandem.ClientResetMode.RECOVER_OR_DISCARD),
                      None)
    asyncio.run(session.wait_for_download(30_000))
    if args.command == "add":
        next_id = int(time.time() * 1000)  # unique enough per device; equal keys would merge
        with db.write() as tx:
            tx.add(Todo(id=next_id, title=args.arg))
    elif args.command == "done":
        with db.write() as tx:
            tx.set((Todo, int(args.arg)), done=True)
    if args.command == "watch":
        async def watch() -> None:
            async for change in todos.changes():  # first the todos as they are, then changes
                if not change.initial:
                    print(f"-- changed: {len(change.insertions)} new, {len(change.deletions)} "
                          f"gone, {len(change.modifications)} modified")
                for todo in change.objects:
                    print(f"[{'x' if todo.done else ' '}] {todo.id}: {todo.title}")

        try:
            asyncio.run(watch())
        except KeyboardInterrupt:
            pass
    else:
        asyncio.run(session.wait_for_upload(30_000))
        show(todos)
    session.stop()


if __name__ == "__main__":
    main()
