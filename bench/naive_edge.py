"""The naive design, as a seed-style edge would do it: one blocking ``XREAD``
per client on its own Redis connection, no hub, no resume logic beyond the
entry id. The reference Tokenwire must beat."""

from __future__ import annotations

import argparse
from typing import cast

from aiohttp import web
from aiohttp_sse import sse_response
from redis.asyncio import Redis

from bench.harness import serve_reference_edge

REDIS = web.AppKey("redis_url", str)
#: XREAD's reply with decoded responses: per stream, its (entry id, fields) pairs.
StreamReply = list[tuple[str, list[tuple[str, dict[str, str]]]]]


async def events(request: web.Request) -> web.StreamResponse:
    stream_id = request.match_info["stream_id"]
    client = Redis.from_url(request.app[REDIS], decode_responses=True,
                            client_name="naive-edge")
    last = "0-0"
    try:
        async with sse_response(request) as response:
            while True:
                reply = cast(StreamReply | None, await client.xread(
                    {f"tw:{{{stream_id}}}:events": last}, block=5000))
                for _, entries in reply or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        await response.send(fields["d"], id=entry_id, event=fields["t"])
                        if fields["t"] in ("done", "error"):
                            return response
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app[REDIS] = args.redis_url
    serve_reference_edge(app, events, args.port)


if __name__ == "__main__":
    main()
