"""banditd's commands answer a user's mistake, or a service out of reach, in one line."""

import pytest

from app.cli import main
from tests.conftest import TEST_DATABASE_URL


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--experiment", "home_feed", "--level", "2"],
        ["evaluate", "--experiment", "home_feed", "--level", "nan"],
        ["evaluate", "--experiment", "home_feed", "--seed", "-1"],
        ["simulate", "--rounds", "-5"],
        ["simulate", "--seeds", "0"],
        ["rebuild", "--experiment", "home_feed", "--verify", "--tolerance", "-1"],
        ["status", "--sample-seconds", "-1"],
        ["deadletters", "list", "--experiment", "home_feed", "--limit", "0"],
    ],
)
def test_a_bad_argument_is_refused_by_name(argv, capsys):
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"argument {argv[-2]}" in err


def test_redis_out_of_reach_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(["deadletters", "list", "--experiment", "home_feed"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach Redis (REDIS_URL)" in err and "Traceback" not in err


def test_postgres_out_of_reach_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "postgresql://banditd:banditd@127.0.0.1:1/nothing")
    assert main(["report", "--experiment", "home_feed"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach Postgres (DATABASE_URL)" in err and "Traceback" not in err


def test_a_date_out_of_range_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", TEST_DATABASE_URL)
    assert main(["report", "--experiment", "home_feed", "--since", "0001-01-01"]) == 1
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["report", "evaluate"])
def test_an_empty_window_is_refused_not_reported_empty(command, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", TEST_DATABASE_URL)
    argv = [command, "--experiment", "home_feed", "--since", "2026-03-02", "--until", "2026-03-01"]
    assert main(argv) == 2
    assert "is not after --since" in capsys.readouterr().err
