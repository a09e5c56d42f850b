"""What the tests that start JupyterLab share: a free port and the command.

The server binds 127.0.0.1 only, on a port nothing listens on, with a
token; its config, data, runtime, settings and workspace folders live under
a temporary ``home`` so a user's own Lab setup never leaks in.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

LAB_DIRS = {
    "JUPYTER_CONFIG_DIR": "config",
    "JUPYTER_DATA_DIR": "data",
    "JUPYTER_RUNTIME_DIR": "runtime",
    "JUPYTERLAB_SETTINGS_DIR": "settings",
    "JUPYTERLAB_WORKSPACES_DIR": "workspaces",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lab_dirs(home: Path) -> dict[str, str]:
    """Environment variables that put every Jupyter folder under home."""
    return {name: str(home / folder) for name, folder in LAB_DIRS.items()}


def lab_command(port: int, token: str, *extra: str) -> list[str]:
    """`jupyter lab` on 127.0.0.1:port with a token, no browser, no news."""
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser"]
    cmd += ["--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0"]
    cmd += [f"--IdentityProvider.token={token}", "--LabApp.news_url=None", *extra]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # jupyter refuses to run as root otherwise
    return cmd
