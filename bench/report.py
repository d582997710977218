"""Turn the results into tables: plain text for stdout, Markdown for docs/BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path
from statistics import median
from string import Template

from bench import learning_lag

Table = tuple[str, list[str], list[list[str]]]  # title, header, rows

ENDPOINTS = {
    "floor": "floor (bare Flask)",
    "choose_linucb": "/choose linucb",
    "choose_lin_ts": "/choose lin_ts",
    "choose_squarecb": "/choose squarecb",
    "reward": "/reward",
}


def _f(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and digits == 0:
        return f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _script_us(per_request: dict) -> float | None:
    """Redis' time in scripts and transactions per request; None from results that predate it.

    Older results summed every command's time, counting a script's commands twice.
    """
    return per_request.get("redis_script_us_per_request")


def targets(results: dict) -> list[dict]:
    """Each target of issue 6 with the measured figure and whether it was met."""
    out = []
    tp = results.get("throughput_2w", {}).get("endpoints", {})
    for name, goal in (("choose_linucb", 0.6), ("choose_lin_ts", 0.6), ("reward", 0.7)):
        if name in tp:
            out.append(
                _target(
                    f"{ENDPOINTS[name]} saturation / floor",
                    tp[name]["ratio_to_floor"],
                    goal,
                    ">=",
                    "x",
                )
            )
    fixed = results.get("throughput_2w", {}).get("fixed_rate", {})
    for name in ("choose_linucb", "choose_lin_ts"):
        if name in fixed:
            out.append(
                _target(
                    f"{ENDPOINTS[name]} p99 at {int(fixed[name]['rate']):,} req/s",
                    fixed[name]["latency_ms"]["p99"],
                    5.0,
                    "<=",
                    "ms",
                )
            )
    for row in results.get("cost_growth", {}).get("rows", []):
        if row["candidates"] == 1000 and row["d"] == 32:
            out.append(
                _target(
                    f"/choose {row['policy']} p99, 1,000 candidates, d=32",
                    row["p99"],
                    20.0,
                    "<=",
                    "ms",
                )
            )
    if "worker_drain" in results:
        out.append(
            _target(
                "worker events/s from a backlog",
                results["worker_drain"]["events_per_s"],
                50_000,
                ">=",
                "/s",
            )
        )
    if "freshness" in results:
        out.append(
            _target(
                "freshness p99 (every API process)",
                results["freshness"]["api_all_processes_ms"]["p99"],
                500.0,
                "<=",
                "ms",
            )
        )
    with_worker = results.get("throughput_4w_worker", {}).get("endpoints", {})
    for name, goal in (("choose_linucb", 0.6), ("choose_lin_ts", 0.5), ("reward", 0.7)):
        if name in with_worker:
            out.append(
                _target(
                    f"{ENDPOINTS[name]} saturation / floor, 4 workers, worker running",
                    with_worker[name]["ratio_to_floor"],
                    goal,
                    ">=",
                    "x",
                )
            )
    if "choose_squarecb" in with_worker and "choose_linucb" in with_worker:
        linucb, squarecb = (with_worker[n]["rps"] for n in ("choose_linucb", "choose_squarecb"))
        out.append(
            _target(
                "/choose squarecb cost ÷ linucb's (linucb req/s ÷ squarecb's at saturation, "
                "4 workers, worker running), issue 18",
                round(linucb / squarecb, 3),
                1.1,
                "<=",
                "x",
            )
        )
    if "freshness" in results:
        out.append(
            _target(
                "freshness p99 (every API process), issue 11",
                results["freshness"]["api_all_processes_ms"]["p99"],
                100.0,
                "<=",
                "ms",
            )
        )
    out += _steady_targets(results.get("steady_load"))
    out += learning_lag.targets(results.get("learning_lag"), _target)
    out += _metrics_targets(results.get("metrics_cost"))
    out += _item_targets(results.get("item_choose"))
    return out


def _item_targets(items: dict | None) -> list[dict]:
    """Issue 13's latency targets: /choose over 200 and 1,000 candidates from the store."""
    if not items:
        return []
    out = []
    for run in items["runs"]:
        if run["features_from"] != "store":
            continue
        goal = {200: 10.0, 1000: 25.0}[run["candidates"]]
        where = f"/choose {run['model']}, {run['candidates']} candidates from the store"
        if "sequential_held" in run:
            out.append(
                _target(
                    f"{where}, p99 one at a time, items held (worker running), issue 13",
                    run["sequential_held"]["latency_ms"]["p99"],
                    goal,
                    "<=",
                    "ms",
                )
            )
        out.append(
            _target(
                f"{where}, p99 one at a time while the processes first meet the items, " "issue 13",
                run["sequential"]["latency_ms"]["p99"],
                goal,
                "<=",
                "ms",
            )
        )
        out.append(
            _target(
                f"{where}, p99 at {run['rate']:g} req/s (worker learning), issue 13",
                run["open_loop"]["latency_ms"]["p99"],
                goal,
                "<=",
                "ms",
            )
        )
    for model in ("shared", "hybrid"):
        load = items.get(f"bulk_load_{model}")
        if load:
            out.append(
                _target(
                    f"POST /items bulk load of {load['batch']:,} items ({model}), issue 13",
                    max(load["seconds_per_batch"]),
                    2.0,
                    "<=",
                    "s",
                )
            )
    return out


