"""The compilation report: a static, self-contained HTML page (inline CSS and SVG, no
scripts), the plain-text `compile.log`, and the stage table ember-compile prints.

The page shows what a deployment engineer checks after compiling: the accuracy headline,
the decisions (normalization, crop, calibration, NPU input), what runs where (host pre,
NPU, host post), per-layer cycles and MAC utilization as bar charts, the per-node
similarity table (`<p>_node_info.csv`) and the time of each stage.
"""

from __future__ import annotations

import html
from pathlib import Path

from ember.driver.compile import Summary
from ember.support.atomic_output import atomic_output

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#1b1f24;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.sub{color:#57606a}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:14px 0}
.card{border:1px solid #d0d7de;border-radius:6px;padding:8px 14px;min-width:150px}
.card b{display:block;font-size:20px}.warn{background:#fff1e5;border:1px solid #f0883e;padding:8px 12px;border-radius:6px;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}tr.low td{background:#ffebe9}
.cols{display:grid;grid-template-columns:1fr 2fr 1fr;gap:12px}.col{border:1px solid #d0d7de;border-radius:6px;padding:8px}
.col h3{margin:0 0 6px;font-size:14px}.col ol{margin:0;padding-left:22px;max-height:420px;overflow:auto;font-size:12px}
code{font-size:12px;background:#f6f8fa;padding:1px 4px;border-radius:4px}svg text{font:11px system-ui,sans-serif}
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _bars(items: list[tuple[str, float, str]], color: str, scale_max: float | None = None) -> str:
    """A horizontal bar chart: (label, value, value text) per row."""
    if not items:
        return "<p class='sub'>none</p>"
    top = scale_max or max(v for _, v, _ in items) or 1.0
    row, label_w, bar_w = 16, 300, 640
    height = row * len(items) + 4
    parts = [f"<svg width='{label_w + bar_w + 90}' height='{height}' role='img'>"]
    for i, (label, value, text) in enumerate(items):
        y = i * row + 2
        short = label if len(label) <= 46 else label[:43] + "..."
        width = max(1.0, bar_w * value / top) if value > 0 else 0
        parts.append(
            f"<text x='{label_w - 6}' y='{y + 11}' text-anchor='end'><title>{_e(label)}</title>{_e(short)}</text>"
            f"<rect x='{label_w}' y='{y}' width='{width:.1f}' height='{row - 4}' fill='{color}'/>"
            f"<text x='{label_w + width + 4:.1f}' y='{y + 11}' fill='#57606a'>{_e(text)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(header: list[str], rows: list[list[object]], numeric: set[int] = frozenset(), low: list[bool] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for k, r in enumerate(rows):
        cls = " class='low'" if low and low[k] else ""
        cells = "".join(f"<td class='num'>{_e(c)}</td>" if i in numeric else f"<td>{_e(c)}</td>" for i, c in enumerate(r))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cos(values: list[float]) -> str:
    return f"{sum(values) / len(values):.4f}" if values else "-"


def render_html(summary: Summary) -> str:
    """The report page of a finished compilation."""
    stats, acc = summary.stats, summary.accuracy
    total = sum(s.seconds for s in summary.stages)
    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Ember report: {_e(summary.model)}</title>"
           f"<style>{_CSS}</style></head><body>",
           f"<h1>Ember compilation report: {_e(summary.model)}</h1>",
           f"<div class='sub'>arch <code>{_e(summary.arch)}</code> &middot; compiled in {total:.1f} s</div>"]  # fmt: skip
    if summary.calibration_generated:
        out.append("<p class='warn'>Calibrated on generated random data (no --calib): accuracy is unmeasured.</p>")
    cards = [(f"{v:.4f}", f"final '{k}' cosine to float") for k, v in summary.final_cosines.items()]
    if stats is not None:
        cards += [
            (f"{stats.total_cycles:,}", "NPU cycles per inference"),
            (f"{stats.npu_ms:.3f} ms", f"NPU latency at {stats.clock_mhz} MHz"),
            (f"{100 * stats.mac_utilization:.1f} %", "MAC utilization"),
            (f"{(stats.dram_read_bytes + stats.dram_write_bytes) / 1e6:.2f} MB", "DRAM traffic"),
        ]
    out.append("<div class='cards'>" + "".join(f"<div class='card'><b>{_e(a)}</b>{_e(b)}</div>" for a, b in cards) + "</div>")

    out.append("<h2>Decisions</h2>")
    out.append(_table(["what", "decision"], [list(d) for d in summary.decisions]))
    if summary.iodesc:
        rows = [[kind[:-1], d["name"], "x".join(map(str, d["shape"])), d["dtype"], d["layout"], d["pixel_format"],
                 f"{d['scale']:.6g}", d["zero_point"]]
                for kind in ("inputs", "outputs") for d in summary.iodesc.get(kind, [])]  # fmt: skip
        out.append("<h2>NPU inputs and outputs (IODESC)</h2>")
        out.append(_table(["", "name", "shape", "dtype", "layout", "pixel format", "scale", "zero point"], rows, {6, 7}))

    out.append("<h2>What runs where</h2><div class='cols'>")
    npu_rows = [(r.node.split(",")[0] + (" (+fused)" if "," in r.node else ""), r.type) for r in acc.nodes] if acc else []
    for title, nodes in (("host: pre", summary.placement.get("pre", [])), ("NPU", npu_rows),
                         ("host: post", summary.placement.get("post", []))):  # fmt: skip
        items = "".join(f"<li>{_e(n)} <span class='sub'>{_e(t)}</span></li>" for n, t in nodes) or "<li class='sub'>nothing</li>"
        out.append(f"<div class='col'><h3>{_e(title)} ({len(nodes)})</h3><ol>{items}</ol></div>")
    out.append("</div>")

    if stats is not None:
        layers = [(name, cycles) for name, cycles in stats.layer_cycles.items()]
        out.append(f"<h2>Cycles per layer</h2><p class='sub'>sum of the layer's instruction costs (load, compute, store);"
                   f" the engines overlap, so the total per inference is {stats.total_cycles:,}</p>")  # fmt: skip
        out.append(_bars([(n, c, f"{c:,}") for n, c in layers], "#0969da"))
        array = stats_array(summary)
        util = [(n, summary.layer_macs.get(n, 0) / (c * array), "") for n, c in summary.layer_compute_cycles.items()
                if summary.layer_macs.get(n, 0)]  # fmt: skip
        out.append("<h2>MAC utilization per layer</h2><p class='sub'>useful MACs / (compute-engine cycles x MAC array)</p>")
        out.append(_bars([(n, u, f"{100 * u:.1f} %") for n, u, _ in util], "#1a7f37", 1.0))

    if acc is not None:
        out.append(f"<h2>Similarity (cosine to float, per node)</h2><p class='sub'>{_e(len(acc.outputs[0].cos_quantized) if acc.outputs else 0)}"
                   f" samples; rows below {acc.threshold} are highlighted; also in <code>{_e(summary.stem)}_node_info.csv</code></p>")  # fmt: skip
        rows, low = [], []
        for r in [*acc.nodes, *acc.outputs]:
            rng = f"[{r.range[0]:.4g}, {r.range[1]:.4g}]" if r.range else "-"
            rows.append([r.node, r.type, r.runs_on, rng, _cos(r.cos_calibrated), _cos(r.cos_quantized), r.dtype])
            low.append(bool(r.cos_quantized) and r.quantized < acc.threshold)
        out.append(_table(["node", "type", "runs on", "range", "calibrated", "quantized", "dtype"], rows, {4, 5}, low))

    out.append("<h2>Stages</h2>")
    out.append(_bars([(s.name, s.seconds, f"{s.seconds:.2f} s") for s in summary.stages], "#8250df"))
    out.append(_table(["stage", "seconds", "artifacts"], [[s.name, f"{s.seconds:.2f}", " ".join(s.artifacts)] for s in summary.stages], {1}))
    if summary.messages:
        out.append("<h2>Messages</h2><pre>" + _e("\n".join(summary.messages)) + "</pre>")
    out.append("</body></html>\n")
    return "\n".join(out)


def stats_array(summary: Summary) -> int:
    from ember.target.arch import load_arch

    arch = load_arch(summary.arch)
    return arch.mac_rows * arch.mac_cols


def write_report(summary: Summary, path: Path) -> Path:
    with atomic_output(path) as handle:
        handle.write(render_html(summary))
    return path


def compile_log(summary: Summary) -> str:
    """compile.log: stages, decisions, figures and messages, as plain text."""
    lines = [f"ember-compile {summary.model} (arch {summary.arch})", "", "stages:"]
    lines += [f"  {s.name:<10} {s.seconds:8.2f} s  {' '.join(s.artifacts)}" for s in summary.stages]
    lines += ["", "decisions:"] + [f"  {k}: {v}" for k, v in summary.decisions]
    if summary.stats is not None:
        s = summary.stats
        lines += ["", f"NPU: {s.total_cycles} cycles ({s.npu_ms:.3f} ms at {s.clock_mhz} MHz), MAC utilization {100 * s.mac_utilization:.1f} %,"
                      f" DRAM read {s.dram_read_bytes} B, written {s.dram_write_bytes} B"]  # fmt: skip
    lines += [f"final output '{k}': cosine to float {v:.4f}" for k, v in summary.final_cosines.items()]
    if summary.calibration_generated:
        lines.append("WARNING: calibrated on generated data: accuracy is unmeasured")
    if summary.messages:
        lines += ["", "messages:"] + [f"  {m}" for m in summary.messages]
    return "\n".join(lines) + "\n"


def stage_table(summary: Summary):
    """The rich table of stage times ember-compile prints at the end."""
    from rich.table import Table

    table = Table(title="ember-compile stages")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("artifacts")
    for s in summary.stages:
        table.add_row(s.name, f"{s.seconds:.2f}", " ".join(s.artifacts))
    table.add_row("total", f"{sum(s.seconds for s in summary.stages):.2f}", "", style="bold")
    return table
