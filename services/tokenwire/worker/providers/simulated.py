"""A deterministic token generator: the demo, tests and load tests without an API key.

The same prompt always yields the same text, paced at ``tokens_per_second``
after ``first_token_delay``. The text deliberately contains what naive buffers
lose: newlines, double spaces, a tab, punctuation, an emoji, a combining mark.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator

from tokenwire.jobs import Job
from tokenwire.worker.providers.base import Delta, UpstreamError

_WORDS = (
    "stream token edge worker valkey cursor resume epoch buffer latency "
    "delivery frame browser socket replay event append fan-out hub client"
).split()
_DEFAULT_LENGTH = 120


def simulated_tokens(prompt: str, count: int) -> list[str]:
    """The token sequence for ``prompt``: a pure function, so tests can predict it."""
    rng = random.Random(hashlib.sha256(prompt.encode()).digest())
    tokens: list[str] = []
    for index in range(count):
        word = rng.choice(_WORDS)
        roll = rng.random()
        if index == 0:
            tokens.append(word.capitalize())
        elif roll < 0.06:
            tokens.append(".\n\n" + word.capitalize())
        elif roll < 0.10:
            tokens.append(",  " + word)
        elif roll < 0.12:
            tokens.append(" café\u0301 🚀")
        elif roll < 0.13:
            tokens.append("\t" + word)
        else:
            tokens.append(" " + word)
    tokens.append(".")
    return tokens


class SimulatedProvider:
    name = "simulated"

    def __init__(self, tokens_per_second: float, first_token_delay: float) -> None:
        self._interval = 1.0 / tokens_per_second
        self._first_token_delay = first_token_delay

    async def stream(self, job: Job, prefix: str = "") -> AsyncIterator[Delta]:
        prompt = "\n".join(m["content"] for m in job.messages)
        limit = job.max_tokens
        planned = simulated_tokens(prompt, _DEFAULT_LENGTH)
        tokens = planned if limit is None else planned[:limit]
        finish_reason = "length" if limit is not None and limit < len(planned) else "stop"
        if prefix:
            tokens = _after_prefix(tokens, prefix)
        loop = asyncio.get_running_loop()
        start = loop.time() + self._first_token_delay
        for index, token in enumerate(tokens):
            # Pace against the start time, not the previous token: no drift.
            delay = start + index * self._interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield Delta(text=token)
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(tokens),
                 "total_tokens": len(prompt.split()) + len(tokens)}
        yield Delta(finish_reason=finish_reason, usage=usage)

    async def aclose(self) -> None:
        return None


def _after_prefix(tokens: list[str], prefix: str) -> list[str]:
    """The tokens that follow ``prefix`` (a token straddling its end is cut)."""
    text = "".join(tokens)
    if not text.startswith(prefix):
        raise UpstreamError("continue_mismatch", "the text so far is not this model's", False)
    skip, rest = len(prefix), []
    for token in tokens:
        if skip >= len(token):
            skip -= len(token)
            continue
        rest.append(token[skip:])
        skip = 0
    return rest
