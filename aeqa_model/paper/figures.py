"""Render the paper's figures (1, 4, 5, 6, 7) as PNG and PDF from metrics.json files.

The figure's ``plot`` key picks the drawing:

``sweep`` (Figures 1 and 4)
    one line per series over ``points`` (each a pipeline cell with an ``x``);
    an optional ``baseline`` cell is drawn as a dashed horizontal line
    (Figure 1's "NAT under its original inference conditions").
``length_buckets`` (Figure 5)
    grouped bars of ``metrics.length_buckets[*].bleu_tok`` per model.
``repetition`` (Figure 6)
    grouped bars of ``metrics.repetition["1".."4"]`` (shown in %) per model.
``tradeoff`` (Figure 7)
    speedup vs. BLEU, reproduced next to the paper's Table 1 values.

The paper's figure data points are not legible in the text copy, so the
renderer never draws paper points it was not given: it draws what
``config/paper/<figure>.csv`` states (an x value the text names, a table the
values come from) and says in the figure that the rest is not given in the
text.  Cells that were not run or lack the metric are listed under the plot.
"""
from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from aeqa_model.io import InputError  # noqa: E402
from aeqa_model.paper.cells import CELL_KEYS, MetricsIndex, layered_coords, load_metrics  # noqa: E402
from aeqa_model.paper.grid import explicit_decodings, require_block_metrics  # noqa: E402
from aeqa_model.paper.numbers import parse_paper_number  # noqa: E402
from aeqa_model.paper.paperdata import load_figure, load_table  # noqa: E402
from aeqa_model.paper.table_text import notice  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _cell_name(c: dict) -> str:
    return "/".join(str(c.get(k)) for k in ("dataset", "direction", "data", "model", "decoding"))


