"""A warm fork server for job processes: a cell costs its compute, not its imports.

Each Snakemake job is its own process, and importing torch, transformers and the job code costs seconds per cell
(benchmarks/cell_overhead.py). With ``ADAPTBENCH_FORKSERVER=1`` (the Snakefile sets it for local runs), a job
command (``adaptbench train``, ``adapt``, ``llm`` ...) becomes a thin client: the first one starts a server that
imports that stack once and waits on a Unix socket; every job is then a fork of it. The job keeps Snakemake's
shape: one process per cell, its own log (the client's stdout and stderr are passed to the fork as file
descriptors), its exit code, its signals (the client forwards SIGTERM / SIGINT / SIGHUP to the fork).

What a fork inherits is exactly what a fresh process would have built: the server only imports, runs no
computation (torch's thread pools start in the fork, at the job's ``--threads``) and never touches CUDA. A server
serves one code and environment: its socket is named by the interpreter, the working folder, the environment and
the size and mtime of every source file of the package and of ``methods/``; an edit starts a new server, and a
server left without jobs for ``IDLE_SECONDS`` exits. Under SLURM (``SLURM_JOB_ID`` set) and wherever the server
cannot start, the job runs in its own process as before: the fork server changes wall time, never results.

    python -m adaptbench.forkserver serve --socket PATH [--target module:function]   (started by the client)
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ENABLE_ENV = "ADAPTBENCH_FORKSERVER"  # "1": job commands go through the server
FORKED_ENV = "ADAPTBENCH_FORKED"  # set in a job the server forked (and what it starts): never a client again
MAX_JOBS = 64  # jobs one server runs at once; more wait (a guard against runaway clients)
JOB_COMMANDS = frozenset({"train", "evaluate", "init", "adapt", "tta-source", "llm", "pretrain"})
IDLE_SECONDS = 30.0  # a server with no job for this long exits (ADAPTBENCH_FORKSERVER_IDLE overrides)
IDLE_ENV = "ADAPTBENCH_FORKSERVER_IDLE"
VOLATILE_ENV = frozenset({"_", "PWD", "OLDPWD", "SHLVL"})
DEFAULT_TARGET = "adaptbench.cli:main"
_IN_FORK = False  # set in a job the server forked: it runs the job, never asks a server again
_THREADS = None  # torch's default thread count in the server before it pinned itself to one
PRELOAD = ("torch", "transformers", "transformers.models.bert.modeling_bert",
           "transformers.models.llama.modeling_llama", "adaptbench.cli", "adaptbench.tracks.finetune.job",
           "adaptbench.tta.runner")


def fingerprint() -> str:
    """What a server's imports depend on: interpreter, working folder, environment, and every source file."""
    h = hashlib.sha256()
    h.update(json.dumps([sys.executable, sys.version, os.getcwd(),
                         sorted((k, v) for k, v in os.environ.items() if k not in VOLATILE_ENV)]).encode())
    root = Path(__file__).resolve().parent
    for folder in (root, root.parent / "methods"):
        for path in sorted(folder.rglob("*.py")):
            st = path.stat()
            h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def socket_path() -> Path:
    return Path(tempfile.gettempdir()) / f"adaptbench-fs-{os.getuid()}-{fingerprint()}.sock"


# ---- the client: what `adaptbench <job command>` runs when the fork server is on ------------------------------

def maybe_run(argv: list[str]) -> int | None:
    """The job's exit code, run as a fork of the warm server; None: run it in this process (server off, SLURM,
    not a job command, or no server could start)."""
    if (_IN_FORK or os.environ.get(FORKED_ENV) or os.environ.get(ENABLE_ENV) != "1" or "SLURM_JOB_ID" in os.environ
            or not argv or argv[0] not in JOB_COMMANDS):
        return None
    path = socket_path()
    conn = _connect(path) or _start_and_connect(path, idle=float(os.environ.get(IDLE_ENV, IDLE_SECONDS)))
    return None if conn is None else call(conn, argv)


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
        return conn
    except OSError:
        conn.close()
        return None


def _start_and_connect(path: Path, target: str = DEFAULT_TARGET, wait: float = 120.0,
                       idle: float = IDLE_SECONDS) -> socket.socket | None:
    """Start a server for ``path`` (detached, its own session, output to a log beside the socket) and connect."""
    log = open(f"{path}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "adaptbench.forkserver", "serve", "--socket", str(path),
                             "--target", target, "--idle", str(idle)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True, close_fds=True)
    log.close()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        conn = _connect(path)
        if conn is not None:
            return conn
        if proc.poll() is not None:  # the server could not start: say where to look, run in-process
            print(f"adaptbench: the fork server did not start (see {path}.log); running the job in its own process",
                  file=sys.stderr)
            return None
        time.sleep(0.05)
    return None