def _metrics_targets(cost: dict | None) -> list[dict]:
    """Issue 12's targets: what the metrics cost /choose, and how fast /metrics answers."""
    if not cost:
        return []
    page = cost["metrics_page"]
    return [
        _target(
            "metrics cost of /choose saturation (median of rounds), issue 12",
            cost["saturation"]["metrics_cost_pct_median"],
            3.0,
            "<=",
            "%",
        ),
        _target(
            f"GET /metrics p99, {page['experiments']} experiments, idle",
            page["idle"]["p99_ms"],
            50.0,
            "<=",
            "ms",
        ),
        _target(
            f"GET /metrics p99, {page['experiments']} experiments, /choose under load",
            page["under_choose_load"]["p99_ms"],
            50.0,
            "<=",
            "ms",
        ),
    ]


def _steady_targets(steady: dict | None) -> list[dict]:
    """Issue 11's targets measured by the steady-load phase."""
    if not steady:
        return []
    # the worker's own figures from its stream fed directly, at rates the API may not serve here
    by_rate = {r["offered_events_per_s"]: r for r in steady.get("fed_directly", steady["rates"])}
    out = []
    if 500 in by_rate:
        out.append(
            _target(
                "worker CPU/event at 500 events/s ÷ draining a backlog",
                by_rate[500]["worker_cpu_vs_backlog"],
                2.0,
                "<=",
                "x",
            )
        )
        out.append(
            _target(
                "worker CPU/event at 500 events/s",
                by_rate[500]["worker_cpu_us_per_event"],
                60.0,
                "<=",
                "µs",
            )
        )
    if 2000 in by_rate:
        out.append(
            _target(
                "worker CPU/event at 2,000 events/s",
                by_rate[2000]["worker_cpu_us_per_event"],
                40.0,
                "<=",
                "µs",
            )
        )
    out.append(
        _target(
            "Redis time in scripts and transactions per /choose",
            _script_us(steady["redis_per_choose"]),
            15.0,
            "<=",
            "µs",
        )
    )
    return out


def _target(what: str, value, goal, op: str, unit: str) -> dict:
    met = value is not None and (value >= goal if op == ">=" else value <= goal)
    by = None
    if value is None:
        by = "not measured"
    elif not met:
        by = f"{goal / value:.1f}x short" if op == ">=" else f"{value / goal:.1f}x over"
    return {
        "target": what,
        "goal": f"{op} {goal:,} {unit}",
        "measured": value,
        "met": met,
        "missed_by": by,
    }