class FigureRenderer:
    """Collects reproduced values for one figure and draws it."""

    def __init__(self, target: str, spec: dict, paper_dir: str | Path, metrics_paths: list[str]):
        self.target = target
        self.spec = spec
        self.paper_dir = paper_dir
        if "series" not in spec:
            raise InputError(f"spec of {target}: missing 'series'")
        self.metrics = load_metrics(metrics_paths)
        self.index = MetricsIndex(self.metrics, explicit_decodings(spec), spec.get("default_decodings"))
        require_block_metrics(target, spec, self.index, metrics_paths)
        self.facts = load_figure(paper_dir, spec.get("paper_figure", target))
        self.missing: list[str] = []
        self.metric = spec.get("metric", "bleu_tok")

    # ------------------------------------------------------------- helpers --
    def _doc(self, coords: dict):
        return self.index.find(*(coords.get(k) for k in CELL_KEYS))

    def _value(self, coords: dict, metric: str | None = None):
        val = self.index.value(coords, metric or self.metric)
        if not val.ok:
            self.missing.append(f"{_cell_name(coords)}: {val.reason}")
            return None
        return float(val.value)

    def _footer(self, fig, extra: list[str]) -> None:
        """Notes under the plot: demo notice, what the paper gives, missing cells."""
        lines = []
        text = notice(self.spec, self.metrics)
        if text:
            lines.append(text)
        for fact in self.facts:
            if fact.kind == "not_given":
                lines.append(f"Paper ({self._title_name()}): {fact.statement}.")
            elif fact.kind in ("statement", "table_ref"):
                lines.append(f"Paper text: {fact.statement}.")
        lines.extend(extra)
        if self.missing:
            shown = self.missing[:6]
            lines.append("Missing: " + "; ".join(shown) + (f"; and {len(self.missing) - 6} more" if len(self.missing) > 6 else ""))
        # ~0.6 em per character at 7 pt keeps the notes inside the figure's width.
        width = int(fig.get_figwidth() * 72 / (7 * 0.6))
        wrapped = []
        for line in lines:
            wrapped.extend(textwrap.wrap(line, width) or [""])
        fig.text(0.01, 0.01, "\n".join(wrapped), fontsize=7, va="bottom", ha="left", color="#333333")
        fig.subplots_adjust(bottom=0.14 + 0.028 * len(wrapped), top=0.88)

    def _title_name(self) -> str:
        return f"Figure {self.target[len('figure'):]}"

    # --------------------------------------------------------------- plots --
    def draw(self):
        plot = self.spec.get("plot")
        if plot not in ("sweep", "length_buckets", "repetition", "tradeoff"):
            raise InputError(f"spec of {self.target}: plot must be sweep, length_buckets, repetition or tradeoff, got {plot!r}")
        return getattr(self, f"_draw_{plot}")()

    def _draw_sweep(self):
        fig, ax = plt.subplots(figsize=(8, 5.2))
        defaults = self.spec.get("defaults", {})
        extra = []
        drawn = 0
        for i, series in enumerate(self.spec["series"]):
            color = COLORS[i % len(COLORS)]
            base = {**defaults, **{k: v for k, v in series.items() if k in CELL_KEYS}}
            xs, ys = [], []
            for point in series.get("points", []):
                y = self._value(layered_coords(base, point))
                if y is not None:
                    xs.append(float(point["x"]))
                    ys.append(y)
            order = sorted(range(len(xs)), key=lambda j: xs[j])
            xs, ys = [xs[j] for j in order], [ys[j] for j in order]
            if xs:
                ax.plot(xs, ys, marker="o", color=color, label=f"{series['label']} (reproduced)")
                drawn += 1
            if "baseline" in series:
                y0 = self._value(layered_coords(base, series["baseline"]))
                if y0 is not None:
                    ax.axhline(y0, linestyle="--", color=color, linewidth=1.2,
                               label=f"{series['label']}: {series.get('baseline_label', 'original inference')} (reproduced)")
                    drawn += 1
            for fact in self.facts:
                if fact.kind == "stated_x" and fact.series == series.get("paper_series"):
                    ax.axvline(float(fact.x), linestyle=":", color=color, linewidth=1.5,
                               label=f"paper text: {fact.statement}")
                    extra.append(f"Dotted line, {fact.label}: {fact.statement} (Sec. 4.1); no BLEU value is given in the text.")
        if not drawn:
            ax.text(0.5, 0.5, "no reproduced values (see notes below)", ha="center", va="center", transform=ax.transAxes)
        ax.margins(x=0.08)
        ax.set_xlabel(self.spec.get("xlabel", "x"))
        ax.set_ylabel(self.spec.get("ylabel", self.metric))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        self._footer(fig, extra)
        return fig

    def _single_cells(self):
        defaults = self.spec.get("defaults", {})
        for series in self.spec["series"]:
            yield series, layered_coords(defaults, series)

    def _bars(self, ax, labels, groups, values, ylabel):
        """Grouped bars: one group per x label, one bar per series."""
        n = max(1, len(values))
        width = 0.8 / n
        for i, (name, vals) in enumerate(values):
            xs = [j + (i - (n - 1) / 2) * width for j in range(len(labels))]
            heights = [v if v is not None else 0.0 for v in vals]
            bars = ax.bar(xs, heights, width=width, label=name, color=COLORS[i % len(COLORS)])
            for bar, v in zip(bars, vals):
                if v is None:
                    bar.set_hatch("//")
                    bar.set_alpha(0.3)
        tallest = max((v for _, vals in values for v in vals if v is not None), default=0.0)
        if tallest > 0:
            ax.set_ylim(0, tallest * 1.3)  # head-room so the legend never hides a bar
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels)
        ax.set_xlabel(groups)
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
        if values:
            ax.legend(fontsize=8, ncol=4, loc="upper left")

    def _draw_length_buckets(self):
        fig, ax = plt.subplots(figsize=(9, 5.2))
        edges: list[tuple] = []
        per_series = []
        for series, coords in self._single_cells():
            m = self._doc(coords)
            if m is None:
                self.missing.append(f"{_cell_name(coords)}: not run in this config")
                continue
            buckets = (m.doc.get("metrics") or {}).get("length_buckets")
            if not isinstance(buckets, list) or not buckets:
                self.missing.append(f"{_cell_name(coords)}: metric not available: no length_buckets in metrics.json")
                continue
            per_series.append((series["label"], {(b["lo"], b["hi"]): b for b in buckets}))
            for b in buckets:
                if (b["lo"], b["hi"]) not in edges:
                    edges.append((b["lo"], b["hi"]))
        edges.sort()
        labels = [f"{lo}-{hi - 1}" if hi < 1000 else f"≥{lo}" for lo, hi in edges]
        values = []
        for name, by_edge in per_series:
            values.append((name, [by_edge.get(e, {}).get("bleu_tok") for e in edges]))
        self._bars(ax, labels, "reference length (tokens)", values, self.spec.get("ylabel", "BLEU (tokenized)"))
        extra = ["Hatched, faded bars: empty bucket (no reference of that length)."] if any(
            v is None for _, vals in values for v in vals) else []
        if per_series:
            first = per_series[0][1]
            extra.append("Sentences per bucket: " + ", ".join(f"{lab}: {first.get(e, {}).get('n', 0)}" for lab, e in zip(labels, edges)))
        self._footer(fig, extra)
        return fig

    def _draw_repetition(self):
        fig, ax = plt.subplots(figsize=(9, 5.2))
        orders = [str(n) for n in self.spec.get("orders", [1, 2, 3, 4])]
        values = []
        for series, coords in self._single_cells():
            m = self._doc(coords)
            if m is None:
                self.missing.append(f"{_cell_name(coords)}: not run in this config")
                continue
            rep = (m.doc.get("metrics") or {}).get("repetition")
            if not isinstance(rep, dict):
                self.missing.append(f"{_cell_name(coords)}: metric not available: no repetition in metrics.json")
                continue
            values.append((series["label"], [100.0 * rep[o] if isinstance(rep.get(o), (int, float)) else None for o in orders]))
        self._bars(ax, [f"{o}-gram" for o in orders], "n-gram order", values,
                   self.spec.get("ylabel", "repeated n-grams (% of hypothesis n-grams)"))
        formula = next((((m.doc.get("metrics") or {}).get("repetition") or {}).get("formula") for m in self.metrics
                        if isinstance((m.doc.get("metrics") or {}).get("repetition"), dict)), None)
        self._footer(fig, [f"Repetition rate: {formula}"] if formula else [])
        return fig

    def _draw_tradeoff(self):
        fig, (ax_r, ax_p) = plt.subplots(1, 2, figsize=(11, 5.4))
        paper_spec = self.spec.get("paper", {})
        table = load_table(self.paper_dir, paper_spec.get("table", "table1")) if paper_spec else None
        extra = []
        for i, (series, coords) in enumerate(self._single_cells()):
            color = COLORS[i % len(COLORS)]
            x = self._value(coords, "speedup")
            y = self._value(coords, self.metric)
            if x is not None and y is not None:
                ax_r.scatter([x], [y], color=color, s=45, zorder=3)
                ax_r.annotate(series["label"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
            if table is not None and series.get("paper_row"):
                px = table.get(series["paper_row"], paper_spec.get("x_column", "Speedup"))
                py = table.get(series["paper_row"], paper_spec["y_column"], paper_spec.get("y_data"))
                pxv = parse_paper_number(px.value) if px else None
                pyv = parse_paper_number(py.value) if py else None
                if pxv is not None and pyv is not None:
                    ax_p.scatter([float(pxv)], [float(pyv)], facecolors="none", edgecolors=color, s=55, zorder=3)
                    ax_p.annotate(series["label"], (float(pxv), float(pyv)), textcoords="offset points",
                                  xytext=(5, 4), fontsize=8)
                else:
                    extra.append(f"{series['label']}: no Table 1 value for this column ('-' or not printed).")
        ax_r.set_title("reproduced (this run)", fontsize=10)
        where = f"{paper_spec.get('y_column', '')} {paper_spec.get('y_data', '')}".strip()
        ax_p.set_title(f"paper: Table 1 values ({where})\n(Fig. 7's own points are not given in the text)", fontsize=9)
        for ax in (ax_r, ax_p):
            ax.set_xlabel(self.spec.get("xlabel", "speedup over AT (batch size 1)"))
            ax.set_ylabel(self.spec.get("ylabel", "BLEU"))
            ax.grid(True, alpha=0.3)
        speeds = {(m.doc.get("speed") or {}).get("device") for m in self.metrics if m.doc.get("speed")}
        if speeds - {None}:
            extra.append("Speed measured on: " + ", ".join(sorted(str(s) for s in speeds if s)) + ".")
        self._footer(fig, extra)
        return fig

    # --------------------------------------------------------------- write --
    def write(self, out_dir: str | Path) -> list[Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        fig = self.draw()
        fig.suptitle(textwrap.fill(f"{self._title_name()}: {self.spec['caption']}", 110),
                     fontsize=10)
        return save_figure(fig, out_dir, self.target)


def save_figure(fig, out_dir: Path, name: str) -> list[Path]:
    """Write ``{out_dir}/{name}.png`` and ``.pdf`` atomically, then close ``fig``."""
    paths = []
    try:
        for fmt in ("png", "pdf"):
            path = out_dir / f"{name}.{fmt}"
            # Save under a temporary sibling name, then rename: a killed job
            # never leaves a half-written figure that looks finished.
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=out_dir)
            os.close(fd)
            try:
                fig.savefig(tmp, format=fmt, dpi=150)
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def render_figure(target: str, spec: dict, paper_dir: str | Path, metrics_paths: list[str], out_dir: str | Path) -> list[Path]:
    """Write ``{out_dir}/{target}.png`` and ``.pdf``."""
    return FigureRenderer(target, spec, paper_dir, metrics_paths).write(out_dir)
