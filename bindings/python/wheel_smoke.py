"""Run by test.sh in a fresh virtual environment where only the built wheel is installed: the
package imports from that environment (not from the source tree) and its typed layer opens a
database, writes and reads."""

import os
import sys
import tempfile
from typing import Annotated

import tandem


class Task(tandem.Model):
    id: Annotated[int, tandem.PrimaryKey]
    title: str = ""


assert tandem.__file__.startswith(sys.prefix), f"tandem imported from {tandem.__file__}"
db = tandem.open(os.path.join(tempfile.mkdtemp(), "smoke.sqlite"), [Task])
with db.write() as tx:
    tx.add(Task(1, "from the wheel"))
got = db.get(Task, 1)
assert got is not None and got.title == "from the wheel", got
print(f"wheel_smoke.py: the wheel works in a fresh venv ({tandem.__file__})")
