"""The ``banditd`` console command: ``migrate``, ``worker``, ``simulate`` and ``evaluate``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from app import evaluate, simulate
from app.config import ConfigError
from app.settings import Settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

log = logging.getLogger("banditd")


def migrate(settings: Settings, revision: str = "head") -> None:
    """Bring the Postgres schema to ``revision`` with Alembic."""
    from alembic import command
    from alembic.config import Config

    from app.services import sqlalchemy_url

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option(
        "sqlalchemy.url", sqlalchemy_url(settings.database_url).replace("%", "%%")
    )
    command.upgrade(config, revision)


def run_worker(settings: Settings) -> None:
    """Run the online update worker until SIGINT/SIGTERM (a second one forces)."""
    from app.services import build_services
    from app.worker import Worker

    worker = Worker.from_services(build_services(settings))

    def stop(signum: int, _frame) -> None:
        if worker.stop_requested:
            raise KeyboardInterrupt
        log.info("stopping after the current batch (signal %d)", signum)
        worker.request_stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    log.info("worker %s started; config %s", worker.consumer, settings.config_path)
    try:
        worker.run()
    finally:
        worker.release()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``banditd`` command."""
    parser = argparse.ArgumentParser(prog="banditd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="create or upgrade the Postgres schema")
    commands.add_parser("worker", help="run the online update worker")
    simulate.add_arguments(
        commands.add_parser("simulate", help="run the simulation suite (in-process or over HTTP)")
    )
    evaluate.add_arguments(
        commands.add_parser("evaluate", help="off-policy evaluation of another config from the log")
    )
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    settings = Settings.from_env()
    try:
        if args.command == "migrate":
            migrate(settings)
        elif args.command == "worker":
            run_worker(settings)
        elif args.command == "simulate":
            return simulate.run(args, settings)
        elif args.command == "evaluate":
            return evaluate.run(args, settings)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
