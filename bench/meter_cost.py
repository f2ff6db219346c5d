"""What the delivery path's observations cost per frame, without the noise of a shared box.

    python -m bench.meter_cost              # 200k frames, 7 rounds

Times ``DeliveryMeter.wrote`` (what ``write_now`` calls for each live frame)
and ``wrote_all`` (a batch of 8, as ``send`` does) with the observations on
(Redis' clock, delivery lag, time to first token) and off
(``TOKENWIRE_DELIVERY_METRICS=false``: events sent only), rounds interleaved,
best round kept. The end-to-end figure is ``make bench``'s
``tokenwire-nometrics`` variant (``--designs tokenwire,tokenwire-nometrics``);
on a busy 2-core box its noise is far larger than this cost, which is why this
exists.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import cast

from redis.asyncio import Redis

from tokenwire.edge.delivery_meter import DeliveryMeter
from tokenwire.edge.metrics import EdgeMetrics
from tokenwire.events import Event
from tokenwire.redis_clock import RedisClock


def per_frame_ns(meter: DeliveryMeter, events: list[Event], batch: bool) -> float:
    started = time.perf_counter_ns()
    if batch:
        for start in range(0, len(events), 8):
            meter.wrote_all(events[start:start + 8])
    else:
        for event in events:
            meter.wrote(event)
    return (time.perf_counter_ns() - started) / len(events)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.meter_cost")
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    now_us = int(time.time() * 1e6)
    events = [Event("e", seq, "token", '{"content":"word "}', now_us - 2000)
              for seq in range(1, args.frames + 1)]
    clock = RedisClock(cast(Redis, None))  # never sampled: this host's clock
    best: dict[tuple[str, bool], float] = {}
    for _ in range(args.rounds):
        for on in (True, False):
            for batch in (False, True):
                meter = DeliveryMeter(EdgeMetrics(), "sse", clock if on else None,
                                      created_at_ms=now_us // 1000)
                cost = per_frame_ns(meter, events, batch)
                key = ("on" if on else "off", batch)
                best[key] = min(best.get(key, cost), cost)
    lines = ["| write | observations on, ns/frame | off, ns/frame | cost of the "
             "observations, ns/frame | at 10k frames/s, % of a core |", "|---|---|---|---|---|"]
    for batch, name in ((False, "write_now (one frame)"), (True, "send (batches of 8)")):
        cost_on, cost_off = best[("on", batch)], best[("off", batch)]
        lines.append(f"| {name} | {cost_on:.0f} | {cost_off:.0f} | {cost_on - cost_off:.0f} | "
                     f"{(cost_on - cost_off) * 10_000 / 1e9 * 100:.2f} |")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
