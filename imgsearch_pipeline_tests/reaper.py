"""Servers the tests start die with the test run, even when pytest itself is killed.

``server_process(argv)`` starts ``argv`` in a session of its own (so that it can be signalled
as a group, and a terminal's Ctrl-C or ``timeout``'s signal to pytest's group does not reach
it) and, beside it, a watcher: this file run as a script. The watcher holds the read end of
a pipe whose only write end is pytest's. When pytest dies, however it dies (SIGKILL too),
the kernel closes that end; the watcher then freezes and kills the server and everything it
started: the server's process group and session, and every descendant found through
``/proc`` (those that started sessions of their own too), including those it saw earlier
(it looks every ``POLL_S``), whose parents have died since. The same happens when the
``with`` block ends, for whatever the caller's own shutdown left running.

Linux's parent-death signal wakes the watcher as well (should a forked-but-not-exec'd child
of pytest keep the pipe open). It fires when the *thread* that started the watcher ends, so
the watcher acts only once its parent process is really gone (``getppid`` changed). The
server itself gets no parent-death signal: it would reach neither its children nor, for
a server started from a thread that ends first, the right moment.
"""

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

PR_SET_PDEATHSIG = 1
POLL_S = 1.0  # how often the watcher checks its parent and looks at the server's processes


def _stat(pid: int) -> tuple[str, int, int, int, str] | None:
    """(state, ppid, process group, session, start time) of ``pid``; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ", comm may hold anything
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3]), fields[19]


def start_time(pid: int) -> str:
    """When ``pid`` started (clock ticks since boot): a pid and its start time name one process."""
    stat = _stat(pid)
    return stat[4] if stat else ""


def _processes() -> dict[int, tuple[str, int, int, int, str]]:
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None:
                found[int(name)] = stat
    return found


def family(leader: int, leader_start: str, known: dict[int, str]) -> dict[int, str]:
    """The living processes of the server ``leader`` (pid -> start time): itself, its group
    and session (it leads both), those seen before (``known``: the same pid and start time;
    an orphan that left the session is found only so), and every descendant of any of them.
    A pid reused since the server ended (another start time) is not the server; its group
    is not the server's either (a group's id stays taken while any member lives)."""
    table = _processes()
    leader_ours = leader not in table or table[leader][4] == leader_start
    members = {pid for pid, (_, _, group, session, start) in table.items()
               if known.get(pid) == start or (leader_ours and leader in (pid, group, session))}
    grown = True
    while grown:
        children = {pid for pid, (_, ppid, *_) in table.items() if ppid in members} - members
        members |= children
        grown = bool(children)
    return {pid: table[pid][4] for pid in members
            if table[pid][0] != "Z" and pid != os.getpid()}


def reap(leader: int, leader_start: str, known: dict[int, str] | None = None) -> set[int]:
    """Kill what is left of the server ``leader``: stopped first, all of it, so that nothing
    forks or restarts a child meanwhile, then killed. Returns the pids killed."""
    known = dict(known or {})
    stopped: set[int] = set()
    while more := set(known := family(leader, leader_start, known)) - stopped:
        for pid in more:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGSTOP)
        stopped |= more
    for pid in stopped:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return stopped


def _wake_on_parent_death(signum: int) -> int:
    """Have ``signum`` delivered (and select woken) when the parent goes; the read end of the
    pipe it is written to."""
    woken, wake = os.pipe()
    os.set_blocking(wake, False)
    signal.signal(signum, lambda *_: None)
    signal.set_wakeup_fd(wake)
    with contextlib.suppress(OSError, AttributeError):  # Linux only; the polling still works
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    return woken


def watch(owner: int, pipe: int, leader: int, leader_start: str) -> None:
    """Wait while ``owner`` (pytest) lives and holds the pipe open, then reap the server."""
    for ignored in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(ignored, signal.SIG_IGN)  # only the owner's end decides
    woken = _wake_on_parent_death(signal.SIGUSR1)
    known: dict[int, str] = {}
    while os.getppid() == owner:
        # Remembered while the tree is whole: a helper that left the session and whose
        # parent then died is found through this alone.
        known = family(leader, leader_start, known)
        ready, _, _ = select.select([pipe, woken], [], [], POLL_S)
        if woken in ready:
            os.read(woken, 64)
        if pipe in ready and not os.read(pipe, 64):
            break  # the owner closed its end, or died
    reap(leader, leader_start, known)


@contextlib.contextmanager
def server_process(argv: list[str], **popen: Any) -> Iterator[subprocess.Popen]:
    """``subprocess.Popen(argv, **popen)`` in a session of its own, killed with everything it
    started when the block ends (after the caller's own shutdown) or when this process dies."""
    popen.pop("start_new_session", None)
    process = subprocess.Popen(argv, start_new_session=True, **popen)
    pipe, owner_end = os.pipe()  # not inheritable: no other child holds owner_end
    try:
        watcher = subprocess.Popen(
            [sys.executable, "-I", "-S", __file__, str(os.getpid()), str(pipe), str(process.pid),
             start_time(process.pid)],
            pass_fds=(pipe,), start_new_session=True, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL)
    except BaseException:
        os.close(owner_end)
        reap(process.pid, start_time(process.pid))
        process.wait()
        raise
    finally:
        os.close(pipe)
    try:
        yield process
    finally:
        os.close(owner_end)  # the watcher kills what is left
        watcher.wait()
        process.wait()


if __name__ == "__main__":
    watch(*map(int, sys.argv[1:4]), sys.argv[4])
