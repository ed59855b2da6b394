"""The CPU a benchmark costs the whole machine, and PostgreSQL's share of it.

Runs the command after `--` and reads, from /proc before and after it, the CPU time of the
PostgreSQL server (the postmaster, the backends it has reaped and those still running) and
of the whole machine. So it needs the server on this machine, visible to this user's /proc.
Every benchmarked process of this project shares the machine with PostgreSQL; this says how
much of the run's wall time two cores could at best have saved.

    python bench/cpu.py -- .venv/bin/python bench/ingest.py --sizes 1000000 --repeat 1 --scenarios cold
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import environment

TICKS = os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    environment.add_database_url_argument(parser)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="The command to measure, after --.")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    with environment.connect(environment.check_database_url(args.database_url)) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    postmaster = int(_stat(backend)[1])  # a backend's parent is the postmaster
    server, machine, started = _server_cpu(postmaster), _machine_cpu(), time.monotonic()
    code = subprocess.call(command)
    server, machine = _server_cpu(postmaster) - server, _machine_cpu() - machine
    wall = time.monotonic() - started
    print(
        f"wall {wall:.1f} s; CPU: PostgreSQL {server:.1f} s, the whole machine {machine:.1f} s "
        f"({os.cpu_count()} cores: at least {machine / os.cpu_count():.1f} s of wall time)"
    )
    sys.exit(code)


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def _server_cpu(postmaster: int) -> float:
    """Seconds of CPU of the postmaster, of its children it has waited for, and of those alive."""
    fields = _stat(postmaster)
    ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    for child in children:
        try:
            child_fields = _stat(int(child))
        except FileNotFoundError:  # ended meanwhile; the postmaster's cutime has it from now on
            continue
        ticks += int(child_fields[11]) + int(child_fields[12])
    return ticks / TICKS


def _machine_cpu() -> float:
    """Seconds of CPU the machine spent not idle (all cores), from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(value) for value in stat.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICKS  # minus idle and iowait


if __name__ == "__main__":
    main()
