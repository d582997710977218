"""The ``banditd`` console command: migrate, worker, rebuild, simulate, evaluate, report,
deadletters, score."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from pathlib import Path

from app.cli_args import number
from app import deadletters_cli, evaluate, simulate
from app.analytics import report
from app.config import ConfigError
from app.export import cli as export_cli
from app.logs import configure_logging
from app.metrics import worker_server
from app.settings import Settings
from app.score import cli as score_cli
from app.status import cli as status_cli

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


# How often a running worker renews its leases (they last 5 s) and closes reward windows.
HOUSEKEEPING_SECONDS = 0.5
# How often a running worker makes day partitions ahead and applies retention (app/retention/).
RETENTION_SECONDS = 3600.0


def run_worker(settings: Settings) -> None:
    """Run the online update worker until SIGINT/SIGTERM (a second one forces)."""
    from app.metrics.worker import timed_services
    from app.services import build_services
    from app.worker import Worker

    services = timed_services(build_services(settings))  # Postgres write times in its metrics
    worker = Worker.from_services(
        services,
        snapshot_every=settings.snapshot_every,
        snapshot_seconds=settings.snapshot_seconds,
        views_refresh_seconds=settings.views_refresh_seconds,
        linger_ms=settings.worker_linger_ms,
        housekeeping_seconds=HOUSEKEEPING_SECONDS,
        retention_days=settings.retention_days,
        retention_seconds=RETENTION_SECONDS,
    )

    def stop(signum: int, _frame) -> None:
        if worker.stop_requested:
            raise KeyboardInterrupt
        log.info("stopping after the current batch (signal %d)", signum)
        worker.request_stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # A batch allocates tens of thousands of short-lived, acyclic objects (entries,
    # events, rows) that reference counting frees; at the default thresholds the
    # cyclic collector ran every few hundred of them and rescanned the long-lived
    # heap, about 15% of the worker's time. Freeze what start-up made, collect rarely.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    log.info("worker %s started; config %s", worker.consumer, settings.config_path)
    worker_server.serve_for(worker, services, settings)  # BANDITD_WORKER_METRICS_PORT
    try:
        worker.run()
    finally:
        worker.close()


def run_rebuild(
    settings: Settings,
    experiment: str,
    *,
    verify: bool,
    use_snapshots: bool = True,
    tolerance: float = 1e-9,
) -> int:
    """Rebuild (or with ``verify``, check) an experiment's parameters from the log; exit status.

    0: done, or the live model matches the log; 1: it differs; 2: the log
    cannot be replayed or the parameters cannot be replaced now.
    """
    from app import rebuild
    from app.live_model import LiveModelBusy
    from app.services import database_engine, redis_client

    client = redis_client(settings.redis_url)
    engine = database_engine(settings.database_url)
    try:
        if verify:
            checked = rebuild.verify(
                client, engine, experiment, tolerance=tolerance, use_snapshots=use_snapshots
            )
            print(rebuild.format_verification(checked))
            return 0 if checked.ok else 1
        rebuilt = rebuild.rebuild(client, engine, experiment, use_snapshots=use_snapshots)
        print(rebuild.format_rebuild(rebuilt))
        return 0
    except (rebuild.RebuildError, LiveModelBusy) as exc:
        log.error("%s", exc)
        return 2
    finally:
        engine.dispose()
        client.close()


def run_retention(settings: Settings) -> int:
    """Make the log's day partitions ahead and drop what is past retention now; exit status."""
    import datetime as dt

    from app.config import load_config
    from app.retention.keeper import apply_retention
    from app.services import database_engine

    engine = database_engine(settings.database_url)
    try:
        now = dt.datetime.now(dt.timezone.utc)
        config = load_config(settings.config_path)
        done = apply_retention(engine, config, settings.retention_days, now)
    finally:
        engine.dispose()
    print(done.describe())
    return 0 if done.locked else 1


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
    report.add_arguments(
        commands.add_parser(
            "report",
            help="what an experiment earned: decisions, reward per arm, lift over the holdout",
        )
    )
    deadletters_cli.add_arguments(
        commands.add_parser(
            "deadletters",
            help="list, replay or drop the stream entries the worker could not process",
        )
    )
    export_cli.add_arguments(
        commands.add_parser("export", help="an experiment's log as Parquet, partitioned by day")
    )
    score_cli.add_arguments(
        commands.add_parser(
            "score",
            help="rank arms for a file of contexts (JSON lines or Parquet) with the live model",
        )
    )
    status_cli.add_arguments(
        commands.add_parser(
            "status",
            help="each experiment's config version, lease, backlog, learning and log; "
            "exit 1 if something is wrong",
        )
    )
    rebuild = commands.add_parser(
        "rebuild",
        help="recompute an experiment's arm parameters from the Postgres log",
        description="Replay the log (from the latest model snapshot) and write the parameters "
        "to Redis, or with --verify compare them with the live ones (exit 1 if any differ).",
    )
    rebuild.add_argument("--experiment", required=True, help="the experiment to rebuild")
    rebuild.add_argument(
        "--verify", action="store_true", help="compare with the live parameters, write nothing"
    )
    rebuild.add_argument(
        "--no-snapshots",
        action="store_true",
        help="replay the whole log, ignoring snapshots (after retention: from the snapshot "
        "the log is kept since)",
    )
    rebuild.add_argument(
        "--tolerance",
        type=number(0),
        default=1e-9,
        help="largest accepted difference (relative and absolute, per value; default 1e-9)",
    )
    commands.add_parser(
        "retention",
        help="make the log's day partitions ahead and drop the days past retention now "
        "(BANDITD_RETENTION_DAYS, retention_days per experiment); the worker does it hourly",
    )
    args = parser.parse_args(argv)
    import psycopg2
    import sqlalchemy.exc

    from app.cluster.client import UNAVAILABLE

    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)  # BANDITD_LOG_FORMAT, _LEVEL
    try:
        if args.command == "migrate":
            migrate(settings)
        elif args.command == "worker":
            run_worker(settings)
        elif args.command == "simulate":
            return simulate.run(args, settings)
        elif args.command == "evaluate":
            return evaluate.run(args, settings)
        elif args.command == "deadletters":
            return deadletters_cli.run(args, settings)
        elif args.command == "report":
            return report.run(args, settings)
        elif args.command == "export":
            return export_cli.run(args, settings)
        elif args.command == "status":
            return status_cli.run(args, settings)
        elif args.command == "score":
            return score_cli.run(args, settings)
        elif args.command == "retention":
            return run_retention(settings)
        elif args.command == "rebuild":
            return run_rebuild(
                settings,
                args.experiment,
                verify=args.verify,
                use_snapshots=not args.no_snapshots,
                tolerance=args.tolerance,
            )
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    # what the command's user can mend, in one line rather than a traceback
    except UNAVAILABLE as exc:
        log.error("cannot reach Redis (REDIS_URL): %s", _first_line(exc))
        return 1
    except (sqlalchemy.exc.OperationalError, psycopg2.OperationalError) as exc:
        log.error("cannot reach Postgres (DATABASE_URL): %s", _first_line(exc))
        return 1
    except sqlalchemy.exc.ProgrammingError as exc:
        if "does not exist" not in str(exc):
            raise
        log.error("the log's tables are missing: run `banditd migrate` (%s)", _first_line(exc))
        return 1
    except (OSError, OverflowError) as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return 1
    return 0


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
