"""The monitoring report for people: one self-contained HTML page (plots inline as base64 PNG).

Order of the page: the overall verdict and its alerts, live quality per class with counts (the
orphan slice beside it), the verdict per feature with its reasons, the predicted-category mix,
constraint violations, and what was skipped and why. Every number shown comes from the JSON report.
"""
from __future__ import annotations

import base64
import html
import io
from typing import Any

from monitoring.quality import NOT_MONITORED
from processing.plots import plain_text, tick_labels

COLOURS = {"ok": "#1b7f3b", "warn": "#b26a00", "drift": "#b3261e", "alert": "#b3261e", "insufficient data": "#666",
           "no data": "#666", "below threshold": "#b3261e", "below threshold, not significant": "#b26a00",
           "insufficient feedback": "#666", "no feedback": "#666"}
_VERDICT_ORDER = {"drift": 0, "warn": 1, "ok": 2, "insufficient data": 3}


def lag_text(seconds: int) -> str:
    """A duration as the monitor's flags write it: 3d, 36h, 90m (seconds when none divides it)."""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _badge(verdict: str) -> str:
    return f'<span class="badge" style="background:{COLOURS.get(verdict, "#444")}">{_e(verdict)}</span>'


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.1%}" if pct else f"{x:.3f}"
    return _e(x)


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@plain_text
def _bars(title: str, labels: list[str], baseline: list[float], live: list[float]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 2.4))
    ax = fig.add_subplot()
    xs = range(len(labels))
    width = 0.4
    ax.bar([x - width / 2 for x in xs], baseline, width, label="baseline (training)", color="#8aa4c8")
    ax.bar([x + width / 2 for x in xs], live, width, label="live window", color="#d9822b")
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("share", fontsize=8)
    many = len(labels) > 4
    ax.set_xticks(list(xs), tick_labels(labels, 14), rotation=60 if many else 0, ha="right" if many else "center",
                  fontsize=6)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, frameon=False)
    return _png(fig)


