"""``banditd export``: the Parquet files hold exactly the log's rows, typed, one file per table
and UTC day; they read back the same with pyarrow and DuckDB; a day exported again is
replaced; memory stays bounded by the chunk, not by the log."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import sqlalchemy

from app.cli import main
from app.export.exporter import LOCK, TABLES, export
from bench import synthetic_log
from tests.conftest import TEST_DATABASE_URL, choose, reward, rows

EXPERIMENT = "synthetic_0"
END = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
SINCE, UNTIL = date(2026, 11, 29), date(2026, 12, 6)  # the seeded days and one either side
KEYS = {
    "decisions": ("decision_id",),
    "impressions": ("decision_id", "arm"),
    "rewards": ("decision_id", "arm", "kind"),
}
JSON_COLUMNS = {"context"}
UTC_US = pa.timestamp("us", tz="UTC")
EXPECTED_TYPES = {
    "decisions": {
        "decision_id": pa.string(),
        "experiment": pa.string(),
        "decided_at": UTC_US,
        "config_version": pa.string(),
        "policy": pa.string(),
        "model_id": pa.string(),
        "request_id": pa.string(),
        "context": pa.string(),
        "features": pa.list_(pa.float64()),
        "shown_count": pa.int32(),
        "propensity_estimated": pa.bool_(),
        "candidates": pa.list_(pa.string()),
        "unit_id": pa.string(),
        "log_day": pa.date32(),
        "candidate_items": pa.list_(pa.float64()),  # item models: every candidate's features
    },
    "impressions": {
        "decision_id": pa.string(),
        "experiment": pa.string(),
        "arm": pa.string(),
        "position": pa.int32(),
        "score": pa.float64(),
        "propensity": pa.float64(),
        "propensity_estimated": pa.bool_(),
        "decided_at": UTC_US,
        "config_version": pa.string(),
        "log_day": pa.date32(),
        "item_features": pa.string(),  # item models: the features the arm was scored with
        "item_vector": pa.list_(pa.float64()),
    },
    "rewards": {
        "decision_id": pa.string(),
        "experiment": pa.string(),
        "arm": pa.string(),
        "reward": pa.float64(),
        "kind": pa.string(),
        "received_at": UTC_US,
        "stream_ms": pa.int64(),
        "stream_seq": pa.int64(),
        "log_day": pa.date32(),
    },
}


# -- helpers ---------------------------------------------------------------------------------


def seed(engine, impressions: int = 3000, days: int = 5) -> None:
    """A consistent synthetic log of ``EXPERIMENT`` ending at ``END`` (bench/synthetic_log.py)."""
    synthetic_log.seed(engine, impressions=impressions, days=days, end=END, chunk=500)


def run_export(monkeypatch, capsys, out: Path, *extra: str, experiment: str = EXPERIMENT):
    """``banditd export`` in this process; returns (exit code, summary or None, stderr)."""
    monkeypatch.setenv("DATABASE_URL", TEST_DATABASE_URL)
    code = main(
        [
            "export",
            "--experiment",
            experiment,
            "--since",
            SINCE.isoformat(),
            "--until",
            UNTIL.isoformat(),
            "--out",
            str(out),
            *extra,
        ]
    )
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else None, captured.err


def micros(value: datetime) -> int:
    return (value - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


def normal(name: str, value):
    """A value as both sides can be compared: timestamps as µs, JSON text parsed."""
    if isinstance(value, datetime):
        return micros(value)
    if name in JSON_COLUMNS and isinstance(value, str):
        return json.loads(value)
    return value


def postgres_rows(engine, table: str, where: str = "TRUE") -> list[tuple]:
    """The table's rows of ``EXPERIMENT``, every column in table order, sorted by key."""
    found = rows(engine, f"SELECT * FROM {table} WHERE experiment = :e AND {where}", e=EXPERIMENT)
    return sorted(tuple(normal(k, v) for k, v in r.items()) for r in found)