def tables(results: dict) -> list[Table]:
    """Every table of the report, in order."""
    out: list[Table] = [
        (
            "Targets (issues 6, 11, 12, 13 and 18)",
            ["target", "goal", "measured", "met"],
            [
                [
                    t["target"],
                    t["goal"],
                    _f(t["measured"], 3 if t["goal"].endswith("x") else 1),
                    (
                        "yes"
                        if t["met"]
                        else ("–" if t["measured"] is None else "NO") + f" ({t['missed_by']})"
                    ),
                ]
                for t in targets(results)
            ],
        )
    ]
    for key in ("throughput_4w_worker", "throughput_2w", "throughput_4w"):
        tp = results.get(key)
        if not tp:
            continue
        out.append(
            (
                f"Saturation, {tp['workers']} gunicorn workers, "
                + ("`banditd worker` running" if tp.get("update_worker") else "no worker")
                + f" (wrk -t{tp['wrk']['threads']} "
                f"-c{tp['wrk']['connections']}, {tp['rounds']} interleaved rounds of "
                f"{tp['wrk']['seconds']:g} s)",
                ["endpoint", "req/s", "ratio to floor", "per round", "errors"],
                [
                    [
                        ENDPOINTS[n],
                        _f(e["rps"], 0),
                        f"{e['ratio_to_floor']:.2f}",
                        " / ".join(_f(r, 0) for r in e["rps_per_round"]),
                        str(e["errors"]),
                    ]
                    for n, e in tp["endpoints"].items()
                ],
            )
        )
    fixed = results.get("throughput_2w", {}).get("fixed_rate")
    if fixed:
        out.append(
            (
                "Latency at a fixed offered rate (open loop, ms from the scheduled send)",
                [
                    "endpoint",
                    "offered req/s",
                    "sent",
                    "done",
                    "p50",
                    "p99",
                    "p99.9",
                    "max",
                    "gen. lag p99",
                    "gen. CPU",
                    "errors",
                    "API CPU µs/req",
                ],
                [
                    [
                        ENDPOINTS[n],
                        _f(r["rate"], 0) + ("" if r["rate"] == 1000 else " (½ sat.)"),
                        _f(r["sent_rps"], 0),
                        _f(r["completed_rps"], 0),
                        _f(r["latency_ms"]["p50"], 2),
                        _f(r["latency_ms"]["p99"], 2),
                        _f(r["latency_ms"]["p999"], 2),
                        _f(r["latency_ms"]["max"], 1),
                        _f(r["send_lag_ms"]["p99"], 2),
                        f"{r['generator_cpu']:.0%}",
                        str(r["errors"]),
                        _f(r.get("api_cpu_us_per_request")),
                    ]
                    for n, r in fixed.items()
                ],
            )
        )
    if "worker_drain" in results:
        d = results["worker_drain"]
        out.append(
            (
                "Worker drain from a backlog (half decisions, half rewards)",
                [
                    "events",
                    "drained in s",
                    "events/s",
                    "events/s incl. start-up",
                    "decisions",
                    "impressions",
                    "rewards",
                    "rewards learned",
                ],
                [
                    [
                        _f(d["events"]),
                        _f(d["seconds_from_first_ack"], 1),
                        _f(d["events_per_s"]),
                        _f(d["events_per_s_from_start"]),
                        _f(d["rows"]["decisions"]),
                        _f(d["rows"]["impressions"]),
                        _f(d["rows"]["rewards"]),
                        _f(d["rewards_learned"]),
                    ]
                ],
            )
        )
    if "freshness" in results:
        f = results["freshness"]
        bg = f["background"]
        out.append(
            (
                f"Freshness: /reward 202 → parameters ({f['probes']} probes, "
                f"{f['timed_out']} timed out; background "
                f"{_f(bg['completed_rps'], 0)} of {_f(bg['offered_rps'], 0)} rewards/s done, "
                f"their p99 {_f(bg['latency_ms']['p99'])} ms)",
                ["signal", "p50 ms", "p99 ms", "max ms"],
                [
                    [label, _f(f[k]["p50"]), _f(f[k]["p99"]), _f(f[k]["max"])]
                    for label, k in (
                        ("worker applied (Redis arm version)", "worker_applied_ms"),
                        ("first API process's /choose sees it", "api_first_process_ms"),
                        ("every API process's /choose sees it", "api_all_processes_ms"),
                        ("first API process, dated by the poll", "api_first_process_polled_ms"),
                        ("every API process, dated by the poll", "api_all_processes_polled_ms"),
                    )
                    if k in f
                ],
            )
        )
    if "steady_load" in results:
        out.append(_steady_table(results["steady_load"]))
    if "learning_lag" in results:
        out.append(learning_lag.table(results["learning_lag"]))
    if "cost_growth" in results:
        rows = results["cost_growth"]["rows"]
        dims = sorted({r["d"] for r in rows})
        for policy in sorted({r["policy"] for r in rows}, key=lambda p: p != "linucb"):
            by = {(r["candidates"], r["d"]): r for r in rows if r["policy"] == policy}
            out.append(
                (
                    f"/choose {policy}, unloaded latency p50 / p99 ms, "
                    f"{results['cost_growth']['arms']:,}-arm experiments",
                    ["candidates K"] + [f"d={d}" for d in dims],
                    [
                        [_f(k)]
                        + [f"{_f(by[(k, d)]['p50'], 2)} / {_f(by[(k, d)]['p99'], 2)}" for d in dims]
                        for k in sorted({r["candidates"] for r in rows})
                    ],
                )
            )
    if "memory" in results:
        m = results["memory"]
        out.append(
            (
                f"Memory per API process, {m['arms']:,} arms at d={m['d']} "
                f"(cache arrays {m['cache_arrays_mib']} MiB)",
                [
                    "process",
                    "RSS before MiB",
                    "RSS after MiB",
                    "private (USS) after MiB",
                    "first /choose ms",
                    "/choose p50 ms (all arms)",
                ],
                [
                    [
                        str(i + 1),
                        _f(p["before_mib"]["rss"]),
                        _f(p["after_mib"]["rss"]),
                        _f(p["after_mib"]["uss"]),
                        _f(m["first_choose_ms"]),
                        _f(m["choose_all_arms_ms"]["p50"], 2),
                    ]
                    for i, p in enumerate(m["processes"])
                ],
            )
        )
    if "metrics_cost" in results:
        out.append(_metrics_table(results["metrics_cost"]))
    if "item_choose" in results:
        out.append(_item_table(results["item_choose"]))
    return out


