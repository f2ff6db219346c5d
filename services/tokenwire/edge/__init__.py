"""The stateless aiohttp edge: HTTP API, SSE and WebSocket delivery, the per-process hub."""
