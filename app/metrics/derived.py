"""``banditd_responses`` as read: the answers counted under another name added back.

A decision (``/choose`` 200) is counted once, in ``banditd_decisions``, and an
accepted reward (``/reward`` 202 ``accepted``) once, in ``banditd_rewards``:
one memory-mapped counter write per request instead of two. Whoever reads the
metrics sees ``banditd_responses_total`` with those answers in it, as if each
had been counted there too. (A process of the previous release, which counted
them in both, leaves them counted twice in the totals after an in-place
reload; the README's Upgrading section says so.)
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

RESPONSES = "banditd_responses"
# (family counted instead, the route and status its answers have)
COUNTED_ELSEWHERE = (
    ("banditd_decisions", "/choose", "200"),
    ("banditd_rewards", "/reward", "202"),
)


class ResponsesWithDerived(Collector):
    """``source``'s metrics, with ``banditd_responses_total`` made whole."""

    def __init__(self, source: Collector) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        """Every metric of ``source``; its responses family completed."""
        metrics = list(self.source.collect())
        totals = {name: 0.0 for name, _, _ in COUNTED_ELSEWHERE}
        responses = None
        for metric in metrics:
            if metric.name in totals:
                totals[metric.name] = sum(
                    s.value for s in metric.samples if s.name.endswith("_total")
                )
            elif metric.name == RESPONSES:
                responses = metric
        if responses is None:
            responses = Metric(RESPONSES, "Answers by route and HTTP status.", "counter")
            metrics.append(responses)
        for name, route, status in COUNTED_ELSEWHERE:
            _add(responses, {"route": route, "status": status}, totals[name])
        return metrics


def _add(metric: Metric, labels: dict[str, str], amount: float) -> None:
    """Add ``amount`` to ``metric``'s ``_total`` sample with ``labels`` (made if missing)."""
    name = metric.name + "_total"
    for i, s in enumerate(metric.samples):
        if s.name == name and s.labels == labels:
            metric.samples[i] = s._replace(value=s.value + amount)
            return
    if amount:
        metric.samples.append(Sample(name, labels, amount))
