"""Draw ops/grafana/banditd.json's panels from a real Prometheus: docs/banditd-board.png.

Grafana is not in Debian's packages, so this is not a Grafana screenshot: it
starts the stack (gunicorn + worker, tests/service_processes.py) and
Prometheus as tests/test_prometheus_live.py does, loads the API for a minute
(killing one web process halfway), then asks Prometheus for each panel's
queries over that minute and draws them with matplotlib, a panel per plot.

    BANDITD_TEST_REDIS_URL=... BANDITD_TEST_DATABASE_URL=... \\
        .venv/bin/python ops/grafana/board_picture.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import requests  # noqa: E402

from tests.conftest import EXPERIMENTS_TOML  # noqa: E402
from tests.service_processes import free_port, replace_atomically, start_service  # noqa: E402
from tests.test_prometheus_live import Load, start_prometheus  # noqa: E402

BOARD = REPO / "ops" / "grafana" / "banditd.json"
PICTURE = REPO / "docs" / "banditd-board.png"


def query_range(url: str, expr: str, start: float, end: float) -> list:
    r = requests.get(
        url + "/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": "1s"},
        timeout=30,
    )
    body = r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(template: str, labels: dict) -> str:
    text = template
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def draw(url: str, start: float, end: float, out: Path) -> None:
    board = json.loads(BOARD.read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    cols = 4
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 5, rows * 2.8))
    for ax, panel in zip(axes.flat, panels):
        ax.set_title(panel["title"], fontsize=9)
        ax.tick_params(labelsize=7)
        drawn = False
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "10s").replace("$experiment", ".*")
            for series in query_range(url, expr, start, end):
                xs = [float(t) - start for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                ax.plot(xs, ys, label=legend(target["legendFormat"], series["metric"])[:40])
                drawn = True
        if drawn:
            ax.legend(fontsize=6, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("s", fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        "banditd board (ops/grafana/banditd.json), panels drawn from Prometheus", fontsize=12
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--output", type=Path, default=PICTURE)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="banditd-board-"))
    config = work / "experiments.toml"
    replace_atomically(config, EXPERIMENTS_TOML)
    worker_port = free_port()
    os.environ["BANDITD_WORKER_METRICS_PORT"] = str(worker_port)
    svc = start_service(config, work)
    prometheus = None
    try:
        api = svc.base_url.removeprefix("http://")
        prometheus, url = start_prometheus(work, api, f"127.0.0.1:{worker_port}")
        start = time.time()
        with Load(svc.base_url) as load:
            time.sleep(args.seconds / 2)
            load.pause()
            os.kill(sorted(svc.web_workers())[0], signal.SIGKILL)
            load.resume()
            time.sleep(args.seconds / 2)
            load.pause()
        time.sleep(3)  # the last scrapes
        draw(url, start, time.time(), args.output)
        print(f"{args.output}: {load.ok} decisions answered 200")
    finally:
        if prometheus is not None:
            prometheus.send_signal(signal.SIGTERM)
            prometheus.wait(timeout=10)
        svc.stop()


if __name__ == "__main__":
    main()