def _item_table(items: dict) -> Table:
    """/choose latency over many candidates scored by their item features."""
    rows = [
        [
            run["model"],
            f"{run['candidates']:,}",
            run["features_from"],
            _f(run["sequential"]["latency_ms"]["p50"], 2),
            _f(run["sequential"]["latency_ms"]["p99"], 2),
            _f(run.get("sequential_held", {}).get("latency_ms", {}).get("p50"), 2),
            _f(run.get("sequential_held", {}).get("latency_ms", {}).get("p99"), 2),
            _f(run.get("redis_us_per_request_held", {}).get("lookup")),
            f"{run['rate']:g}",
            _f(run["open_loop"]["latency_ms"]["p50"], 2),
            _f(run["open_loop"]["latency_ms"]["p99"], 2),
            _f(run.get("redis_us_per_request", {}).get("lookup")),
            _f(run.get("redis_us_per_request", {}).get("script")),
        ]
        for run in items["runs"]
    ]
    return (
        f"/choose scored by item features ({items['context_dim']} context and "
        f"{items['item_dim']} item features, all pairs: D = {items['shared_dim']}; "
        f"{items['items']:,} items in the feature store; the worker running and learning)",
        [
            "model",
            "candidates",
            "features",
            "one at a time, first sights: p50 ms",
            "p99 ms",
            "items held: p50 ms",
            "p99 ms",
            "Redis µs/req, lookup",
            "open loop req/s",
            "p50 ms",
            "p99 ms",
            "Redis µs/req, first sights: lookup",
            "script",
        ],
        rows,
    )


def _metrics_table(cost: dict) -> Table:
    """/choose saturation with metrics on and off, with and without request lines."""
    sat = cost["saturation"]
    setups = (
        ("metrics on, request lines (the defaults)", "metrics"),
        ("BANDITD_METRICS=0, request lines", "no_metrics"),
        ("metrics on, BANDITD_REQUEST_LOG=none", "metrics_no_request_log"),
        ("BANDITD_METRICS=0, BANDITD_REQUEST_LOG=none", "no_metrics_no_request_log"),
    )
    rows = [
        [
            label,
            _f(sat[key]["rps"], 0),
            _spread(sat[key]["rps_per_round"]),
            _f(sat[key]["cpu_us_per_request"]),
        ]
        for label, key in setups
    ]
    cost_rounds = sat["metrics_cost_pct_per_round"]
    rows.append(["metrics' cost per round, % of req/s", "", _spread(cost_rounds, 1), ""])
    costs = ", ".join(
        f"{name.replace('_', ' ')} {_f(sat[f'{name}_cost_pct_median'], 1)}% of req/s "
        f"({_f(sat[f'{name}_cpu_cost_pct_median'], 1)}% CPU)"
        for name in ("metrics", "metrics_without_request_log", "request_log")
    )
    return (
        f"What the metrics cost /choose (LinUCB, K = 50, d = 32; {cost['rounds']} interleaved "
        f"rounds of {_f(cost.get('round_seconds', 4.0), 0)} s; medians of the rounds' ratios):"
        f" {costs}",
        ["setup", "req/s", "per round: min / median / max", "CPU µs/request"],
        rows,
    )


