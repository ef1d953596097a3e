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

import tandem


def classes():
    def prop(name, ptype):
        return tandem.PropertySpec(name=name, property_type=ptype, nullable=False,
                                   collection=tandem.Collection.SINGLE, link_target=None)
    return [tandem.ClassSpec(name="Todo", primary_key="_id", properties=[
        prop("_id", tandem.PropertyType.INT),
        prop("title", tandem.PropertyType.STRING),
        prop("done", tandem.PropertyType.BOOL),
    ])]


def show(db):
    for key in db.query("Todo", "TRUEPREDICATE SORT(_id ASC)", []).keys():
        todo = db.object("Todo", key)
        mark = "x" if todo["done"].value.value else " "
        print(f"[{mark}] {key.value}: {todo['title'].value.value}")


class Printer(tandem.ResultsListener):
    def __init__(self, db):
        self.db = db

    def on_change(self, change):
        print(f"-- changed: {len(change.insertions)} new, {len(change.deletions)} gone, "
              f"{len(change.modifications)} modified")
        show(self.db)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--ca")
    parser.add_argument("--path", default="/todos")
    parser.add_argument("command", choices=["add", "done", "list", "watch"])
    parser.add_argument("arg", nargs="?")
    args = parser.parse_args()

    db = tandem.Database.open(args.db, classes())
    session = db.sync(tandem.SyncOptions(url=args.url, path=args.path, token=args.token,
                                         ca_file=args.ca, allow_insecure=False,
                                         client_reset=tandem.ClientResetMode.RECOVER_OR_DISCARD),
                      None)
    asyncio.run(session.wait_for_download(30_000))
    if args.command == "add":
        next_id = int(time.time() * 1000)  # unique enough per device; equal keys would merge
        with db.write() as tx:
            tx.create("Todo", tandem.Key.INT(next_id), {"title": tandem.Value.STRING(args.arg),
                                                         "done": tandem.Value.BOOL(False)})
    elif args.command == "done":
        with db.write() as tx:
            tx.set("Todo", tandem.Key.INT(int(args.arg)), "done", tandem.Value.BOOL(True))
    if args.command == "watch":
        show(db)
        handle = db.query("Todo", "TRUEPREDICATE SORT(_id ASC)", []).observe(Printer(db))
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            handle.cancel()
    else:
        asyncio.run(session.wait_for_upload(30_000))
        show(db)
    session.stop()


if __name__ == "__main__":
    main()
