"""Fixtures: a schema, temp databases, and a real `tandem-server` with TLS and HS256 tokens."""

import base64
import contextlib
import hashlib
import hmac
import json
import os
import pathlib
import socket
import subprocess
import threading
import time

import pytest

import tandem

REPO = pathlib.Path(__file__).resolve().parents[3]
SECRET = b"python binding tests secret 32b!"


def task_classes():
    def prop(name, ptype, **kw):
        return tandem.PropertySpec(
            name=name,
            property_type=ptype,
            nullable=kw.get("nullable", False),
            collection=kw.get("collection", tandem.Collection.SINGLE),
            link_target=None,
        )

    return [
        tandem.ClassSpec(
            name="Task",
            primary_key="_id",
            properties=[
                prop("_id", tandem.PropertyType.INT),
                prop("title", tandem.PropertyType.STRING),
                prop("done", tandem.PropertyType.BOOL),
                prop("count", tandem.PropertyType.INT),
                prop("tags", tandem.PropertyType.STRING, collection=tandem.Collection.LIST),
            ],
        )
    ]


@pytest.fixture
def db(tmp_path):
    return tandem.Database.open(str(tmp_path / "db.sqlite"), task_classes())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(paths, seconds=3600, secret=SECRET, subject="py"):
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": subject, "exp": int(time.time()) + seconds, "paths": paths}).encode())
    signing_input = f"{header}.{claims}".encode()
    signature = b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return f"{header}.{claims}.{signature}"


@pytest.fixture
def server(tmp_path):
    """A real tandem-server on a free loopback port, TLS with a throwaway certificate."""
    with run_server(tmp_path) as running:
        yield running


@pytest.fixture
def flx_server(tmp_path):
    """The same with an app (`--app-id`), so that it serves flexible sync (server path `/flx`);
    no `--flx-rules`: every user may read and write everything."""
    with run_server(tmp_path, "--app-id", FLX_APP) as running:
        yield running


FLX_APP = "py-flx-app"


@contextlib.contextmanager
def run_server(tmp_path, *extra):
    """Runs a tandem-server with `extra` arguments until the block ends."""
    binary = os.environ.get("TANDEM_SERVER_BIN", str(REPO / "target" / "debug" / "tandem-server"))
    if not os.path.exists(binary):
        pytest.fail(f"build the server first: cargo build --features server ({binary} missing)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE"],
        check=True, capture_output=True,
    )
    (tmp_path / "secret").write_bytes(SECRET)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data"),
         "--tls-cert", str(cert), "--tls-key", str(key), "--jwt-secret-file", str(tmp_path / "secret"),
         *extra],
        stderr=subprocess.PIPE,
    )
    # The listen line need not be the first (the server logs through tracing); read until it
    # comes, then keep draining stderr on a thread so a chatty server never blocks on a full
    # pipe. The lines are kept for a failing test's report.
    lines = []
    for raw in proc.stderr:
        line = raw.decode(errors="replace")
        lines.append(line)
        if "tandem-server listening on" in line:
            break
    else:
        proc.wait()
        pytest.fail("tandem-server exited before listening:\n" + "".join(lines))
    drain = threading.Thread(target=lambda: lines.extend(r.decode(errors="replace") for r in proc.stderr),
                             daemon=True)
    drain.start()
    try:
        yield {"url": f"wss://localhost:{port}/", "ca": str(cert), "log": lines}
    finally:
        proc.kill()
        proc.wait()
        drain.join(timeout=5)


def options(server, path="/todos", token=None, flexible=False):
    return tandem.SyncOptions(
        url=server["url"],
        path=path,
        token=token if token is not None else make_token([path]),
        ca_file=server["ca"],
        allow_insecure=False,
        client_reset=tandem.ClientResetMode.RECOVER_OR_DISCARD,
        flexible=flexible,
    )


def flx_options(server, user):
    """Flexible sync options for the server's `/flx` as `user` (the token's subject, which the
    server's `--flx-rules` know as `%%user.id`)."""
    return options(server, path="/flx", token=make_token(["/flx"], subject=user), flexible=True)


def apply_change(keys, change):
    """Realm's indices applied to a list of keys: deletions from the old, then insertions
    (taken from the change's keys) into the new."""
    gone = set(change.deletions)
    kept = [k for i, k in enumerate(keys) if i not in gone]
    for i in sorted(change.insertions):
        kept.insert(i, change.keys[i])
    return kept


def eventually(check, seconds=30):
    deadline = time.time() + seconds
    while not check():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)
