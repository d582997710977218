"""``banditd deadletters list|replay|drop --experiment NAME``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from app.cli_args import whole
from app.deadletters import DeadLetter, DeadLetters
from app.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``banditd deadletters``' actions and options on ``parser``."""
    parser.add_argument(
        "action",
        choices=("list", "replay", "drop"),
        help="list the dead letters, put them back in the event stream, or delete them",
    )
    parser.add_argument("--experiment", required=True, help="the experiment whose dead letters")
    parser.add_argument(
        "--id",
        action="append",
        dest="ids",
        metavar="ENTRY_ID",
        help="only this dead letter (repeatable); default: all of them",
    )
    parser.add_argument("--json", action="store_true", help="list: one JSON object per line")
    parser.add_argument(
        "--limit", type=whole(1), default=None, help="list: at most this many (a number > 0)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``banditd deadletters``; returns the process exit code (2: no such dead letter)."""
    from app.services import redis_client

    client = redis_client(settings.redis_url)
    letters = DeadLetters(client)
    try:
        if args.action == "list":
            shown = letters.list(args.experiment, None if args.ids else args.limit)
            if args.ids:
                missing = sorted(set(args.ids) - {letter.entry_id for letter in shown})
                if missing:
                    print(f"error: {args.experiment} has no dead letter {missing}", file=sys.stderr)
                    return 2
                shown = [letter for letter in shown if letter.entry_id in args.ids]
            for letter in shown:
                print(_json(letter) if args.json else _line(letter))
            if not args.json:
                print(
                    f"{args.experiment}: {letters.count(args.experiment)} dead letters "
                    f"({letters.total(args.experiment)} ever)"
                )
            return 0
        try:
            if args.action == "replay":
                done = letters.replay(args.experiment, args.ids)
                print(f"{args.experiment}: replayed {done} dead letters into the event stream")
            else:
                done = letters.drop(args.experiment, args.ids)
                print(f"{args.experiment}: dropped {done} dead letters")
        except KeyError as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return 2
        return 0
    finally:
        client.close()


def _when(at_ms: int) -> str:
    return dt.datetime.fromtimestamp(at_ms / 1000, dt.timezone.utc).isoformat(timespec="seconds")


def _line(letter: DeadLetter) -> str:
    when, what = _when(letter.at_ms), letter.summary()
    return f"{letter.entry_id}  {when}  {letter.stage:8}  {what}: {letter.error}"


def _json(letter: DeadLetter) -> str:
    return json.dumps(
        {
            "entry_id": letter.entry_id,
            "stage": letter.stage,
            "error": letter.error,
            "at": _when(letter.at_ms),
            "fields": {
                k.decode(errors="replace"): v.decode(errors="replace")
                for k, v in letter.fields.items()
                if k != b"x"  # raw feature bytes
            },
        },
        ensure_ascii=False,
    )
