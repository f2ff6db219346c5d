"""URL map, and nothing else."""

from __future__ import annotations

from aiohttp import web

from tokenwire.edge import handlers, health
from tokenwire.edge.pages import setup_pages


def setup_routes(app: web.Application) -> None:
    setup_pages(app)
    app.router.add_post("/v1/streams", handlers.create_stream)
    app.router.add_get("/v1/streams/{stream_id}", handlers.stream_status)
    app.router.add_get("/v1/streams/{stream_id}/events", handlers.stream_events)
    app.router.add_get("/v1/streams/{stream_id}/ws", handlers.stream_websocket)
    app.router.add_post("/v1/streams/{stream_id}/cancel", handlers.cancel_stream)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
