// The experiment page: fills the cards, charts (uPlot), tables and the what-if panel from the
// JSON data routes under /experiments/<name>/. Read-only; no build step.
(function () {
  "use strict";

  const root = document.getElementById("console");
  const base = root.dataset.base;
  const days = root.dataset.days;
  const BANDIT = "#2563eb";
  const HOLDOUT = "#ea580c";
  const PALETTE = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ca8a04", "#0891b2", "#db2777",
    "#4b5563", "#65a30d", "#7c3aed", "#0d9488", "#b45309"];

  const fmt = {
    int: (n) => (n == null ? "–" : Number(n).toLocaleString("en-US")),
    mean: (v) => (v == null ? "–" : v.toFixed(4)),
    signed: (v) => (v == null ? "–" : (v >= 0 ? "+" : "") + v.toFixed(4)),
    pct: (v) => (v == null ? "–" : (v >= 0 ? "+" : "") + (100 * v).toFixed(1) + "%"),
    interval: (lo, hi) => (lo == null || hi == null ? "–" : lo.toFixed(4) + " to " + hi.toFixed(4)),
    when: (iso) => iso.replace("T", " ").slice(0, 16) + " UTC",
  };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) node.append(c instanceof Node ? c : String(c));
    return node;
  }

  async function getJSON(path) {
    // from the origin: a page opened as http://user:key@host/... must not fetch with credentials
    // in the URL (fetch refuses those); the browser sends the signed-in credentials itself
    const response = await fetch(window.location.origin + base + path,
      { headers: { Accept: "application/json" } });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : "HTTP " + response.status);
    return body;
  }

  function showError(where, error) {
    where.replaceChildren(el("p", { class: "error" }, "Could not load: " + error.message));
  }

  // --- headline cards and verdict ---------------------------------------------------------
  function card(label, value, detail, field, tone) {
    return el("div", { class: "card " + (tone || "") },
      el("div", { class: "label" }, label),
      el("div", { class: "value", "data-field": field }, value),
      el("div", { class: "detail" }, detail));
  }

  function renderSummary(s) {
    const p = s.period.policy, h = s.period.holdout, lift = s.period.lift, t = s.today;
    const tone = lift.ci_low != null && lift.ci_low > 0 ? "up"
      : lift.ci_high != null && lift.ci_high < 0 ? "down" : "";
    document.getElementById("cards").replaceChildren(
      card("Bandit reward per decision", fmt.mean(p.mean),
        "95%: " + fmt.interval(p.ci_low, p.ci_high) + " · " + fmt.int(p.decisions) + " decisions",
        "policy_mean", "bandit"),
      card("Holdout reward per decision", fmt.mean(h.mean),
        "95%: " + fmt.interval(h.ci_low, h.ci_high) + " · " + fmt.int(h.decisions) + " decisions",
        "holdout_mean", "holdout"),
      card("Lift over the holdout", fmt.signed(lift.lift),
        fmt.pct(lift.lift_relative) + " · 95%: " + fmt.interval(lift.ci_low, lift.ci_high), "lift", tone),
      card("Decisions today", fmt.int(t.policy.decisions + t.holdout.decisions),
        "bandit " + fmt.int(t.policy.decisions) + " · holdout " + fmt.int(t.holdout.decisions) +
        " · bandit's reward today " + fmt.mean(t.policy.mean), "decisions_today"));
    const v = document.getElementById("verdict");
    const span = "Over the last " + days + " days";
    if (!s.settings.holdout && lift.lift == null) {
      v.textContent = "This experiment has no holdout (holdout = 0 in the config), so there is " +
        "no lift to show: set a holdout share to compare the bandit with the old way.";
    } else if (lift.lift == null) {
      v.textContent = span + " there is no lift to show yet: the bandit or the holdout has no " +
        "decision with a final reward.";
    } else if (tone === "up") {
      v.textContent = span + " the bandit earned " + fmt.signed(lift.lift) + " per decision more " +
        "than the holdout (" + fmt.pct(lift.lift_relative) + "); the 95% interval is above zero, " +
        "so it is doing better than the old way.";
    } else if (tone === "down") {
      v.textContent = span + " the bandit earned " + fmt.signed(lift.lift) + " per decision " +
        "against the holdout (" + fmt.pct(lift.lift_relative) + "); the 95% interval is below " +
        "zero, so it is doing worse than the old way.";
    } else {
      v.textContent = span + " the difference from the holdout (" + fmt.signed(lift.lift) +
        " per decision) is not yet distinguishable from zero (95%: " +
        fmt.interval(lift.ci_low, lift.ci_high) + "): more decisions are needed.";
    }
    v.className = "verdict " + tone;
  }

  // --- charts ----------------------------------------------------------------------------
  function daySeconds(day) { return Date.parse(day + "T00:00:00Z") / 1000; }

  // One change as words: lists say what was added and removed, other values old → new.
  function change(key, diff, arrow) {
    if (Array.isArray(diff.old) && Array.isArray(diff.new)) {
      const added = diff.new.filter((a) => !diff.old.includes(a));
      const removed = diff.old.filter((a) => !diff.new.includes(a));
      const parts = added.map((a) => "+" + a).concat(removed.map((a) => "−" + a));
      return key + " " + (parts.length ? parts.join(" ") : "reordered");
    }
    const show = (v) => (v === undefined || v === null ? "none" : JSON.stringify(v));
    return key + " " + show(diff.old) + arrow + show(diff.new);
  }

  function changeLabel(version) {
    const keys = Object.keys(version.changed || {});
    if (!version.previous_version) return "first version";
    if (!keys.length) return "new version";
    return keys.map((k) => change(k, version.changed[k], "→")).join(", ");
  }

  function markersPlugin(markers) {
    return {
      hooks: {
        draw: [(u) => {
          const ctx = u.ctx, dpr = window.devicePixelRatio || 1;
          ctx.save();
          ctx.setLineDash([5 * dpr, 4 * dpr]);
          ctx.strokeStyle = "#374151";
          ctx.fillStyle = "#111827";
          ctx.lineWidth = dpr;
          ctx.font = 11 * dpr + "px system-ui, sans-serif";
          markers.forEach((m, i) => {
            const x = Math.round(u.valToPos(m.t, "x", true));
            if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
            ctx.fillText(m.label, x + 4 * dpr, u.bbox.top + (14 + 14 * (i % 3)) * dpr);
          });
          ctx.restore();
        }],
      },
    };
  }

  function chartWidth(node) { return Math.max(320, node.clientWidth); }

  // From the first day with decisions in the period (an experiment younger than the period
  // does not get weeks of empty axis) to the end of today.
  function firstDay(daily) {
    const has = (g, i) => g.decisions[i] != null;
    const i = daily.days.findIndex((d, i) => has(daily.policy, i) || has(daily.holdout, i));
    return i < 0 ? 0 : i;
  }

  function xRange(daily) {
    const first = daySeconds(daily.days[firstDay(daily)]);
    return [first, daySeconds(daily.days[daily.days.length - 1]) + 86400];
  }

  function noteShortHistory(daily) {
    const any = daily.days.some((d, i) => daily.policy.decisions[i] != null ||
      daily.holdout.decisions[i] != null);
    if (any && daily.days.length - firstDay(daily) > 1) return;
    const text = any ? "All decisions so far are from today: the charts gain a point per day."
      : "No decisions in this period yet. Once /choose serves some, the charts fill in at the " +
        "worker's next refresh of the daily views (every 5 minutes).";
    for (const id of ["chart-reward", "chart-shares"]) {
      document.getElementById(id).before(el("p", { class: "hint" }, text));
    }
  }

  function renderReward(daily, markers) {
    const node = document.getElementById("chart-reward");
    const x = daily.days.map((d) => daySeconds(d) + 43200);  // the middle of each day
    const p = daily.policy, h = daily.holdout;
    const line = (label, color) => ({ label, stroke: color, width: 2, spanGaps: true,
      points: { show: true, size: 6, fill: color }, value: (u, v) => fmt.mean(v) });
    const edge = (label, color) => ({ label, stroke: color, width: 1, spanGaps: true,
      points: { show: false }, value: (u, v) => fmt.mean(v) });
    const opts = {
      width: chartWidth(node), height: 300,
      scales: { x: { time: true, range: xRange(daily) } },
      series: [{ label: "day", value: (u, v) => v == null ? "–" : new Date(v * 1000).toISOString().slice(0, 10) },
        line("bandit", BANDIT), edge("bandit 95% low", BANDIT + "55"), edge("bandit 95% high", BANDIT + "55"),
        line("holdout", HOLDOUT), edge("holdout 95% low", HOLDOUT + "55"), edge("holdout 95% high", HOLDOUT + "55")],
      bands: [{ series: [3, 2], fill: BANDIT + "26" }, { series: [6, 5], fill: HOLDOUT + "26" }],
      axes: [{}, { label: "mean reward per decision", values: (u, ticks) => ticks.map((t) => t.toFixed(3)), size: 60 }],
      plugins: [markersPlugin(markers)],
    };
    node.replaceChildren();
    const u = new uPlot(opts, [x, p.mean_reward, p.ci_low, p.ci_high, h.mean_reward, h.ci_low, h.ci_high], node);
    u.root.querySelectorAll(".u-legend .u-series").forEach((row, i) => {
      if ([2, 3, 5, 6].includes(i)) row.style.display = "none";
    });
    return u;
  }

  function renderShares(daily, markers) {
    const node = document.getElementById("chart-shares");
    const arms = Object.keys(daily.shares);
    const x = daily.days.map((d) => daySeconds(d) + 43200);
    const pct = (v) => (v == null ? "–" : (100 * v).toFixed(1) + "%");
    const series = [{ label: "day", value: (u, v) => v == null ? "–" : new Date(v * 1000).toISOString().slice(0, 10) }];
    arms.forEach((arm, i) => {
      const color = PALETTE[i % PALETTE.length];
      series.push({ label: arm, stroke: color, width: 2, spanGaps: true,
        points: { show: true, size: 5, fill: color }, value: (u, v) => pct(v) });
    });
    const opts = {
      width: chartWidth(node), height: 260,
      scales: { x: { time: true, range: xRange(daily) }, y: { range: [0, 1] } },
      series,
      axes: [{}, { label: "share of top-slot impressions", values: (u, ticks) => ticks.map((t) => Math.round(100 * t) + "%"), size: 60 }],
      plugins: [markersPlugin(markers)],
    };
    node.replaceChildren();
    return new uPlot(opts, [x, ...arms.map((a) => daily.shares[a])], node);
  }

  // --- tables ----------------------------------------------------------------------------
  function renderArms(data) {
    const table = document.getElementById("arms");
    const head = el("tr", {}, ...["arm", "bandit impressions", "bandit mean reward (95%)",
      "holdout impressions", "holdout mean reward (95%)", "model estimate now", "rewards learned"]
      .map((t, i) => el("th", { class: i ? "n" : "" }, t)));
    const cell = (arm, field, text, cls) => el("td", { class: cls || "n", "data-arm": arm, "data-field": field }, text);
    const group = (arm, g, name) => [
      cell(arm, name + "_impressions", fmt.int(g ? g.impressions : 0)),
      el("td", { class: "n" },
        el("span", { "data-arm": arm, "data-field": name + "_mean" }, fmt.mean(g && g.mean)), " ",
        el("span", { class: "ci" }, g && g.ci_low != null ? "(" + fmt.interval(g.ci_low, g.ci_high) + ")" : "")),
    ];
    const rows = data.arms.map((a) => el("tr", {},
      el("td", {}, a.arm, a.configured ? "" : el("span", { class: "tag" }, " not in config")),
      ...group(a.arm, a.policy, "policy"),
      ...group(a.arm, a.holdout, "holdout"),
      cell(a.arm, "model", a.model ? fmt.mean(a.model.estimate) + " ± " + fmt.mean(a.model.uncertainty) : "–"),
      cell(a.arm, "learned", a.model ? fmt.int(a.model.learned) : "–")));
    table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
  }

  function describeChange(version) {
    if (!version.previous_version) return "first version logged";
    const keys = Object.keys(version.changed || {});
    if (!keys.length) return "no setting changed (a new fingerprint only)";
    return keys.map((k) => change(k, version.changed[k], " → ")).join("; ");
  }

  function renderVersions(data) {
    const table = document.getElementById("config-changes");
    const head = el("tr", {}, el("th", {}, "in force from"), el("th", {}, "until"),
      el("th", {}, "version"), el("th", {}, "what changed"));
    const rows = data.versions.slice().reverse().map((v) => el("tr", { "data-version": v.config_version },
      el("td", {}, fmt.when(v.in_force_from)),
      el("td", {}, v.in_force_until ? fmt.when(v.in_force_until) : "now"),
      el("td", {}, el("code", {}, v.config_version)),
      el("td", {}, describeChange(v))));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 4 }, "No config version logged yet.")));
    table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
  }

  // --- what-if ---------------------------------------------------------------------------
  function renderWhatIf(r) {
    const out = document.getElementById("whatif-result");
    if (!r.estimates) {
      out.replaceChildren(el("p", { class: "error" }, "No estimate: " + r.warnings.join("; ") + "."));
      return;
    }
    const byName = (list) => Object.fromEntries(list.map((e) => [e.estimator, e]));
    const cur = byName(r.estimates.current), pro = byName(r.estimates.proposed);
    const show = (e) => fmt.mean(e.value) + " (" + fmt.interval(e.low, e.high) + ")";
    const names = { ips: "IPS", snips: "SNIPS (self-normalised)", dr: "DR (doubly robust)" };
    const rows = Object.keys(pro).map((k) => el("tr", { "data-estimator": k },
      el("td", {}, names[k] || k),
      el("td", { class: "n", "data-field": "current" }, show(cur[k])),
      el("td", { class: "n", "data-field": "proposed" }, show(pro[k])),
      el("td", { class: "n", "data-field": "difference" }, fmt.signed(pro[k].value - cur[k].value)),
      el("td", { class: "n", "data-field": "ess" }, fmt.int(Math.round(pro[k].ess)))));
    const table = el("table", { class: "grid" },
      el("thead", {}, el("tr", {}, el("th", {}, "estimator"), el("th", { class: "n" }, "current settings (95%)"),
        el("th", { class: "n" }, "proposed (95%)"), el("th", { class: "n" }, "difference"),
        el("th", { class: "n" }, "effective sample size"))),
      el("tbody", {}, ...rows));
    const snips = pro.snips, diff = snips.value - cur.snips.value;
    const relative = cur.snips.value ? diff / cur.snips.value : null;
    const direction = diff > 0 ? "more" : diff < 0 ? "less" : "the same";
    const headline = el("p", { class: "verdict" }, "On the newest " + fmt.int(r.sample) +
      " settled decisions (logged mean reward " + fmt.mean(r.logged.mean) + "), the proposal would " +
      "have earned about " + fmt.mean(snips.value) + " per decision (SNIPS): " +
      (diff ? fmt.mean(Math.abs(diff)) + " " + direction + " (" + fmt.pct(relative) + ")" : "the same") +
      " than the current settings' " + fmt.mean(cur.snips.value) + ". Compare the intervals below " +
      "before you change the config.");
    const toml = r.toml.length > 1
      ? [el("p", {}, "To deploy it, put these lines in the experiment's table of the config file (it is under version control; running processes pick the change up without a restart):"),
        el("pre", { class: "toml", id: "whatif-toml" }, r.toml.join("\n"))]
      : [el("p", { id: "whatif-toml" }, "These are the current settings: nothing to change in the config file.")];
    const warnings = r.warnings.map((w) => el("p", { class: "warning" }, "Caution: " + w + "."));
    out.replaceChildren(headline, table, ...warnings, ...toml);
  }

  async function runWhatIf(event) {
    event.preventDefault();
    const form = event.target, out = document.getElementById("whatif-result");
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim() !== "") params.set(k, v);
    out.replaceChildren(el("p", { class: "loading" }, "Estimating…"));
    try {
      renderWhatIf(await getJSON("/what-if?" + params));
    } catch (error) {
      showError(out, error);
    }
  }

  // --- start -----------------------------------------------------------------------------
  document.getElementById("whatif-form").addEventListener("submit", runWhatIf);
  const q = "?days=" + encodeURIComponent(days);
  Promise.all([getJSON("/summary" + q), getJSON("/daily" + q), getJSON("/arms" + q), getJSON("/config-history")])
    .then(([summary, daily, arms, history]) => {
      renderSummary(summary);
      const markers = history.versions.map((v) => ({ t: Date.parse(v.in_force_from) / 1000, label: changeLabel(v) }));
      renderReward(daily, markers);
      renderShares(daily, markers);
      noteShortHistory(daily);
      renderArms(arms);
      renderVersions(history);
      root.dataset.loaded = "true";
    })
    .catch((error) => {
      showError(document.getElementById("cards"), error);
      root.dataset.loaded = "error";
      console.error(error);
    });
})();