@plain_text
def _recall_plot(per_class: dict[str, Any]) -> str:
    from matplotlib.figure import Figure

    labels = list(per_class)
    fig = Figure(figsize=(6.0, 2.6))
    ax = fig.add_subplot()
    for i, label in enumerate(labels):
        c = per_class[label]
        if c["recall"] is None:
            continue
        colour = COLOURS.get(c["status"], "#1b7f3b") if c["status"] != "ok" else "#1b7f3b"
        ax.bar(i, c["recall"], 0.6, color=colour)
        if c["interval_95"]:
            low, high = c["interval_95"]
            ax.plot([i, i], [low, high], color="black", linewidth=1)
        ax.text(i, 0.02, f"n={c['n']}", ha="center", fontsize=7, color="white")
        ax.plot([i - 0.35, i + 0.35], [c["threshold"], c["threshold"]], color="black", linestyle="--", linewidth=1)
    ax.set_ylim(0, 1.05)
    ax.set_xticks(range(len(labels)), tick_labels([label.replace("ENFERMEDAD ", "ENF. ") for label in labels], 20),
                  fontsize=7)
    ax.set_ylabel("live recall", fontsize=8)
    ax.set_title("Live recall per class (dashed: gate threshold; bar: 95% interval)", fontsize=9)
    return _png(fig)


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#1d1d1f;max-width:1200px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;font-size:13px} table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top} th{background:#f4f4f6}
.badge{color:#fff;border-radius:4px;padding:2px 8px;font-size:12px;font-weight:600;white-space:nowrap}
.verdict{font-size:20px;margin:12px 0} .alerts li{margin:3px 0} .grid{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px;width:430px} .card h3{font-size:14px;margin:2px 0 6px}
.reasons{font-size:12px;color:#333;margin:4px 0 0 16px;padding:0} img{max-width:100%}
.num{text-align:right;font-variant-numeric:tabular-nums}
"""


def _versions(traffic: dict[str, Any]) -> str:
    """The model version judged and the requests other versions answered (left out), for the header."""
    other = traffic.get("other_versions") or {}
    text = f" · model version {_e(traffic['model_version'])}" if traffic.get("model_version") else ""
    if other.get("requests"):
        text += (f" · <span id='other-versions'>{other['requests']} requests of other model versions left out "
                 f"({_e(', '.join(f'{v}: {n}' for v, n in other['by_version'].items()))})</span>")
    return text


def insufficient_text(report: dict[str, Any]) -> str | None:
    """Why a report judged nothing (its verdict "insufficient data"), and what to do: the first feature's reason
    (a window of visits: what its values are worth), the predictions', the feedback's. None for another verdict."""
    if report.get("verdict") != "insufficient data":
        return None
    said = [f"{f['name']}: {f['reasons'][-1]}" for f in report.get("features", [])
            if f.get("verdict") == "insufficient data" and f.get("reasons")]
    predictions = report.get("predictions") or {}
    return ("nothing could be judged: " + "; ".join(
        [*said[:1], *([f"and {len(said) - 1} other feature(s) alike"] if len(said) > 1 else []),
         *([f"predictions: {predictions['reasons'][0]}"] if predictions.get("reasons") else [])])
        + ". Widen the window (--last, --since), or lower --min-rows")


def patient_column_text(block: dict[str, Any]) -> str:
    """The report's sentence on the patients of a dataset of visits (``traffic.patient_column``)."""
    if block.get("note"):
        return block["note"]
    return (f"patient column '{block['name']}': {block['rows_naming_a_patient']:,} of the rows name "
            f"{block['patients_named']:,} patient(s); drift and live recall count a patient's rows as one patient's")


def unnamed_patients_text(columns: list[str]) -> str:
    """The report's sentence for a dataset whose rows look like visits but name no patient column
    (``traffic.unnamed_patient_columns``: the columns ingestion saw repeat a patient's number over rows)."""
    named = ", ".join(f"'{c}'" for c in columns)
    return (f"the model's training rows look like visits of the same patients (ingestion saw {named} repeat a patient's "
            "number over rows), but its dataset names no patient column: the drift tests take each row as independent, "
            "so a window of a few patients' visits is called drift far too often (60 % of a real table's clean "
            f"windows). Set patient_column = \"{columns[0]}\" in the dataset's config, ingest it again and retrain")


def render_html(report: dict[str, Any]) -> str:
    r = report
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Diagnosa monitoring — "
             f"{_e(r['endpoint'])}</title><style>{CSS}</style></head><body>"]
    parts.append(f"<h1>Diagnosa monitoring report — endpoint <code>{_e(r['endpoint'])}</code></h1>")
    parts.append(f"<div class='meta'>window {_e(r['window']['start'] or 'beginning')} → "
                 f"{_e(r['window']['end'] or 'now')} · generated {_e(r['generated_at'])} · "
                 f"{r['traffic']['events']} captured requests, {r['traffic']['patients']} "
                 f"{'rows' if r['traffic'].get('patient_column') else 'patients'} · "
                 f"{r['quality']['feedback']['matched']} confirmed diagnoses joined"
                 + _versions(r["traffic"]) + "</div>")
    if r["traffic"].get("patient_column"):
        parts.append(f"<p id='patient-column'>{_e(patient_column_text(r['traffic']['patient_column']))}</p>")
    if r["traffic"].get("unnamed_patient_columns"):
        parts.append(f"<p id='unnamed-patients'>{_e(unnamed_patients_text(r['traffic']['unnamed_patient_columns']))}</p>")
    ahead = r["traffic"].get("ahead_of_now") or {}
    if ahead.get("events"):
        parts.append(f"<p id='ahead-of-now'>{ahead['events']} of these requests ({ahead['patients']} patients) are "
                     f"stamped after this report's time, up to {_e(ahead['latest'])}: the endpoint's clock runs ahead "
                     "of this machine's, and the next window with no end counts them again.</p>")
    parts.append(f"<div class='verdict' id='overall'>Overall: {_badge(r['verdict'])}</div>")
    if r["alerts"]:
        parts.append("<ul class='alerts' id='alerts'>" + "".join(f"<li>{_e(a)}</li>" for a in r["alerts"]) + "</ul>")
    elif insufficient_text(r):
        parts.append(f"<p id='alerts'>{_e(insufficient_text(r) or '')}</p>")
    else:
        parts.append("<p id='alerts'>No alert: no feature drifted and no class fell below its recall threshold.</p>")
    retrain = r["retrain"]
    parts.append(f"<p>Retraining: <b>{'recommended' if retrain['recommended'] else 'not needed'}</b>"
                 + (f" — {_e('; '.join(retrain['reasons']))}" if retrain["reasons"] else "") + "</p>")

    # Live quality.
    q = r["quality"]
    parts.append("<h2 id='quality'>Live quality (doctors' confirmed diagnoses)</h2>")
    judged = q.get("window")  # reports written before the feedback lag have none: the window's requests
    if judged and judged.get("feedback_lag_seconds"):
        parts.append(f"<p class='meta'>requests judged: {_e(judged['start'])} → {_e(judged['end'] or 'now')} "
                     f"({judged['events']} requests, {judged['patients']} patients): the window and the "
                     f"{_e(lag_text(judged['feedback_lag_seconds']))} of feedback lag before it, whose feedback may "
                     "have come since their own report</p>")
    if q["n"]:
        parts.append(f"<img alt='live recall per class' src='{_recall_plot(q['per_class'])}'>")
    parts.append("<table><tr><th>class</th><th class='num'>confirmed</th><th class='num'>predicted right</th>"
                 "<th class='num'>recall</th><th>95% interval</th><th class='num'>threshold</th><th>status</th>"
                 "<th>predicted as</th></tr>")
    for label, c in q["per_class"].items():
        interval = "—" if not c["interval_95"] else f"{c['interval_95'][0]:.2f}–{c['interval_95'][1]:.2f}"
        predicted_as = ", ".join(f"{_e(k)}: {v}" for k, v in sorted(c["predicted_as"].items(), key=lambda t: -t[1]))
        parts.append(f"<tr><td>{_e(label)}</td><td class='num'>{c['n']}</td><td class='num'>{c['hits']}</td>"
                     f"<td class='num'>{_fmt(c['recall'])}</td><td>{interval}</td><td class='num'>{c['threshold']:.2f}</td>"
                     f"<td>{_badge(c['status'])}</td><td>{predicted_as or '—'}</td></tr>")
    unseen = q.get("orphan_unseen") or {"status": NOT_MONITORED}  # reports written before it
    for title, o in (("orphan slice", q["orphan"]), ("orphan diseases absent from training", unseen)):
        if o["status"] == NOT_MONITORED:  # no orphan slice (a dataset of your own), or its diseases not known
            continue
        parts.append(f"<tr><td><b>{title}</b> (macro)</td><td class='num'>{o['n']}</td><td></td>"
                     f"<td class='num'>{_fmt(o['macro_recall'])}</td><td></td><td class='num'>{o['threshold']:.2f}</td>"
                     f"<td>{_badge(o['status'])}</td><td>"
                     + ", ".join(f"{_e(k)}: {v['recall']:.2f} (n={v['n']})" for k, v in o["recall_per_class"].items())
                     + "</td></tr>")
    parts.append("</table>")
    fb = q["feedback"]
    parts.append(f"<p class='meta'>feedback objects read: {fb['records']} ({fb['superseded']} superseded by a later "
                 f"feedback for the same event), matched to a capture of the requests judged: {fb['matched']}, minimum "
                 f"per class before a recall can fail: {r['thresholds']['quality']['min_feedback']}"
                 + (f"; feedback for events outside this window, not read: {fb['outside_window']}"
                    if fb.get("outside_window") else "")
                 + (f"; feedback for event ids this window's traffic does not name, not read: "
                    f"{fb['not_named_by_traffic']}" if fb.get("not_named_by_traffic") else "") + ".</p>")

    # Features.
    parts.append("<h2 id='features'>Data drift per feature</h2>")
    parts.append("<table id='feature-table'><tr><th>feature</th><th>kind</th><th>verdict</th><th class='num'>live n</th>"
                 "<th class='num'>PSI</th><th>test</th><th class='num'>missing (base → live)</th><th>why</th></tr>")
    features = sorted(r["features"], key=lambda f: (_VERDICT_ORDER.get(f["verdict"], 9), f["name"]))
    for f in features:
        tests = f["tests"]
        test = ""
        if "ks" in tests:
            test = f"KS D={tests['ks']['statistic']:.3f}, p={tests['ks']['p_value']:.2g}"
        elif "chi2" in tests:
            test = f"χ² p={tests['chi2']['p_value']:.2g}"
        miss = f["missing"]
        missing = f"{_fmt(miss.get('baseline_rate'), True)} → {_fmt(miss.get('live_rate'), True)}"
        parts.append(f"<tr data-feature='{_e(f['name'])}'><td><code>{_e(f['name'])}</code></td><td>{_e(f['kind'])}</td>"
                     f"<td>{_badge(f['verdict'])}</td><td class='num'>{f['n_present']}</td>"
                     f"<td class='num'>{_fmt(tests.get('psi'))}</td><td>{_e(test)}</td><td class='num'>{missing}</td>"
                     f"<td>{_e('; '.join(f['reasons']))}</td></tr>")
    parts.append("</table><div class='grid'>")
    for f in features:
        dist = f.get("distribution") or {}
        if not dist.get("bins") or f["verdict"] == "insufficient data":
            continue
        parts.append(f"<div class='card'><h3><code>{_e(f['name'])}</code> {_badge(f['verdict'])}</h3>"
                     f"<img alt='{_e(f['name'])} baseline vs live' "
                     f"src='{_bars(f['name'], dist['bins'], dist['baseline'], dist['live'])}'>"
                     "</div>")
    parts.append("</div>")

    # Predictions.
    p = r["predictions"]
    parts.append(f"<h2 id='predictions'>Predicted categories {_badge(p['verdict'])}</h2>")
    if p.get("baseline_share"):
        chart = _bars("predicted category", p["labels"], p["baseline_share"], p["live_share"])
        parts.append(f"<img alt='predicted categories' src='{chart}'>")
    parts.append("<table><tr><th>category</th><th class='num'>test (baseline)</th><th class='num'>live</th></tr>")
    for label in p["labels"]:
        base = p.get("baseline_counts", {}).get(label)
        parts.append(f"<tr><td>{_e(label)}</td><td class='num'>{'—' if base is None else int(base)}</td>"
                     f"<td class='num'>{p['live_counts'].get(label, 0)}</td></tr>")
    parts.append("</table>" + (f"<p>{_e('; '.join(p['reasons']))}</p>" if p["reasons"] else ""))

    # Violations.
    parts.append("<h2 id='violations'>Constraint violations (SageMaker checks)</h2>")
    if r["constraint_violations"]:
        parts.append("<table><tr><th>feature</th><th>check</th><th>description</th></tr>" + "".join(
            f"<tr><td><code>{_e(v['feature_name'])}</code></td><td>{_e(v['constraint_check_type'])}</td>"
            f"<td>{_e(v['description'])}</td></tr>" for v in r["constraint_violations"]) + "</table>")
    else:
        parts.append("<p>None.</p>")

    # Skipped.
    parts.append("<h2 id='skipped'>Skipped input</h2>")
    for title, block in (("capture lines and events", r["traffic"]["skipped"]), ("feedback", fb["skipped"])):
        parts.append(f"<h3 style='font-size:14px'>{_e(title)}: {block['total']} skipped</h3>")
        if block["by_reason"]:
            parts.append("<table class='skipped'><tr><th>reason</th><th class='num'>count</th><th>examples</th></tr>"
                         + "".join(f"<tr><td>{_e(s['reason'])}</td><td class='num'>{s['count']}</td>"
                                   f"<td>{'<br>'.join(_e(x) for x in s['examples'])}</td></tr>"
                                   for s in block["by_reason"]) + "</table>")
    # Refused requests: the endpoint answered 4xx/5xx (its errors stream): a client sending bad input is an incident.
    refused = r.get("refusals") or {}
    parts.append(f"<h3 style='font-size:14px' id='refused'>refused requests: {refused.get('total', 0)}</h3>")
    if refused.get("total"):
        statuses = ", ".join(f"{n} × {status}" for status, n in refused["by_status"].items())
        parts.append(f"<p>by status: {_e(statuses)}</p>"
                     "<table class='skipped'><tr><th>reason (no request body or value is kept)</th>"
                     "<th class='num'>count</th></tr>"
                     + "".join(f"<tr><td>{_e(x['reason'])}</td><td class='num'>{x['count']}</td></tr>"
                               for x in refused["by_reason"]) + "</table>")
    if refused.get("strays"):  # objects of the errors stream's folders that are not its .jsonl objects: not read
        parts.append(f"<p>objects in the refusals stream that are not .jsonl, not read: {refused['strays']}"
                     + "".join(f"<br><code>{_e(key)}</code>" for key in refused.get("stray_examples") or [])
                     + "</p>")
    parts.append(f"<p class='meta'>baseline: {_e(', '.join(r['baseline']['sources']))} "
                 f"({r['baseline']['item_count']} training rows). Thresholds: {_e(r['thresholds']['drift'])}.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