def call(conn: socket.socket, argv: list[str]) -> int:
    """Send the job (argv, working folder, environment, stdin/stdout/stderr) and wait for its exit code, forwarding
    termination signals to the fork that runs it."""
    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    socket.send_fds(conn, [len(request).to_bytes(8, "big") + request], [0, 1, 2])
    reader = conn.makefile("r")
    hello = reader.readline()
    if not hello:
        return 1
    pid = json.loads(hello)["pid"]

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    line = reader.readline()
    return json.loads(line)["code"] if line else 1


# ---- the server ------------------------------------------------------------------------------------------------

def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    size = int.from_bytes(data[:8], "big")
    body = data[8:]
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ConnectionError("client left")
        body += chunk
    return json.loads(body), fds


def _run_job(target, request: dict, fds: list[int]) -> int:
    """In the fork: become the client's process (fds, folder, environment, default signals) and run the job."""
    global _IN_FORK
    _IN_FORK = True
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    for i, fd in enumerate(fds):
        os.dup2(fd, i)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"], **{FORKED_ENV: "1"})
    sys.argv = ["adaptbench", *request["argv"]]
    if _THREADS is not None:  # a job without --threads runs at a fresh process's default
        import torch

        torch.set_num_threads(_THREADS)
    try:
        code = target(request["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # as a fresh process would: the traceback in the job's log, exit 1
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code if isinstance(code, int) else 0


def _serve_one(conn: socket.socket, listener: socket.socket, target) -> None:
    """In the first fork: fork the job, tell the client its pid, wait for it, send its exit code."""
    listener.close()
    request, fds = _recv_request(conn)
    pid = os.fork()
    if pid == 0:
        conn.close()
        os._exit(_run_job(target, request, fds))
    for fd in fds:
        os.close(fd)
    conn.sendall((json.dumps({"pid": pid}) + "\n").encode())
    status = _wait_or_follow_client(pid, conn)
    code = os.waitstatus_to_exitcode(status)
    try:
        conn.sendall((json.dumps({"code": code if code >= 0 else 128 - code}) + "\n").encode())
    except OSError:
        pass  # the client is gone


def _wait_or_follow_client(pid: int, conn: socket.socket) -> int:
    """The job's wait status; a client that dies first (Snakemake killed with -9) takes its job with it, as a
    plain job process would go with its process group: SIGTERM, then SIGKILL after 10 s."""
    import select

    killed_at = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if killed_at is None:
            readable, _, _ = select.select([conn], [], [], 0.2)
            if readable and not conn.recv(1):  # EOF: the client exited or was killed
                os.kill(pid, signal.SIGTERM)
                killed_at = time.monotonic()
        else:
            if time.monotonic() - killed_at > 10:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)


def serve(path: str, target: str = DEFAULT_TARGET, idle: float = IDLE_SECONDS) -> None:
    if target == DEFAULT_TARGET:  # the job stack, imported once (another target, a test's, imports its own)
        import torch

        global _THREADS
        _THREADS = torch.get_num_threads()  # what a fresh process starts with, restored in each fork
        torch.set_num_threads(1)  # no thread pool exists when a job forks; the job sets its own count
        for name in PRELOAD:
            importlib.import_module(name)
        from adaptbench.registry import available

        available()  # every method module imported once
    module, _, function = target.partition(":")
    run = getattr(importlib.import_module(module), function)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f"{path}.{os.getpid()}"
    listener.bind(tmp)
    listener.listen(64)
    os.rename(tmp, path)  # atomic: a client never sees a half-made socket
    inode = os.stat(path).st_ino
    listener.settimeout(1.0)
    children, last = set(), time.monotonic()
    while True:
        for pid in list(children):  # reap the finished
            if os.waitpid(pid, os.WNOHANG)[0]:
                children.discard(pid)
        if children:
            last = time.monotonic()
        elif time.monotonic() - last > idle:
            break
        if len(children) >= MAX_JOBS:
            time.sleep(0.05)
            continue
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                _serve_one(conn, listener, run)
            finally:
                os._exit(0)
        conn.close()
        children.add(pid)
        last = time.monotonic()
    try:
        if os.stat(path).st_ino == inode:  # still ours (another server may have replaced it)
            os.unlink(path)
    except FileNotFoundError:
        pass
    log = Path(f"{path}.log")
    if log.is_file() and log.stat().st_size == 0:  # nothing went wrong: leave nothing behind
        log.unlink()


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m adaptbench.forkserver")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--socket", required=True)
    p.add_argument("--target", default=DEFAULT_TARGET)
    p.add_argument("--idle", type=float, default=IDLE_SECONDS)
    args = parser.parse_args(argv)
    serve(args.socket, args.target, args.idle)
    return 0


if __name__ == "__main__":  # run the module's own copy, so the server and its forks share one _IN_FORK
    from adaptbench.forkserver import main as _main

    sys.exit(_main())
