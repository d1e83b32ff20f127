"""Learning curves of a run: validation BLEU against updates for every trained model.

Read from each model's ``train_log.csv`` (docs/formats.md: one row per update,
``valid_bleu`` filled at validation updates). One panel per (dataset, direction,
data), one line per model; written as ``learning_curves.png``/``.pdf`` with the
points themselves in ``learning_curves.csv`` (each with the log it came from), so
every plotted number can be traced.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from aeqa_model.io import InputError, atomic_open  # noqa: E402
from aeqa_model.paper.figures import save_figure  # noqa: E402

NAME = "learning_curves"
COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
LINESTYLES = ("-", "--", ":")
CSV_FIELDS = ["dataset", "direction", "data", "model", "update", "valid_bleu", "valid_loss", "train_log"]


def cell_of(log_path: str | Path) -> tuple[str, str, str, str]:
    """(dataset, direction, data, model) of ``.../models/<dataset>/<direction>/<data>/<model>/train_log.csv``."""
    parts = Path(log_path).parts
    if len(parts) < 6 or parts[-6] != "models" or parts[-1] != "train_log.csv":
        raise InputError(f"{log_path}: not a models/<dataset>/<direction>/<data>/<model>/train_log.csv path")
    return parts[-5], parts[-4], parts[-3], parts[-2]


def validation_points(log_path: str | Path) -> list[dict]:
    """The validation rows of one train_log.csv: update, valid_bleu and valid_loss."""
    path = Path(log_path)
    if not path.exists():
        raise InputError(f"{path}: training log not found (was the model trained by this pipeline?)")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"update", "valid_bleu"} <= set(reader.fieldnames):
            raise InputError(f"{path}: not a training log (needs the columns update and valid_bleu)")
        points = []
        for row in reader:
            if row.get("valid_bleu") not in (None, ""):
                points.append({"update": int(row["update"]), "valid_bleu": float(row["valid_bleu"]),
                               "valid_loss": float(row["valid_loss"]) if row.get("valid_loss") else math.nan})
    # A resumed run may log an update twice: keep the last record of each.
    by_update = {p["update"]: p for p in points}
    return [by_update[u] for u in sorted(by_update)]


def render_learning_curves(logs: list[str], out_dir: str | Path, notice: str = "") -> list[Path]:
    """Write ``{out_dir}/learning_curves.{png,pdf,csv}`` from the given train_log.csv files."""
    if not logs:
        raise InputError("learning curves: no training logs given")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    panels: dict[tuple, list] = {}
    rows = []
    for log in sorted(set(logs)):
        dataset, direction, data, model = cell_of(log)
        points = validation_points(log)
        panels.setdefault((dataset, direction, data), []).append((model, points))
        rows += [{"dataset": dataset, "direction": direction, "data": data, "model": model, **p, "train_log": str(log)}
                 for p in points]
    cols = min(2, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(8.5 * cols, 4.6 * nrows), squeeze=False)
    for ax, ((dataset, direction, data), curves) in zip(axes.flat, sorted(panels.items())):
        for i, (model, points) in enumerate(sorted(curves, key=lambda c: c[0])):
            # Colour and line style together keep up to 30 models of one panel apart.
            style = {"color": COLORS[i % len(COLORS)], "linestyle": LINESTYLES[(i // len(COLORS)) % len(LINESTYLES)]}
            if points:
                ax.plot([p["update"] for p in points], [p["valid_bleu"] for p in points], marker="o", ms=3,
                        label=model, **style)
            else:
                ax.plot([], [], label=f"{model} (no validation yet)", **style)
        ax.set_title(f"{dataset} {direction} ({data})", fontsize=10)
        ax.set_xlabel("updates")
        ax.set_ylabel("validation BLEU")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if len(curves) > 8 else 1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    title = "Learning curves: validation BLEU (the trainer's greedy decode of the validation subset) against updates"
    fig.suptitle(title + (f"\n{notice}" if notice else ""), fontsize=9)
    fig.tight_layout()
    paths = save_figure(fig, out_dir, NAME)
    text = io.StringIO()
    writer = csv.DictWriter(text, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = out_dir / f"{NAME}.csv"
    with atomic_open(csv_path) as handle:
        handle.write(text.getvalue())
    return paths + [csv_path]