def _spread(values: list[float], digits: int = 0) -> str:
    """``min / median / max`` of ``values``."""
    return " / ".join(_f(v, digits) for v in (min(values), median(values), max(values)))


def _steady_table(steady: dict) -> Table:
    """Per-event CPU of each part under steady traffic, with the worker's backlog reference."""
    backlog = steady["backlog"]
    rows = [
        [
            _f(r["offered_events_per_s"], 0),
            _f(r["worker_cpu_us_per_event"]),
            _f(r["worker_cpu_vs_backlog"], 2),
            _f(r["redis_cpu_us_per_event"]),
            _f(r["api_cpu_us_per_request"], 0),
            _f(r["choose_p99_ms"]),
            _f(r["errors"], 0),
        ]
        for r in steady["rates"]
    ]
    rows += [
        [
            f"{_f(r['offered_events_per_s'], 0)} fed directly "
            f"({_f(r['achieved_events_per_s'], 0)} done)",
            _f(r["worker_cpu_us_per_event"]),
            _f(r["worker_cpu_vs_backlog"], 2),
            "",
            "",
            "",
            "",
        ]
        for r in steady.get("fed_directly", [])
    ]
    rows.append(
        [
            f"backlog of {backlog['backlog']:,}",
            _f(backlog["worker_cpu_us_per_event"]),
            "1",
            "",
            "",
            f"{_f(backlog['events_per_s'], 0)} events/s",
            "",
        ]
    )
    choose, reward = steady["redis_per_choose"], steady["redis_per_reward"]
    return (
        f"Steady traffic, worker and {steady['api_workers']} API processes running "
        "(half /choose, half /reward); Redis per request alone at 500/s: "
        f"/choose {_f(_script_us(choose))} µs in scripts and transactions "
        f"({_f(choose['redis_cpu_us_per_request'])} µs process CPU), "
        f"/reward {_f(_script_us(reward))} µs "
        f"({_f(reward['redis_cpu_us_per_request'])} µs)",
        [
            "events/s",
            "worker CPU µs/event",
            "÷ backlog",
            "Redis CPU µs/event",
            "API CPU µs/request",
            "/choose p99 ms",
            "errors",
        ],
        rows,
    )


def notes(results: dict) -> list[str]:
    """Why each fixed-rate run used the rate it did."""
    fixed = results.get("throughput_2w", {}).get("fixed_rate", {})
    notes = [
        f"{ENDPOINTS[n]} at {_f(r['rate'], 0)} req/s: {r['why']}"
        for n, r in fixed.items()
        if r["why"] != "1,000 req/s"
    ]
    return notes or ["every endpoint ran at 1,000 req/s and kept up"]


def text(results: dict) -> str:
    """All tables as aligned plain text."""
    parts = []
    for title, header, rows in tables(results):
        widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
        lines = [header, ["-" * w for w in widths], *rows]
        parts.append(
            "\n".join(
                [title] + ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in lines]
            )
        )
    parts.append("Fixed rates:\n" + "\n".join(f"  {n}" for n in notes(results)))
    return "\n\n".join(parts)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """One Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_markdown(results: dict, template: Path, target: Path) -> None:
    """Render ``template`` with the results' tables into ``target``."""
    sections = "\n\n".join(
        f"### {title}\n\n{markdown_table(header, rows)}" for title, header, rows in tables(results)
    )
    sections += "\n\nFixed rates: " + "; ".join(notes(results)) + "."
    meta = results["meta"]
    target.write_text(
        Template(template.read_text()).safe_substitute(
            tables=sections,
            machine=markdown_table(["", ""], [[k, str(v)] for k, v in meta["machine"].items()]),
            command=meta["command"],
            started=meta["started"],
            seconds=f"{meta.get('seconds', 0):.0f}",
            code=markdown_table(["", ""], [[k, str(v)] for k, v in meta["code"].items()]),
            load=meta.get("load", ""),
        )
    )