def postgres_days(engine, table: str) -> dict[str, int]:
    key = TABLES[table]
    found = rows(
        engine,
        f"SELECT (({key} AT TIME ZONE 'UTC')::date)::text AS day, count(*) AS n FROM {table} "
        "WHERE experiment = :e GROUP BY 1",
        e=EXPERIMENT,
    )
    return {r["day"]: r["n"] for r in found}


def hive(out: Path, table: str) -> ds.Dataset:
    """The table's files as a pyarrow dataset, the ``date`` partition typed."""
    return ds.dataset(
        out / f"table={table}",
        format="parquet",
        partitioning=ds.partitioning(pa.schema([("date", pa.date32())]), flavor="hive"),
    )


def parquet_rows(out: Path, table: str) -> list[tuple]:
    read = hive(out, table).to_table()
    names = [n for n in read.column_names if n != "date"]
    return sorted(tuple(normal(n, v) for n, v in r.items()) for r in read.select(names).to_pylist())


def file_days(out: Path, table: str) -> dict[str, int]:
    found = {}
    for path in sorted((out / f"table={table}").glob("date=*/*.parquet")):
        assert path.name == "part-0.parquet"
        found[path.parent.name.removeprefix("date=")] = pq.ParquetFile(path).metadata.num_rows
    return found


# -- counts, types, readers ------------------------------------------------------------------


def test_export_row_counts_equal_postgres_per_table_and_day(engine, monkeypatch, capsys, tmp_path):
    seed(engine)
    code, summary, err = run_export(monkeypatch, capsys, tmp_path)
    assert code == 0
    for table in TABLES:
        expected = postgres_days(engine, table)
        assert len(expected) >= 5  # the log spans several days
        assert file_days(tmp_path, table) == expected
        assert summary["tables"][table]["days"] == expected
        assert summary["tables"][table]["rows"] == sum(expected.values())
        assert f"banditd export: {table} {sum(expected.values()):,} rows" in err
    assert summary["seconds"] > 0 and summary["peak_rss_mb"] > 0
    assert not list(tmp_path.glob(".export-*"))  # the staging directory is gone


def test_export_columns_have_their_types(engine, monkeypatch, capsys, tmp_path):
    seed(engine, impressions=300)
    assert run_export(monkeypatch, capsys, tmp_path)[0] == 0
    for table, types in EXPECTED_TYPES.items():
        for path in (tmp_path / f"table={table}").glob("date=*/part-0.parquet"):
            schema = pq.read_schema(path)
            assert dict(zip(schema.names, schema.types)) == types


def test_export_reads_back_with_pyarrow_as_in_postgres(engine, monkeypatch, capsys, tmp_path):
    seed(engine)
    assert run_export(monkeypatch, capsys, tmp_path)[0] == 0
    for table, key in TABLES.items():
        assert parquet_rows(tmp_path, table) == postgres_rows(engine, table)
        read = hive(tmp_path, table).to_table(columns=[key, "date"]).to_pylist()
        assert all(r[key].date() == r["date"] for r in read)  # the UTC day of the key


def test_export_reads_back_with_duckdb_as_in_postgres(engine, monkeypatch, capsys, tmp_path):
    seed(engine)
    assert run_export(monkeypatch, capsys, tmp_path)[0] == 0
    db = duckdb.connect()
    for table, key in TABLES.items():
        files = f"read_parquet('{tmp_path}/table={table}/**/*.parquet', hive_partitioning=true)"
        described = {r[0]: r[1] for r in db.execute(f"DESCRIBE SELECT * FROM {files}").fetchall()}
        assert described[key] == "TIMESTAMP WITH TIME ZONE"
        assert described["date"] == "DATE"
        names = [n for n in EXPECTED_TYPES[table]]
        selected = ", ".join(f"epoch_us({n})" if n in TABLES.values() else n for n in names)
        got = sorted(
            tuple(normal(n, v) for n, v in zip(names, r))
            for r in db.execute(f"SELECT {selected} FROM {files}").fetchall()
        )
        assert got == postgres_rows(engine, table)
        wrong_day = db.execute(
            f"SELECT count(*) FROM {files} WHERE CAST(timezone('UTC', {key}) AS DATE) <> date"
        ).fetchone()[0]
        assert wrong_day == 0
    described = db.execute(
        "DESCRIBE SELECT features, candidates, context "
        f"FROM read_parquet('{tmp_path}/table=decisions/**/*.parquet')"
    ).fetchall()
    assert {r[0]: r[1] for r in described} == {
        "features": "DOUBLE[]",
        "candidates": "VARCHAR[]",
        "context": "VARCHAR",
    }


