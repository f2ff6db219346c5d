"""URL map, and nothing else."""

from __future__ import annotations

from aiohttp import web

from tokenwire.edge import conversations, handlers, health, openai_shape, responses, ui_chat
from tokenwire.edge import keys as appkeys
from tokenwire.edge.admin import setup_admin_routes
from tokenwire.edge.chat_completions import chat_completions
from tokenwire.edge.conversation_ws import conversation_websocket
from tokenwire.edge.cors import setup_cors
from tokenwire.edge.openapi import setup_openapi
from tokenwire.edge.pages import setup_pages

_CONVERSATION = "/v1/conversations/{conversation_id}"


def setup_routes(app: web.Application) -> None:
    settings = app[appkeys.SETTINGS]
    setup_pages(app)
    if settings.demo_api_key is not None:  # tokenwire dev: the demo's backend stand-in
        app.router.add_post("/demo/streams", handlers.create_demo_stream)
        app.router.add_post("/demo/conversations", conversations.create_demo_conversation)
    # What a browser app on another origin may call (CORS). Not the WebSocket:
    # browsers do not apply CORS to it; its handler checks the Origin.
    browser_api = [
        app.router.add_post("/v1/streams", handlers.create_stream),
        app.router.add_get("/v1/streams/{stream_id}", handlers.stream_status),
        app.router.add_get("/v1/streams/{stream_id}/events", handlers.stream_events,
                           name="stream-events"),  # errors.SSE_ROUTES
        app.router.add_post("/v1/streams/{stream_id}/cancel", handlers.cancel_stream),
        app.router.add_post("/v1/conversations", conversations.create_conversation),
        app.router.add_get(f"{_CONVERSATION}", conversations.get_conversation),
        app.router.add_post(f"{_CONVERSATION}/messages", conversations.post_message),
        app.router.add_post(f"{_CONVERSATION}/cancel", conversations.cancel_conversation),
        # the AI SDK's useChat (DefaultChatTransport): its chat route and resume URL
        app.router.add_post("/v1/ui/chat", ui_chat.ui_chat),
        app.router.add_get("/v1/ui/chat/{chat_id}/stream", ui_chat.resume_ui_chat),
    ]
    app.router.add_get("/v1/streams/{stream_id}/ws", handlers.stream_websocket)
    app.router.add_get(f"{_CONVERSATION}/ws", conversation_websocket)
    # The OpenAI facades: backends (an API key), not browsers: no CORS.
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", openai_shape.list_models)
    app.router.add_get("/v1/models/{model}", openai_shape.get_model)
    app.router.add_post("/v1/responses", responses.create_response)
    app.router.add_get("/v1/responses/{response_id}", responses.get_response)
    app.router.add_post("/v1/responses/{response_id}/cancel", responses.cancel_response)
    setup_admin_routes(app)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
    setup_openapi(app, settings)
    setup_cors(app, settings, browser_api)
