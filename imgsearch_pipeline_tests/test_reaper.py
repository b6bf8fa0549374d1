"""Servers started through ``reaper.server_process`` die with the process that started them,
however it dies, and so does everything they started, whatever session it moved to."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .reaper import POLL_S, server_process

PROJECT = Path(__file__).resolve().parents[1]

# A server with a worker in its group and a helper that left for a session of its own (as
# dagster-webserver's workers and postgres's backends, or what runuser starts); it writes
# the three pids to argv[1].
SERVER = textwrap.dedent("""
    import os, subprocess, sys, time
    sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
    worker = subprocess.Popen(sleep)
    escaped = subprocess.Popen(sleep, start_new_session=True)
    with open(sys.argv[1] + ".partial", "w") as f:
        f.write(f"{os.getpid()} {worker.pid} {escaped.pid}")
    os.rename(sys.argv[1] + ".partial", sys.argv[1])
    time.sleep(600)
""")

# pytest's part: starts the server from a thread that then ends (Linux's parent-death
# signal fires for the thread, the owner lives on) and stays until it is killed.
OWNER = textwrap.dedent("""
    import sys, threading, time
    from imgsearch_pipeline_tests.reaper import server_process

    held = []
    def start():
        held.append(server_process([sys.executable, "-c", sys.argv[1], sys.argv[2]]))
        held[0].__enter__()
    starter = threading.Thread(target=start)
    starter.start()
    starter.join()
    time.sleep(600)
""")


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to collect it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for_pids(path: Path, process: subprocess.Popen, seconds: float = 120) -> list[int]:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, f"exited with {process.returncode}"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    return [int(pid) for pid in path.read_text().split()]


def gone_within(pids: list[int], seconds: float) -> list[int]:
    """The pids still running after ``seconds``."""
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


def kill_left_over(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("death", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_owner_takes_its_server_and_the_servers_children_along(tmp_path, death):
    out = tmp_path / "pids"
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    # The owner dies of the signal as pytest would: its default action, whatever this
    # process's own disposition (an ignored signal would be inherited across exec).
    owner = subprocess.Popen([sys.executable, "-c", OWNER, SERVER, str(out)], cwd=tmp_path, env=env,
                             preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    pids: list[int] = []
    try:
        pids = wait_for_pids(out, owner)
        time.sleep(1.5 * POLL_S)  # the starting thread ended long enough ago: nothing stopped
        assert all(alive(pid) for pid in pids), "the server died with the thread that started it"
        owner.send_signal(death)  # as pytest dies: no finally, no atexit
        owner.wait(timeout=30)
        assert gone_within(pids, 5) == []
    finally:
        owner.kill()
        owner.wait()
        kill_left_over(pids)


def test_the_end_of_the_block_reaps_what_the_callers_shutdown_left(tmp_path):
    out = tmp_path / "pids"
    pids: list[int] = []
    try:
        with server_process([sys.executable, "-c", SERVER, str(out)]) as server:
            pids = wait_for_pids(out, server)
            time.sleep(1.5 * POLL_S)  # the watcher has looked at them
            server.kill()  # the leader alone: its worker and helper live on
            server.wait()
            assert all(alive(pid) for pid in pids[1:])
        assert gone_within(pids, 5) == []
    finally:
        kill_left_over(pids)
