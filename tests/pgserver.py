"""A throwaway PostgreSQL server for the tests: `initdb` into a temporary directory,
`postgres` on 127.0.0.1 at a free port (its unix socket in that directory too), password
authentication for a superuser whose password needs URL encoding, a new database per test.

initdb and postgres refuse to run as root: as root they run as the `postgres` system user
(`runuser`), the directory handed over to it. The tests kill clients, never the server,
so the server runs with `fsync=off`: a client's committed transaction is in the server's
memory and WAL whether or not it reached the disk, and only a crash of the machine (which
no test makes) could lose it.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    import psycopg

USER = "sipbridge"
PASSWORD = "p@ss:w/rd-7f3c"  # needs URL encoding; tests check it never shows


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin with initdb, else initdb's on PATH."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.parent.parent.name))

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PgServer:
    """One postgres process; `start` it, `create_database` per test, `stop` it at the end."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="sipbridge-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        self._names = itertools.count(1)

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        command = [str(self.bindir / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False, cwd=self.dir)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({proc.returncode}):\n"
                               f"{proc.stdout}{proc.stderr}\n{log}")

    def start(self) -> None:
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_postgres:
            account = pwd.getpwnam("postgres")
            for path in (self.dir, pwfile):
                os.chown(path, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                  "--auth=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync")
        self._start()

    def _start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off"
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", "60", "-o", options)

    @contextmanager
    def down(self) -> Iterator[None]:
        """The server stopped for the block (a fast shutdown: every client's connection
        dropped), then started again, on the same port."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")
        try:
            yield
        finally:
            self._start()

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, dbname: str, password: str = PASSWORD) -> str:
        return (f"postgresql://{USER}:{quote(password, safe='')}@127.0.0.1:{self.port}/"
                f"{dbname}")

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        """A superuser connection in autocommit mode (for checks and sabotage)."""
        import psycopg

        return psycopg.connect(self.url(dbname), autocommit=True)

    def create_database(self) -> str:
        """A new, empty database; its URL (with the password)."""
        name = f"test_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
