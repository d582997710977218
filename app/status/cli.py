"""``banditd status [--json]``: exit 0 when all is well, 1 when something is wrong, 2 when
Redis cannot be read (nothing can be checked)."""

from __future__ import annotations

import argparse
import json

import redis

from app.cli_args import number
from app.settings import Settings
from app.status.check import gather, redis_unreachable, render


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``banditd status``' options on ``parser``."""
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument(
        "--sample-seconds",
        type=number(0, 600, open_low=True),
        default=1.0,
        help="read the streams twice this far apart to see whether a backlog grows (default 1)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the status; the exit code says whether something is wrong."""
    from app.services import build_services

    services = build_services(settings)
    try:
        status = gather(services, sample_seconds=args.sample_seconds)
    except redis.RedisError as exc:
        if args.json:
            print(json.dumps(redis_unreachable(exc), indent=2))
        else:
            print(f"PROBLEM redis: unavailable: {exc}")
        return 2
    finally:
        services.engine.dispose()
    print(json.dumps(status.as_json(), indent=2) if args.json else render(status))
    return 1 if status.problems else 0
