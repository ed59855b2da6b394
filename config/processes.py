"""Child processes of our launchers: start, stop, check they still run, wait for their health URLs.

One copy for the `make run` supervisor (config/stack.py), bench/soak.py, bench/servers.py and
the tests' worker helper. Standard library only, so the supervisor can use it before Django is
set up. Not honcho: its Manager runs Procfile-style processes inside one blocking loop that owns
their output and signals, with no health wait and no way for the caller to check or stop a child.
"""

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.2


class ProcessError(Exception):
    """A child ended unexpectedly or did not answer in time; the message names it."""


def start(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path | None = None, quiet: bool = False
) -> subprocess.Popen:
    """Start `argv` in a session of its own; stdout and stderr go to `log` (appended), nowhere if `quiet`, else ours."""
    with contextlib.ExitStack() as files:
        output = files.enter_context(log.open("ab")) if log else (subprocess.DEVNULL if quiet else None)
        # Its own session: stopping it reaches what it forked (a gunicorn master's workers), and
        # a Ctrl-C at the terminal reaches only the caller, which then stops its children in order.
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdout=output,
            stderr=None if output is None else subprocess.STDOUT,
            start_new_session=True,
        )


def stop(
    children: Mapping[str, subprocess.Popen],
    *,
    timeout: float = STOP_TIMEOUT,
    on_kill: Callable[[str], None] | None = None,
) -> None:
    """SIGTERM every child's session, last started first; SIGKILL each one still there after `timeout`.

    `on_kill` is called with the name of each child that had not stopped in time, before it is killed.
    """
    ordered = list(reversed(children.items()))
    for _, process in ordered:
        _signal_session(process, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for name, process in ordered:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            if on_kill:
                on_kill(name)
        # Also for a child that stopped: it may have left processes in its session.
        _signal_session(process, signal.SIGKILL)
        process.wait()


def check_alive(children: Mapping[str, subprocess.Popen], *, error: type[Exception] = ProcessError) -> None:
    """Raise `error` naming the first child that has ended, and how."""
    for name, process in children.items():
        if (code := process.poll()) is not None:
            raise error(f"{name} {how_it_ended(code)} unexpectedly.")


def wait_healthy(
    urls: Mapping[str, str],
    children: Mapping[str, subprocess.Popen],
    *,
    timeout: float,
    error: type[Exception] = ProcessError,
) -> None:
    """Poll each named URL until all answer 200; raise `error` when a child ends or `timeout` passes first."""
    pending = dict(urls)
    deadline = time.monotonic() + timeout
    while True:
        check_alive(children, error=error)
        pending = {name: url for name, url in pending.items() if not _answers_ok(url)}
        if not pending:
            return
        if time.monotonic() > deadline:
            names = ", ".join(f"{name} ({url})" for name, url in pending.items())
            raise error(f"No answer 200 within {timeout:g} s from {names}.")
        time.sleep(POLL_INTERVAL)


def how_it_ended(code: int) -> str:
    """`exited with code N`, or `was killed by SIGNAME` for Popen's negative return codes."""
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def free_port() -> int:
    """A port on 127.0.0.1 that is free now; another process may still take it before the caller binds."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _signal_session(process: subprocess.Popen, signum: int) -> None:
    # start() made the child a session (and group) leader, so its pid is the group's id.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def _answers_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own http:// URL
            return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