def test_export_of_decisions_made_through_the_api_keeps_every_field(
    client, worker, engine, monkeypatch, capsys, tmp_path
):
    shown = []
    for hour, city in ((8, "berlin"), (21, "hamburg"), (13, None)):
        context = {"hour": hour} | ({"city": city} if city else {})
        decision = choose(
            client,
            context=context,
            k=2,
            candidates=["job_kitchen", "job_warehouse"],
            unit_id=f"user-{hour}",
            request_id=f"request-{hour}",
        ).get_json()
        shown.append((decision, context))
        answer = reward(client, decision["decision_id"], decision["arms"][0]["arm"], 1)
        assert answer.status_code == 202
    worker.run(until_idle=True)
    today = datetime.now(timezone.utc).date()  # a day either side: midnight may pass meanwhile
    monkeypatch.setenv("DATABASE_URL", TEST_DATABASE_URL)
    code = main(
        [
            "export",
            *("--experiment", "home_feed", "--since", str(today - timedelta(days=1))),
            *("--until", str(today + timedelta(days=2)), "--out", str(tmp_path)),
        ]
    )
    assert code == 0, capsys.readouterr().err
    decisions = {r["decision_id"]: r for r in hive(tmp_path, "decisions").to_table().to_pylist()}
    assert len(decisions) == 3
    for decision, context in shown:
        row = decisions[decision["decision_id"]]
        assert json.loads(row["context"]) == context
        assert row["candidates"] == ["job_kitchen", "job_warehouse"]
        assert row["unit_id"] == f"user-{context['hour']}"
        assert row["request_id"] == f"request-{context['hour']}"
        assert (
            row["features"]
            == rows(
                engine,
                "SELECT features FROM decisions WHERE decision_id = :d",
                d=row["decision_id"],
            )[0]["features"]
        )
        assert row["date"] == row["decided_at"].date()
    impressions = hive(tmp_path, "impressions").to_table().to_pylist()
    assert sorted((r["decision_id"], r["position"]) for r in impressions) == sorted(
        (d["decision_id"], p) for d, _ in shown for p in range(2)
    )
    rewards = hive(tmp_path, "rewards").to_table().to_pylist()
    assert [(r["reward"], r["kind"]) for r in rewards] == [(1.0, "explicit")] * 3


def test_export_includes_a_column_added_by_a_later_migration(engine, monkeypatch, capsys, tmp_path):
    seed(engine, impressions=200, days=2)
    added = {
        "segment": ("smallint", "1", pa.int16(), 1),
        "tags": ("text[]", "ARRAY['a', 'b,c']", pa.list_(pa.string()), ["a", "b,c"]),
        "signup_day": ("date", "date '2026-11-02'", pa.date32(), date(2026, 11, 2)),
        "amount": ("numeric", "12.5", pa.float64(), 12.5),
        "attributes": ("jsonb", """'{"tier": "gold"}'""", pa.string(), '{"tier": "gold"}'),
        "seen_at": (
            "timestamp",
            "timestamp '2026-11-02 10:00:00.25'",
            pa.timestamp("us"),
            datetime(2026, 11, 2, 10, 0, 0, 250000),
        ),
    }
    with engine.begin() as conn:
        for name, (sql_type, value, _, _) in added.items():
            conn.execute(sqlalchemy.text(f"ALTER TABLE decisions ADD COLUMN {name} {sql_type}"))
            conn.execute(sqlalchemy.text(f"UPDATE decisions SET {name} = {value}"))
    try:
        assert run_export(monkeypatch, capsys, tmp_path)[0] == 0
    finally:
        with engine.begin() as conn:
            for name in added:
                conn.execute(sqlalchemy.text(f"ALTER TABLE decisions DROP COLUMN {name}"))
    read = hive(tmp_path, "decisions").to_table()
    for name, (_, _, arrow_type, value) in added.items():
        assert read.schema.field(name).type == arrow_type
        assert set(map(str, read.column(name).to_pylist())) == {str(value)}


