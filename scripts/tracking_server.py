"""A shared MLflow tracking server: PostgreSQL for runs and metrics, artifacts served by MLflow.

    python scripts/tracking_server.py [--data results/pgdata] [--host 127.0.0.1] [--port 5000]

Starts PostgreSQL (Debian's `postgresql` package: `make tracking-server` installs it when missing)
on a data folder it creates on first use, then `mlflow server` on it; prints the URI to pass as
`--tracking-uri`, serves until Ctrl-C or SIGTERM, then stops both. PostgreSQL listens on
127.0.0.1 only and trusts local connections (it is reachable through MLflow alone); run as root,
it runs as the `postgres` user, which must be able to reach the data folder.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DATABASE, USER = "mlflow", "harness"


def pg_bin(name: str) -> str:
    """A PostgreSQL program: on PATH, else Debian's versioned folder (the newest)."""
    found = shutil.which(name) or (sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version) or [None])[-1]
    if not found:
        sys.exit(f"error: PostgreSQL's {name} not found: install Debian's postgresql package (make tracking-server does)")
    return found


def _version(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


def as_server_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its programs as `postgres` then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def prepare(data: Path) -> Path:
    db = data / "db"
    if (db / "PG_VERSION").exists():
        return db
    db.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(db, "postgres", "postgres")
        if subprocess.run(as_server_user(["test", "-w", str(db)])).returncode:
            sys.exit(f"error: the postgres user cannot reach {db}; choose a --data folder it can (every parent folder readable)")
    subprocess.run(as_server_user([pg_bin("initdb"), "-D", str(db), "-U", USER, "--auth=trust", "--encoding=UTF8"]),
                   check=True, stdout=subprocess.DEVNULL)
    return db


def start_postgres(db: Path, port: int) -> None:
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories=''"
    log_file = db / "server.log"
    started = subprocess.run(as_server_user([pg_bin("pg_ctl"), "-D", str(db), "-l", str(log_file), "-o", options, "-w", "-t", "120", "start"]),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if started.returncode:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] if log_file.exists() else []
        sys.exit(f"error: PostgreSQL did not start on port {port}: {(started.stderr.strip() or ' '.join(tail))[:300]}")
    created = subprocess.run(as_server_user([pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE]),
                             capture_output=True, text=True)
    if created.returncode and "already exists" not in created.stderr:
        stop_postgres(db)
        sys.exit(f"error: cannot create the {DATABASE} database: {created.stderr.strip()[:300]}")


def stop_postgres(db: Path) -> None:
    subprocess.run(as_server_user([pg_bin("pg_ctl"), "-D", str(db), "-m", "fast", "-w", "stop"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_healthy(url: str, server: subprocess.Popen, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="results/pgdata", help="PostgreSQL's data and MLflow's artifacts (created on first use)")
    p.add_argument("--host", default="127.0.0.1", help="MLflow's interface; 0.0.0.0 lets other machines log (see README)")
    p.add_argument("--port", type=int, default=5000, help="MLflow's port")
    p.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL's port (127.0.0.1 only)")
    p.add_argument("--workers", type=int, default=2, help="MLflow server worker processes")
    p.add_argument("--allowed-hosts", help="Host headers MLflow accepts besides localhost and private IPs, e.g. store.lab:5000")
    args = p.parse_args()

    data = Path(args.data).resolve()
    db = prepare(data)
    start_postgres(db, args.pg_port)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow), "server", "--backend-store-uri", f"postgresql://{USER}@127.0.0.1:{args.pg_port}/{DATABASE}",
         "--artifacts-destination", str(data / "artifacts"), "--host", args.host, "--port", str(args.port), "--workers", str(args.workers),
         *(["--allowed-hosts", args.allowed_hosts] if args.allowed_hosts else [])],
        stdout=open(data / "mlflow.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        shown = "127.0.0.1" if args.host in ("127.0.0.1", "0.0.0.0") else args.host
        url = f"http://{shown}:{args.port}"
        if not wait_healthy(url, server, 180):
            print(f"error: the MLflow server did not come up on {url}; see {data / 'mlflow.log'}", file=sys.stderr)
            return 1
        elsewhere = f"; other machines: http://<this machine's address>:{args.port}" if args.host != "127.0.0.1" else ""
        print(f"tracking server ready: --tracking-uri {url}{elsewhere}   (PostgreSQL on 127.0.0.1:{args.pg_port}, data in {data})", flush=True)
        while not stop and server.poll() is None:
            time.sleep(0.5)
        return 0 if stop else 1
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        stop_postgres(db)


if __name__ == "__main__":
    sys.exit(main())
