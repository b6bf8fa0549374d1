"""Real servers for the deployment test: PostgreSQL in a temporary folder (as a non-root
user), and the Dagster processes started with the same commands as the compose services."""

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .reaper import server_process

# The user the server runs as when the tests run as root (PostgreSQL refuses root):
# Debian's postgresql package creates it.
POSTGRES_USER = "postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin() -> Path | None:
    """The newest PostgreSQL server binaries of Debian's package layout, or on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path else None


def wait_for(what: str, ready: Callable[[], bool], timeout_s: float,
             alive: Callable[[], str | None] = lambda: None) -> None:
    """Poll ``ready`` until it holds; fail after ``timeout_s`` or when ``alive`` says why."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if ready():
                return
        dead = alive()
        if dead:
            raise RuntimeError(f"{what}: {dead}")
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not ready after {timeout_s:.0f} s")


@dataclass
class Postgres:
    host: str
    port: int
    user: str
    password: str
    db: str

    def env(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads."""
        return {"DAGSTER_POSTGRES_HOST": self.host, "DAGSTER_POSTGRES_PORT": str(self.port),
                "DAGSTER_POSTGRES_USER": self.user, "DAGSTER_POSTGRES_PASSWORD": self.password,
                "DAGSTER_POSTGRES_DB": self.db}

    def connect(self):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                password=self.password, dbname=self.db, connect_timeout=5)


def _as_user(argv: list[str]) -> list[str]:
    """``argv`` as POSTGRES_USER when we are root, else as ourselves."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", POSTGRES_USER, "--", *argv]


@contextlib.contextmanager
def postgres_server(timeout_s: float = 60.0) -> Iterator[Postgres]:
    """initdb + postgres on a free 127.0.0.1 port, password authentication, one database;
    stopped (fast shutdown) and its folder deleted afterwards. The folder is a fresh one
    under the system's temporary directory, which the server's user can reach."""
    binaries = postgres_bin()
    if binaries is None:
        raise FileNotFoundError("no PostgreSQL server binaries (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="imgsearch-postgres-"))
    data, password_file = folder / "data", folder / "password"
    password = os.urandom(12).hex()
    password_file.write_text(password + "\n")
    if os.geteuid() == 0:
        owner = pwd.getpwnam(POSTGRES_USER)
        for path in (folder, password_file):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    subprocess.run(_as_user([str(binaries / "initdb"), "-D", str(data), "-U", "dagster",
                             "--auth=scram-sha-256", f"--pwfile={password_file}",
                             "--encoding=UTF8", "--locale=C"]),
                   check=True, capture_output=True, timeout=timeout_s)
    password_file.unlink()
    port = free_port()
    log = open(folder / "postgres.log", "wb")  # noqa: SIM115 - closed below
    command = _as_user([str(binaries / "postgres"), "-D", str(data), "-h", "127.0.0.1",
                        "-p", str(port), "-k", str(folder), "-c", "fsync=off"])
    pg = Postgres("127.0.0.1", port, "dagster", password, "postgres")
    try:
        with server_process(command, stdout=log, stderr=subprocess.STDOUT) as server:
            try:
                wait_for("postgres", lambda: pg.connect().close() is None, timeout_s,
                         lambda: server.poll() is not None
                         and (folder / "postgres.log").read_text()[-2000:])
                with contextlib.closing(pg.connect()) as conn:
                    conn.autocommit = True
                    conn.cursor().execute("CREATE DATABASE dagster")
                yield Postgres("127.0.0.1", port, "dagster", password, "dagster")
            finally:
                if server.poll() is None:
                    # fast shutdown; to the group: runuser passes no SIGINT on to postgres
                    os.killpg(server.pid, signal.SIGINT)
                    try:
                        server.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        server.kill()
                        server.wait()
    finally:
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


class Processes:
    """Long-running commands in their own process groups, stopped together at the end (and
    killed with pytest, should it die first)."""

    def __init__(self, folder: Path, env: dict[str, str]):
        self.folder, self.env = folder, env
        self.started: dict[str, subprocess.Popen] = {}
        self._reaped = contextlib.ExitStack()

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
        process = self._reaped.enter_context(server_process(
            argv, env=self.env, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT))
        log.close()
        self.started[name] = process
        return process

    def log(self, name: str, tail: int = 3000) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def dead(self, name: str) -> str | None:
        process = self.started[name]
        if process.poll() is None:
            return None
        return f"{name} exited with {process.returncode}:\n{self.log(name)}"

    def stop_all(self, timeout_s: float = 20.0) -> None:
        for process in reversed(self.started.values()):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.started.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._reaped.close()  # and whatever the groups' leaders left behind


def venv_command(name: str) -> str:
    """A console script of the running interpreter's environment (dagster, dagster-daemon...)."""
    return str(Path(sys.executable).parent / name)


class LocalHTTPServer(ThreadingHTTPServer):
    """An HTTP server on a free 127.0.0.1 port, serving in a thread inside ``with``."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        super().__init__(("127.0.0.1", 0), handler)

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FlakyProxy(LocalHTTPServer):
    """Forwards HTTP to a server on 127.0.0.1:``upstream_port``, but answers the first
    ``failures`` requests that ``injects(method, path)`` selects itself, with ``statuses`` in
    turn and ``error(status) -> (headers, body)``. Records what it failed and forwarded."""

    def __init__(self, upstream_port: int, failures: int, statuses: tuple[int, ...],
                 error: Callable[[int], tuple[list[tuple[str, str]], bytes]],
                 injects: Callable[[str, str], bool] = lambda method, path: True):
        self.upstream_port = upstream_port
        self.failures_left = failures
        self.statuses, self.error, self.injects = statuses, error, injects
        self.failed: list[int] = []
        self.failed_at: list[float] = []
        self.forwarded = 0
        self.lock = threading.Lock()
        super().__init__(_ProxyHandler)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        length = str(len(body))
        for name, value in headers:
            if name.lower() == "content-length" and self.command == "HEAD":
                length = value  # no body, but the size of the one a GET would get
            elif name.lower() not in ("content-length", "transfer-encoding", "connection",
                                      "date", "server"):
                self.send_header(name, value)
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body(self) -> bytes:
        """The request body as sent; a chunked one (the AWS SDK's aws-chunked uploads) with
        its framing and trailers, forwarded as is under its Transfer-Encoding header."""
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        raw = b""
        while True:
            line = self.rfile.readline()
            raw += line
            size = int(line.split(b";")[0], 16)
            if size == 0:
                break
            raw += self.rfile.read(size + 2)  # the chunk and its CRLF
        while True:  # trailers, up to the blank line
            line = self.rfile.readline()
            raw += line
            if line in (b"\r\n", b"\n", b""):
                return raw

    def _handle(self):
        body = self._body()
        server: FlakyProxy = self.server
        with server.lock:
            fail = server.failures_left > 0 and server.injects(self.command, self.path)
            if fail:
                server.failures_left -= 1
                status = server.statuses[len(server.failed) % len(server.statuses)]
                server.failed.append(status)
                server.failed_at.append(time.monotonic())
            else:
                server.forwarded += 1
        if fail:
            return self._reply(status, *server.error(status))
        upstream = HTTPConnection("127.0.0.1", server.upstream_port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
        upstream.request(self.command, self.path, body=body or None, headers=headers)
        response = upstream.getresponse()
        payload = response.read()
        upstream.close()
        self._reply(response.status, response.getheaders(), payload)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle
