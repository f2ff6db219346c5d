"""URL map, and nothing else."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from tokenwire.edge import handlers, health


async def demo_page(request: web.Request) -> web.Response:
    html = (resources.files("tokenwire.edge") / "static" / "index.html").read_text()
    return web.Response(text=html, content_type="text/html")


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", demo_page)
    app.router.add_post("/v1/streams", handlers.create_stream)
    app.router.add_get("/v1/streams/{stream_id}", handlers.stream_status)
    app.router.add_get("/v1/streams/{stream_id}/events", handlers.stream_events,
                       name="stream-events")  # errors.SSE_ROUTES
    app.router.add_get("/v1/streams/{stream_id}/ws", handlers.stream_websocket)
    app.router.add_post("/v1/streams/{stream_id}/cancel", handlers.cancel_stream)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
