"""``make bench``: Tokenwire's edge against a raw aiohttp broadcaster and a naive
one-XREAD-per-client edge, on the same load, in one run.

Processes: Valkey · ``producer`` (appends timestamped token events through the
real append script) · one edge under test · ``loadgen`` (holds the clients).
Token content is ``t<ns>`` — the wall clock just before the append — so every
client measures append→receipt latency per token on the same clock.
"""
