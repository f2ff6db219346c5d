"""Processes and measurements for the benchmark: start by PID, stop by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_reference_edge(app: web.Application,
                         events: Callable[[web.Request], Awaitable[web.StreamResponse]],
                         port: int) -> None:
    """Run a reference edge (raw or naive) with the routes the load generator uses."""
    app.router.add_get("/v1/streams/{stream_id}/events", events)
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None,
                handler_cancellation=True)


class Child:
    def __init__(self, name: str, args: list[str], logs: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = logs / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                [sys.executable, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        self.process = psutil.Process(self.popen.pid)

    def wait_http(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(url)

    def wait_file(self, path: Path, timeout: float) -> None:
        """Wait for this child to write ``path`` (its readiness signal)."""
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not write {path}")
            time.sleep(0.1)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


class CpuSampler:
    """CPU seconds and RSS of some processes (one edge, or two; the six nodes
    of a cluster) over a window, added up."""

    def __init__(self, *processes: psutil.Process) -> None:
        self.processes = processes
        self._cpu0 = 0.0
        self._t0 = 0.0

    def rss_mib(self) -> float:
        return float(sum(p.memory_info().rss for p in self.processes) / 2**20)

    def _cpu_seconds(self) -> float:
        return float(sum(t.user + t.system for t in (p.cpu_times() for p in self.processes)))

    def start(self) -> None:
        self._cpu0, self._t0 = self._cpu_seconds(), time.monotonic()

    def cpu_percent(self) -> float:
        return float(100 * (self._cpu_seconds() - self._cpu0) / (time.monotonic() - self._t0))
