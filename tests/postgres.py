"""A real PostgreSQL server for the sink's tests and bench/sink.py: Debian's `postgresql`
binaries, a cluster made with initdb in a temporary directory, on 127.0.0.1 and a free port,
password authentication (scram-sha-256). initdb refuses root: as root the cluster belongs to
the `postgres` system user (runuser)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PASSWORD = "s3cret-for-tests"


def binaries() -> Path | None:
    """The folder of Debian's PostgreSQL server binaries (the newest), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One PostgreSQL server: `start`, `stop` (fast: like a crash to clients), `dsn`."""

    def __init__(self) -> None:
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="lienthong-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.root.chmod(0o700)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD)
        if os.geteuid() == 0:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        self._run("initdb", "-D", str(self.data), "-U", "lienthong", "-A", "scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_wal_size = '2GB'\n"
            )
        self.password_file = Path(tempfile.mkdtemp(prefix="lienthong-pgpw-")) / "password"
        self.password_file.write_text(PASSWORD + "\n")

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=120, cwd="/")

    @property
    def dsn(self) -> str:
        return self.dsn_for()

    def dsn_for(self, dbname: str = "postgres", port: int | None = None) -> str:
        """The dsn of one database, at the server's port or another (a relay's)."""
        return f"host=127.0.0.1 port={port or self.port} dbname={dbname} user=lienthong"

    def start(self) -> Cluster:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        if self.running():
            try:
                self.stop()
            except subprocess.CalledProcessError:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.password_file.parent, ignore_errors=True)

    def connect(self, dbname: str = "postgres") -> object:
        import psycopg

        return psycopg.connect(self.dsn_for(dbname), password=PASSWORD, autocommit=True)
