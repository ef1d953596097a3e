"""examples/python/todo.py (the typed API) against a real tandem-server: two devices."""

import re
import subprocess
import sys

from conftest import REPO, make_token


def todo(server, db, *args):
    cmd = [sys.executable, str(REPO / "examples" / "python" / "todo.py"), "--db", str(db),
           "--url", server["url"], "--token", make_token(["/todos"]), "--ca", server["ca"], *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120).stdout


def test_todo_example_add_done_list_on_two_devices(server, tmp_path):
    out = todo(server, tmp_path / "alice.sqlite", "add", "buy milk")
    match = re.fullmatch(r"\[ \] (\d+): buy milk\n", out)
    assert match, out
    key = match.group(1)
    assert todo(server, tmp_path / "bob.sqlite", "done", key) == f"[x] {key}: buy milk\n"
    assert todo(server, tmp_path / "alice.sqlite", "list") == f"[x] {key}: buy milk\n"
