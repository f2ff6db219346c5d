"""``tokenwire keys create|list|revoke``: API keys from the command line.

Talks to Redis directly (``TOKENWIRE_REDIS_URL``), so an operator can issue
the first key before any admin key exists. The new key is written to stdout
once; nothing else ever shows it again.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import ValidationError

from tokenwire.apikeys import LIMIT_FIELDS, ApiKey, KeySpec, KeyStore
from tokenwire.redis_client import create_redis
from tokenwire.settings import Settings


def add_keys_parser(commands: Any) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke tenants' API keys")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="issue a key (shown once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--models", nargs="+", metavar="MODEL",
                        help="models the key may use (default: any)")
    for name in LIMIT_FIELDS:
        create.add_argument(f"--{name.replace('_', '-')}", type=int, metavar="N",
                            dest=name, help=f"{name.replace('_', ' ')} (default: no limit)")
    create.add_argument("--json", action="store_true", help="one JSON object")
    listing = actions.add_parser("list", help="every key, without secrets")
    listing.add_argument("--json", action="store_true", help="one JSON object")
    revoke = actions.add_parser("revoke", help="revoke a key (every edge refuses it in seconds)")
    revoke.add_argument("key_id")


async def run_keys_command(settings: Settings, args: argparse.Namespace) -> int:
    redis = create_redis(settings, "tw-cli", 2)
    store = KeyStore(redis)
    try:
        if args.keys_command == "create":
            return await _create(store, args)
        if args.keys_command == "list":
            return await _list(store, args)
        if not await store.revoke(args.key_id):
            sys.stderr.write(f"no API key with id {args.key_id!r}\n")
            return 1
        sys.stdout.write(f"revoked {args.key_id}\n")
        return 0
    finally:
        await redis.aclose()


async def _create(store: KeyStore, args: argparse.Namespace) -> int:
    fields = {name: getattr(args, name) for name in ("tenant", "models", *LIMIT_FIELDS)}
    try:
        spec = KeySpec.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        sys.stderr.write(f"invalid key: {problems}\n")
        return 2
    record, key = await store.create(spec)
    if args.json:
        sys.stdout.write(json.dumps({**record.public(), "key": key}) + "\n")
    else:
        sys.stdout.write(f"{_describe(record)}\nkey: {key}\n"
                         "(the key is shown this once: store it now)\n")
    return 0


async def _list(store: KeyStore, args: argparse.Namespace) -> int:
    records = await store.list()
    if args.json:
        sys.stdout.write(json.dumps({"keys": [r.public() for r in records]}) + "\n")
    else:
        sys.stdout.write("".join(_describe(record) + "\n" for record in records))
    return 0


def _describe(record: ApiKey) -> str:
    limits = " ".join(f"{name}={getattr(record, name)}" for name in LIMIT_FIELDS
                      if getattr(record, name) is not None)
    models = ",".join(record.models) if record.models is not None else "any"
    return (f"{record.key_id} tenant={record.tenant} models={models}"
            + (f" {limits}" if limits else ""))