def test_export_puts_a_row_in_the_utc_day_of_its_time_and_until_is_exclusive(
    engine, monkeypatch, capsys, tmp_path
):
    moments = {  # decided_at -> the partition it belongs to, or None: outside the range
        "2026-11-28 23:59:59.999999+00": None,
        "2026-11-29 00:00:00+00": "2026-11-29",
        "2026-11-29 22:30:00-05:00": "2026-11-30",  # 03:30 UTC the next day
        "2026-12-05 23:59:59.999999+00": "2026-12-05",
        "2026-12-06 00:00:00+00": None,  # --until's own day is not exported
    }
    with engine.begin() as conn:
        for n, at in enumerate(moments):
            conn.execute(
                sqlalchemy.text(
                    "INSERT INTO decisions (decision_id, experiment, decided_at, config_version, "
                    "policy, model_id, context, features, shown_count, propensity_estimated) "
                    "VALUES (:d, :e, :at, 'v1', 'linucb', 'm1', '{}', '{1.0}', 0, false)"
                ),
                {"d": f"{EXPERIMENT}:{n}", "e": EXPERIMENT, "at": at},
            )
    code, summary, _ = run_export(monkeypatch, capsys, tmp_path)
    assert code == 0
    expected = {}
    for day in moments.values():
        if day:
            expected[day] = expected.get(day, 0) + 1
    assert file_days(tmp_path, "decisions") == expected == summary["tables"]["decisions"]["days"]
    assert not (tmp_path / "table=impressions").exists()


# -- replacing a day -------------------------------------------------------------------------


def test_exporting_a_day_again_replaces_it(engine, monkeypatch, capsys, tmp_path):
    seed(engine)
    assert run_export(monkeypatch, capsys, tmp_path)[0] == 0
    day = date(2026, 12, 2)
    other = tmp_path / "table=impressions" / "date=2026-12-01" / "part-0.parquet"
    before = other.stat()
    gone = rows(
        engine,
        "SELECT decision_id FROM decisions WHERE experiment = :e "
        "AND (decided_at AT TIME ZONE 'UTC')::date = :day ORDER BY decision_id LIMIT 3",
        e=EXPERIMENT,
        day=day,
    )
    gone_ids = [r["decision_id"] for r in gone]
    with engine.begin() as conn:
        for table in ("rewards", "impressions", "decisions"):
            conn.execute(
                sqlalchemy.text(f"DELETE FROM {table} WHERE decision_id = ANY(:ids)"),
                {"ids": gone_ids},
            )
    monkeypatch.setenv("DATABASE_URL", TEST_DATABASE_URL)
    code = main(
        ["export", "--experiment", EXPERIMENT, "--since", str(day), "--until"]
        + [str(day + timedelta(days=1)), "--out", str(tmp_path), "--quiet"]
    )
    assert code == 0
    assert capsys.readouterr().err == ""  # --quiet
    for table in TABLES:
        assert file_days(tmp_path, table) == postgres_days(engine, table)  # no duplicates
        assert parquet_rows(tmp_path, table) == postgres_rows(engine, table)
    exported = set(hive(tmp_path, "decisions").to_table().column("decision_id").to_pylist())
    assert not exported & set(gone_ids)
    assert other.stat().st_ino == before.st_ino  # a day outside the range is untouched
    assert other.stat().st_mtime_ns == before.st_mtime_ns


