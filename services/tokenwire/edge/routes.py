"""URL map, and nothing else."""

from __future__ import annotations

from aiohttp import web

from tokenwire.edge import handlers, health
from tokenwire.edge import keys as appkeys
from tokenwire.edge.admin import setup_admin_routes
from tokenwire.edge.cors import setup_cors
from tokenwire.edge.pages import setup_pages


def setup_routes(app: web.Application) -> None:
    settings = app[appkeys.SETTINGS]
    setup_pages(app)
    if settings.demo_api_key is not None:  # tokenwire dev: the demo's backend stand-in
        app.router.add_post("/demo/streams", handlers.create_demo_stream)
    # What a browser app on another origin may call (CORS). Not the WebSocket:
    # browsers do not apply CORS to it; its handler checks the Origin.
    browser_api = [
        app.router.add_post("/v1/streams", handlers.create_stream),
        app.router.add_get("/v1/streams/{stream_id}", handlers.stream_status),
        app.router.add_get("/v1/streams/{stream_id}/events", handlers.stream_events,
                           name="stream-events"),  # errors.SSE_ROUTES
        app.router.add_post("/v1/streams/{stream_id}/cancel", handlers.cancel_stream),
    ]
    app.router.add_get("/v1/streams/{stream_id}/ws", handlers.stream_websocket)
    setup_admin_routes(app)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
    setup_cors(app, settings, browser_api)
