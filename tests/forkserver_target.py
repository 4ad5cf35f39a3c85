"""A job for tests/test_forkserver.py's servers: what the fork sees, a long sleep, a crash."""

import os
import sys
import time


def main(argv):
    if argv[0] == "hello":
        print(f"hello cwd={os.getcwd()} MARK={os.environ.get('MARK')} forked={os.environ.get('ADAPTBENCH_FORKED')}"
              f" pid={os.getpid()} ppid={os.getppid()}")
        print("to stderr", file=sys.stderr)
        return int(argv[1])
    if argv[0] == "sleep":
        _name_process("sleep-job")  # so the test finds this job among the machine's processes
        print("started", flush=True)
        time.sleep(60)
        return 0
    raise RuntimeError("boom")


def _name_process(name: str) -> None:
    import ctypes

    ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME: /proc/<pid>/comm
