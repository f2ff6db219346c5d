"""A deterministic token generator: the demo, tests and load tests without an API key.

The same prompt always yields the same text, paced at ``tokens_per_second``
after ``first_token_delay``: readable sentences about how the text travels,
about the last user message's topic. The text deliberately contains what
naive buffers lose: newlines, double spaces, a tab, punctuation, an emoji, a
combining mark.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator

from tokenwire.jobs import Job
from tokenwire.worker.providers.base import Delta, UpstreamError

#: What the simulated model says: readable sentences about how this very text
#: travels, with the topic of the prompt woven in. They carry what naive buffers
#: lose: paragraph breaks, a double space, a tab, an emoji, a combining mark.
_SENTENCES = (
    "You asked: “{topic}”",
    "This answer comes from Tokenwire's simulated model:  its words are made up, but they "
    "stream the way a real model's do.",
    "Each token leaves a worker, lands in a Redis stream, and reaches you through an edge.",
    "When a connection drops, the page resumes from its last cursor, with no gap and no "
    "duplicate.",
    "Think of an answer as a river of small pieces 🚀 that must arrive in order.",
    "A café́ with slow Wi-Fi is the classic test of that promise.",
    "Open this conversation in another tab and the same words arrive there at the same time.",
    "To hear a real model, set OPENAI_API_KEY (and OPENAI_BASE_URL for a local server) and "
    "start again.",
    "Cancelling stops the model within a second;\twhat was already written stays.",
    "So much for “{topic}”: a queue, a buffer, a stream and a cursor do the rest.",
)
_DEFAULT_LENGTH = 120
_TOPIC_WORDS = 8


def topic_of(prompt: str) -> str:
    """What the prompt asks, to quote: its first words, on one line."""
    words = prompt.split()
    if not words:
        return "…"
    quoted = " ".join(words[:_TOPIC_WORDS])
    return quoted + ("…" if len(words) > _TOPIC_WORDS else "")


def simulated_tokens(prompt: str, count: int, topic: str | None = None) -> list[str]:
    """The token sequence for ``prompt`` (and its ``topic``, by default the
    prompt itself): a pure function, so tests can predict it. ``count`` words,
    then a closing token."""
    rng = random.Random(hashlib.sha256(prompt.encode()).digest())
    subject = topic_of(prompt if topic is None else topic)
    order = [0, *rng.sample(range(1, len(_SENTENCES)), len(_SENTENCES) - 1)]
    tokens: list[str] = []
    while len(tokens) < count:
        for sentence_index in order:
            words = _SENTENCES[sentence_index].format(topic=subject).split(" ")
            if tokens:  # a paragraph now and then, else one space
                words[0] = ("\n\n" if rng.random() < 0.3 else " ") + words[0]
            tokens += [words[0], *(" " + word for word in words[1:])]
        order = rng.sample(range(len(_SENTENCES)), len(_SENTENCES))
    tokens = tokens[:count]
    tokens.append("\n" if tokens[-1].endswith((".", ":")) else ".")
    return tokens


class SimulatedProvider:
    name = "simulated"

    def __init__(self, tokens_per_second: float, first_token_delay: float) -> None:
        self._interval = 1.0 / tokens_per_second
        self._first_token_delay = first_token_delay

    async def stream(self, job: Job, prefix: str = "") -> AsyncIterator[Delta]:
        prompt = "\n".join(m["content"] for m in job.messages)
        asked = [m["content"] for m in job.messages if m["role"] == "user"]
        limit = job.max_tokens
        planned = simulated_tokens(prompt, _DEFAULT_LENGTH, asked[-1] if asked else prompt)
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
