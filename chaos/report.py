"""Render a chaos run's results: docs/RELIABILITY.md, and a short summary for the terminal."""

from __future__ import annotations

import statistics
from pathlib import Path
from string import Template

TEMPLATE = Path(__file__).resolve().parent / "RELIABILITY.md.in"


def _n(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _spread(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"median {statistics.median(values):.1f} s, max {max(values):.1f} s"


def _answers(counts: dict) -> str:
    return ", ".join(f"{k}: {_n(v)}" for k, v in sorted(counts.items())) or "none"


def figures(result: dict) -> list[tuple[str, str]]:
    """The headline figures of the run, as (label, value) rows."""
    after, final = result.get("after_faults", {}), result.get("final", {})
    part = final or after
    ledger, audit = part.get("ledger", {}), part.get("audit", {})
    rows = audit.get("rows", {})
    phases = result.get("phases", {})
    kills = [e for e in phases.get("worker_kills", []) if e["fault"] == "kill"]
    stalls = phases.get("worker_stalls", [])
    poison = after.get("poison", {})
    verifies = [p["verify"] for p in (after, final) if p] + [
        phases[name]["verify"] for name in ("redis_loss",) if name in phases
    ]
    diffs = [v["max_difference"] for v in verifies if v.get("max_difference") is not None]
    out = [
        ("choose+reward pairs sent", _n(ledger.get("pairs_sent"))),
        (
            "acknowledged",
            f"{_n(ledger.get('decisions_accepted'))} decisions (`200 /choose`, "
            f"{_n(ledger.get('impressions_accepted'))} impressions), "
            f"{_n(ledger.get('rewards_accepted'))} rewards (`202 /reward`), "
            f"{_n(ledger.get('rewards_late'))} late (`409`); "
            f"{_n(ledger.get('rewards_left_to_default'))} decisions left unrewarded on purpose",
        ),
        (
            "in Postgres",
            f"{_n(rows.get('decisions'))} decisions, {_n(rows.get('impressions'))} impressions, "
            f"{_n(rows.get('rewards_explicit'))} explicit, {_n(rows.get('rewards_default'))} "
            f"default and {_n(rows.get('rewards_late'))} late rewards",
        ),
        ("**lost**", f"**{_n(audit.get('lost_total'))}**"),
        ("**duplicated**", f"**{_n(audit.get('duplicated_total'))}**"),
        (
            "requests without a usable answer",
            f"{_n(ledger.get('decisions_unanswered'))} `/choose`, "
            f"{_n(ledger.get('rewards_unanswered'))} `/reward` (recorded anyway: "
            f"{_answers(audit.get('unacknowledged', {}))})",
        ),
        (
            "5xx answers",
            f"{_n(ledger.get('http_5xx'))}: {_n(ledger.get('http_503'))} × 503 "
            f"`storage_unavailable` (while Redis was down, as documented), "
            f"{_n(ledger.get('http_500'))} × 500",
        ),
        (
            "max rebuild difference",
            f"{max(diffs):.3g}" if diffs else "–",
        ),
        (
            "rebuild --verify",
            ", ".join(f"exit {v['returncode']}" for v in verifies) or "–",
        ),
        (
            "rewards learned by the live model",
            f"{_n(part.get('learned_rewards'))} (log: "
            f"{_n((rows.get('rewards_explicit') or 0) + (rows.get('rewards_default') or 0))})",
        ),
        (
            "faults",
            f"{len(kills)} worker kills, {len(stalls)} stalls, Postgres down "
            f"{_n(phases.get('postgres_outage', {}).get('down_s'))} s, Redis down "
            f"{_n(phases.get('redis_restart', {}).get('down_s'))} s, Redis wiped and rebuilt",
        ),
        (
            "poisoned entries",
            f"{_n(poison.get('injected'))} written into the stream; "
            f"{_n(poison.get('dead_letters'))} in the dead letters, "
            f"{_n(poison.get('dead_lettered_total'))} counted",
        ),
        (
            "workers that exited on their own",
            _n(len(result.get("unplanned_worker_exits", [])))
            + "".join(
                f"; pid {e['pid']} status {e['status']} at {e['at_s']} s"
                for e in result.get("unplanned_worker_exits", [])[:5]
            ),
        ),
    ]
    return out


def matrix(result: dict) -> list[list[str]]:
    """One row per fault: fault, what banditd does, the figures measured, the tests."""
    phases = result.get("phases", {})
    rows = []
    kills = phases.get("worker_kills", [])
    if kills:
        rows.append(
            [
                f"worker holding the lease SIGKILLed at random moments under load, "
                f"{len(kills)} times",
                "its lease expires after 5 s; a worker (the restarted one or the standby) "
                "takes the stream over, claims the entries the dead one had read but not "
                "acknowledged and processes them again: log rows are keyed (a batch partly "
                "in the log is written again through staging tables with `ON CONFLICT DO "
                "NOTHING`), learning skips entries at or below the watermark saved with the "
                "parameters",
                f"killed {_spread([e['held_lease_for_s'] for e in kills])} after taking the "
                f"lease, with {_spread_n([e['its_pending_entries'] for e in kills])} entries "
                f"read and not acknowledged; lease taken again after "
                f"{_spread([e['lease_taken_again_after_s'] for e in kills])}; everything "
                f"acknowledged before the kill in Postgres after "
                f"{_spread([e['logged_all_acknowledged_after_s'] for e in kills])}",
                "`test_worker_killed_at_random_points_under_load_loses_and_duplicates_nothing`, "
                "`test_two_workers_with_the_lease_holder_killed_never_double_apply`",
            ]
        )
    stalls = phases.get("worker_stalls", [])
    if stalls:
        rows.append(
            [
                f"worker holding the lease stalled (SIGSTOP for 7 s) past its lease, "
                f"{len(stalls)} times",
                "another worker takes the stream over after 5 s; when the stalled one "
                "resumes, its parameter save is fenced on the lease (it fails, nothing of "
                "it is kept) and it stops processing the stream",
                f"lease taken by another worker after "
                f"{_spread([e['lease_taken_again_after_s'] for e in stalls])}; everything "
                f"acknowledged before the stall in Postgres after "
                f"{_spread([e['logged_all_acknowledged_after_s'] for e in stalls])}",
                "`test_a_worker_that_stalled_past_its_lease_takes_no_entries_from_the_new_holder`, "
                "`test_a_worker_that_gets_its_lease_back_after_another_held_it_reloads_the_model`",
            ]
        )
    pg = phases.get("postgres_outage")
    if pg:
        rows.append(
            [
                f"Postgres stopped (crash: `pg_ctl stop -m immediate`) for {_n(pg['down_s'])} s "
                "under load",
                "`/choose` and `/reward` answer as usual (no Postgres on the request path); "
                "events wait in the Redis stream; `/readyz` answers `200 degraded`; the "
                "worker retries with a backoff doubling from 0.1 s to 5 s; afterwards "
                "every event arrives once",
                f"answers during the outage: {_answers(pg['answers_during'])}; `/readyz`: "
                f"{_answers(pg['readyz_during'])}; Postgres took "
                f"{_n(pg['postgres_start_took_s'])} s to start; all "
                f"{_n(pg['decisions_acknowledged_by_then'])} decisions "
                f"acknowledged by then in Postgres {_n(pg['all_in_postgres_after_s'])} s after"
                + _exits(pg),
                "`test_postgres_outage_redis_restart_and_redis_loss_under_load`",
            ]
        )
    rr = phases.get("redis_restart")
    if rr:
        rows.append(
            [
                f"Redis crashed (SIGKILL) and restarted from its AOF after {_n(rr['down_s'])} s "
                "under load",
                "`/choose` and `/reward` answer `503 storage_unavailable` JSON at once (the "
                "client connects with a 100 ms timeout; a refused connection fails "
                "immediately); `/readyz` answers 503; the worker backs off; after the "
                "restart nothing acknowledged is missing",
                f"answers while down: {_answers(rr['answers_during'])}; 503 in "
                f"{_n(rr['503_p50_ms'])} ms median, {_n(rr.get('503_p95_ms'))} ms at the 95th "
                f"percentile, {_n(rr['503_max_ms'])} ms at most (measured by the client) "
                f"({_n(rr['answers_503'])} answers); ready again {_n(rr['ready_again_after_s'])} s "
                f"after the restart; everything acknowledged in Postgres "
                f"{_n(rr.get('all_in_postgres_after_s'))} s after" + _exits(rr),
                "`test_postgres_outage_redis_restart_and_redis_loss_under_load`",
            ]
        )
    loss = phases.get("redis_loss")
    if loss:
        rows.append(
            [
                "Redis data lost entirely (killed, AOF deleted, started empty)",
                "the workers are stopped, `banditd rebuild --experiment NAME` replays the log "
                "(from the latest snapshot) and writes the parameters and the watermark back; "
                "the workers start again and learning continues",
                f"{_n(loss['arms_restored'])} of {_n(loss['arms_before'])} arms restored "
                f"({_n(loss['rewards_restored'])} of {_n(loss['rewards_before'])} rewards), max "
                "difference to the parameters before the loss "
                f"{loss['max_difference_to_before']:.3g}; "
                f"rebuild took {_n(loss['rebuild_took_s'])} s; verify exit "
                f"{loss['verify']['returncode']}",
                "`test_postgres_outage_redis_restart_and_redis_loss_under_load`",
            ]
        )
    poison = result.get("after_faults", {}).get("poison")
    if poison:
        kinds = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in poison["by_kind"].items())
        stages = ", ".join(f"{n} at {s}" for s, n in poison["by_stage"].items())
        rows.append(
            [
                f"{poison['injected']} poisoned entries written straight into the stream "
                "(bypassing the API) during the load and the faults above",
                "the worker reads a batch that fails for a reason of its own again entry by "
                "entry, moves each poisoned entry with its error to the experiment's dead "
                "letters (atomically with its acknowledgement) and logs and learns the rest; "
                "`banditd deadletters list|replay|drop`",
                f"injected: {kinds}; dead letters afterwards: {poison['dead_letters']} "
                f"({stages}), {poison['dead_lettered_total']} ever counted",
                "`tests/test_deadletters.py`",
            ]
        )
    rows.append(
        [
            "the config file becomes invalid",
            "the last good config stays in force in every process, and a process that "
            "starts meanwhile (a replaced gunicorn worker, a new `banditd worker`) starts "
            "from the last good config kept in Redis; `/readyz` says `degraded` with the "
            "reason until the file is fixed",
            "(not part of `make chaos`)",
            "`tests/test_e2e.py` step 4, `tests/test_config_faults.py`",
        ]
    )
    return rows


def _exits(phase: dict) -> str:
    n = phase.get("worker_exits")
    if not n:
        return ""
    return f"; **{n} worker processes exited on their own meanwhile** (restarted by the run)"


def _spread_n(values: list) -> str:
    values = [v for v in values if v is not None and v >= 0]
    if not values:
        return "–"
    return f"median {statistics.median(values):g} (max {max(values):g})"


def render(result: dict) -> str:
    """docs/RELIABILITY.md for ``result``."""
    settings = result.get("settings", {})
    before, after = result.get("machine_before", {}), result.get("machine_after", {})
    verdict = result.get("verdict", {})
    if verdict.get("ok"):
        verdict_text = "**Verdict: pass** — nothing acknowledged was lost or duplicated, and every "
        verdict_text += "`rebuild --verify` passed."
    else:
        verdict_text = "**Verdict: FAIL**:\n\n" + "\n".join(
            f"- {p}" for p in verdict.get("problems", ["no result"])
        )
    machine = [
        f"- CPU: {before.get('cpu')}, {before.get('cores')} cores; {before.get('memory_gib')} GiB",
        f"- {before.get('os')}; Python {before.get('python')}; Redis {before.get('redis')}; "
        f"Postgres {before.get('postgres')}",
        f"- load average (1, 5, 15 min) before the run {before.get('load_average')}, "
        f"after {after.get('load_average')}",
        f"- code: commit {before.get('commit')}"
        + (
            f", with uncommitted changes in {', '.join(before['uncommitted_in_app'])}"
            if before.get("uncommitted_in_app")
            else ""
        ),
    ]
    return Template(TEMPLATE.read_text()).substitute(
        workers=settings.get("workers", "?"),
        threads=settings.get("threads", "?"),
        rate=_n(settings.get("rate")),
        window=_n(settings.get("window")),
        run_line=(
            f"{result.get('started', '?')}, `{result.get('command', '?')}`, "
            f"{_n(result.get('seconds'))} s in all (load for {_n(result.get('load_seconds'))} s), "
            f"Redis `appendfsync {settings.get('fsync', '?')}`."
        ),
        figures="\n".join(f"| {label} | {value} |" for label, value in figures(result)),
        verdict=verdict_text,
        matrix="\n".join("| " + " | ".join(row) + " |" for row in matrix(result)),
        machine="\n".join(machine),
        command_line=f"The run above: `{result.get('command', '?')}`.",
    )


def summary(result: dict) -> str:
    """A few lines for the terminal."""
    lines = ["", "banditd chaos:"]
    lines += [
        f"  {label.strip('*')}: {value.replace('**', '')}" for label, value in figures(result)
    ]
    verdict = result.get("verdict", {})
    lines.append("  verdict: " + ("pass" if verdict.get("ok") else "FAIL"))
    lines += [f"    {p}" for p in verdict.get("problems", [])]
    return "\n".join(lines)
