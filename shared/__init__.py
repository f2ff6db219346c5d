"""Tokenwire: deliver LLM output to people in real time, losslessly.

Import map (one distribution, one namespace):

- ``tokenwire``          settings, wire models, cursor, Redis keys and scripts,
                         token buffers, the client SDK (source: ``shared/``)
- ``tokenwire.worker``   the generator worker and LLM providers (``services/worker/``)
- ``tokenwire.edge``     the aiohttp edge: HTTP API, SSE, WebSocket, hub (``services/edge/``)
"""

__version__ = "0.1.0"