def test_a_day_without_rows_any_more_loses_its_partition(engine, monkeypatch, capsys, tmp_path):
    seed(engine)
    assert run_export(monkeypatch, capsys, tmp_path)[0] == 0
    with engine.begin() as conn:
        for table in ("rewards", "impressions", "decisions"):
            conn.execute(
                sqlalchemy.text(f"DELETE FROM {table} WHERE {TABLES[table]} >= :at"),
                {"at": datetime(2026, 12, 3, tzinfo=timezone.utc)},
            )
    code, summary, _ = run_export(monkeypatch, capsys, tmp_path)
    assert code == 0
    for table in TABLES:
        assert file_days(tmp_path, table) == postgres_days(engine, table)
        assert not (tmp_path / f"table={table}" / "date=2026-12-04").exists()
    assert "table=impressions/date=2026-12-04" in summary["removed"]
    assert parquet_rows(tmp_path, "rewards") == postgres_rows(engine, "rewards")


def test_export_refuses_to_run_beside_another_export_into_the_directory(
    engine, monkeypatch, capsys, tmp_path
):
    seed(engine, impressions=100, days=1)
    with open(tmp_path / LOCK, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, _, err = run_export(monkeypatch, capsys, tmp_path)
    assert code == 1
    assert "another export" in err
    assert not list(tmp_path.glob("table=*"))
    assert run_export(monkeypatch, capsys, tmp_path)[0] == 0  # once the lock is free


# -- bad arguments ---------------------------------------------------------------------------


def test_export_of_an_unknown_experiment_exits_2(engine, monkeypatch, capsys, tmp_path):
    seed(engine, impressions=100, days=1)
    code, _, err = run_export(monkeypatch, capsys, tmp_path / "out", experiment="no_such")
    assert code == 2
    assert "no experiment 'no_such'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "since, until, message",
    [
        ("2026-12-01", "2026-12-01", "--until 2026-12-02"),  # one day: --until is the next
        ("2026-12-02", "2026-12-01", "is not after"),
        ("yesterday", "2026-12-01", "expected a day"),
        ("2026-12-01", "2026-12-02T00:00", "expected a day"),
    ],
)
def test_export_with_a_bad_range_exits_2(
    engine, monkeypatch, capsys, tmp_path, since, until, message
):
    monkeypatch.setenv("DATABASE_URL", TEST_DATABASE_URL)
    args = ["export", "--experiment", EXPERIMENT, "--since", since, "--until", until]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- bounded memory --------------------------------------------------------------------------


def test_export_holds_rows_bounded_by_the_chunk_not_the_log(engine, tmp_path):
    seed(engine, impressions=6000, days=2)
    summary = export(
        engine, EXPERIMENT, SINCE, UNTIL, tmp_path, chunk_bytes=16 << 10, row_group_rows=400
    )
    for table, written in summary.tables.items():
        assert written.rows > 2000
        # a chunk ends with the row that fills it; no exported row is under 150 bytes of JSON
        assert written.max_batch_rows <= (16 << 10) // 150 + 1
        assert written.max_held_rows < 400 + written.max_batch_rows
        for path in (tmp_path / f"table={table}").glob("date=*/part-0.parquet"):
            metadata = pq.ParquetFile(path).metadata
            groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
            assert max(groups) < 400 + written.max_batch_rows
            assert metadata.num_rows <= 400 or len(groups) > 1
    for table in TABLES:
        assert file_days(tmp_path, table) == postgres_days(engine, table)


def _peak_rss_mb(out: Path) -> float:
    """Peak RSS of a ``banditd export`` process, as it reports it."""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "export", "--experiment", EXPERIMENT]
        + ["--since", "2026-11-01", "--until", str(UNTIL), "--out", str(out)]
        + ["--chunk-mb", "1", "--quiet"],
        env={**os.environ, "DATABASE_URL": TEST_DATABASE_URL},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout)["peak_rss_mb"]


def test_export_memory_does_not_grow_with_the_log(engine, tmp_path):
    seed(engine, impressions=10_000, days=30)
    small = _peak_rss_mb(tmp_path / "small")
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("TRUNCATE config_versions, decisions, impressions, rewards"))
    seed(engine, impressions=200_000, days=30)
    big = _peak_rss_mb(tmp_path / "big")
    # 200,000 impressions, ~100,000 decisions and ~200,000 rewards are ~130 MB of JSON from
    # Postgres and ~60 MB in Arrow: held whole, the second export would be far bigger
    assert big - small < 40, (small, big)
