"""``banditd score --experiment NAME --input FILE --output FILE``: rank arms for a file of contexts.

Scores every context with the experiment's policy on its live model (the
parameters ``/choose`` uses now; ``--model snapshot`` for the latest copy in
Postgres), streamed a chunk at a time, and writes each row back with its
ranked ``arms``, their ``scores`` and ``propensities``. Nothing is recorded:
the decisions are not logged and nothing is learned. A progress bar goes to
stderr, a JSON summary to stdout. Exit codes: 0 done, 1 Redis or Postgres
unavailable, 2 bad arguments or input (the message says which row or line).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import redis
import sqlalchemy.exc

from app.cli_args import whole
from app.config import ConfigError, Experiment, load_config, valid_name
from app.live_model import LiveModelBusy
from app.score.columns import encode_batch
from app.score.files import (
    FORMATS,
    InputError,
    ScoredWriter,
    format_of,
    input_size,
    parquet_schema,
    read_chunks,
)
from app.score.model import (
    LoadedModel,
    ModelUnavailable,
    arm_names,
    estimator,
    live_model,
    snapshot_model,
)
from app.score.progress import ProgressBar
from app.score.record import DecisionRecorder, RecordRefused
from app.score.scorers import OneModelScorer, SegmentScorer
from app.settings import Settings
from bandits import FeatureError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``banditd score``'s options on ``parser``."""
    parser.add_argument("--experiment", required=True, help="an experiment of BANDITD_CONFIG")
    parser.add_argument("--input", required=True, type=Path, help="contexts: JSON lines or Parquet")
    parser.add_argument("--output", required=True, type=Path, help="where the scored rows go")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="of the input and the output (default: parquet for .parquet/.pq, else jsonl)",
    )
    parser.add_argument("--k", type=int, default=1, help="arms ranked per row (default 1)")
    parser.add_argument(
        "--candidates", help="comma-separated arms to rank (default: every configured arm)"
    )
    parser.add_argument(
        "--model",
        choices=("live", "snapshot"),
        default="live",
        help="the live parameters in Redis (default) or the latest snapshot in Postgres",
    )
    parser.add_argument(
        "--segment",
        help="for an experiment with segment_by: score every row with this segment's model "
        "(default: each row with its own segment's)",
    )
    parser.add_argument("--seed", type=whole(0), help="seeds exploration and tie-breaks")
    parser.add_argument(
        "--record",
        action="store_true",
        help="log each row as a decision (its decision_id in the output) for rewards to "
        "come: an offline send",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Score ``args.input`` into ``args.output``; the exit code."""
    fmt = args.format or format_of(args.input)
    try:
        exp = load_config(settings.config_path).get(args.experiment)
        if exp is None:
            return _fail(f"no experiment named {args.experiment!r} in {settings.config_path}")
        configured = exp
        if args.segment is not None:
            if exp.segment_by is None:
                return _fail(f"{exp.name} has no segment_by: --segment does not apply")
            if not valid_name(args.segment):
                return _fail(f"--segment {args.segment!r} is not a valid segment value")
            exp = exp.for_segment(args.segment)
        arms = None if args.candidates is None else tuple(args.candidates.split(","))
        if arms is not None and not exp.dynamic:
            unknown = [a for a in arms if a not in exp.arm_positions]
            if unknown:
                return _fail(f"{unknown[0]!r} is not an arm of {exp.name}")
        names = arm_names(exp, arms)
        if not 1 <= args.k <= len(names):
            return _fail(f"--k must be between 1 and {len(names)} (the arms), got {args.k}")
        if not args.input.is_file():
            return _fail(f"{args.input}: no such file")
        with ModelSource(args.model, settings, arms) as source:
            summary = score_file(args, settings, fmt, exp, configured, names, source)
    except (ConfigError, ModelUnavailable, InputError, RecordRefused) as exc:
        return _fail(str(exc))
    except FeatureError as exc:
        return _fail(f"{args.input}: {exc}")
    except (redis.RedisError, sqlalchemy.exc.SQLAlchemyError, LiveModelBusy) as exc:
        print(f"banditd score: Redis or Postgres: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


def score_file(
    args: argparse.Namespace,
    settings: Settings,
    fmt: str,
    exp: Experiment,
    configured: Experiment,
    names: tuple[str, ...],
    source: "ModelSource",
) -> dict:
    """Stream the input through the estimator(s) into the output; a summary of what was done."""
    rng = np.random.default_rng(args.seed)
    stream = _stream(settings) if args.record else None
    candidates = source.arms
    summary: dict = {"experiment": exp.name, "segment": exp.segment}
    if exp.segment_by is not None and exp.segment is None:  # each row its segment's model
        scorer = SegmentScorer(
            exp,
            source.load,
            args.k,
            rng,
            recorder_for=(
                None
                if stream is None
                else (
                    lambda view: DecisionRecorder(stream, view, names, candidates, configured=exp)
                )
            ),
        )
    else:
        model = source.load(exp)
        recorder = None
        if stream is not None:
            recorder = DecisionRecorder(stream, exp, names, candidates, configured=configured)
        scorer = OneModelScorer(exp, estimator(exp, model, rng), args.k, recorder)
        position = None if model.position is None else "%d-%d" % model.position
        summary |= {"model_position": position}
    progress = None if args.quiet else ProgressBar(input_size(args.input, fmt), "banditd score")
    started = time.monotonic()
    rows = 0
    schema = parquet_schema(args.input) if fmt == "parquet" else None
    with ScoredWriter(args.output, fmt, names, schema) as out:
        for chunk in read_chunks(args.input, fmt, exp.features):
            try:
                X = encode_batch(exp.features, chunk.batch)
            except FeatureError as exc:
                raise FeatureError(exc.field, f"{exc.message} in rows {_rows(chunk)}") from exc
            scored = scorer.score(chunk, X)
            out.write(chunk, scored.arms, scored.scores, scored.propensities, scored.decision_ids)
            rows += len(X)
            if progress:
                progress.update(rows, chunk.read)
    seconds = time.monotonic() - started
    if progress:
        progress.update(rows, progress.total, final=True)
    if isinstance(scorer, SegmentScorer):
        summary["segments"] = len(scorer.seen)
    return summary | {
        "rows": rows,
        "seconds": round(seconds, 3),
        "model": args.model,
        "config_version": exp.version,
        "recorded": rows if stream is not None else 0,
        "output": str(args.output),
    }


class ModelSource:
    """Loads models of one experiment (or of its segments) from Redis or Postgres, as asked."""

    def __init__(self, kind: str, settings: Settings, arms: tuple[str, ...] | None) -> None:
        self.kind = kind
        self.settings = settings
        self.arms = arms
        self._client = None
        self._engine = None

    def load(self, exp: Experiment) -> LoadedModel:
        """``exp``'s model (a segment's view: that segment's)."""
        if self.kind == "snapshot":
            if self._engine is None:
                from app.services import database_engine

                self._engine = database_engine(self.settings.database_url)
            return snapshot_model(self._engine, exp, self.arms)
        if self._client is None:
            from app.services import redis_client

            self._client = redis_client(self.settings.redis_url)
        return live_model(self._client, exp, self.arms)

    def __enter__(self) -> "ModelSource":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._client is not None:
            self._client.close()
        if self._engine is not None:
            self._engine.dispose()


def _stream(settings: Settings):
    from app.services import build_services

    return build_services(settings).stream


def _rows(chunk) -> str:
    return f"{chunk.first_row}-{chunk.first_row + chunk.batch.num_rows - 1} (from 0)"


def _fail(message: str) -> int:
    print(f"banditd score: {message}", file=sys.stderr)
    return 2
