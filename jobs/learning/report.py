"""The pipeline's report: report.json (metrics, settings, timings, row counts) and report.html with PNG plots."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from jobs.learning.baseline import describe
from jobs.learning.selection import describe as selection_describe
from jobs.platform.paths import local_path


def _plots(
    folder: Path,
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    points: np.ndarray,
    point_labels: np.ndarray,
) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix, precision_recall_curve

    made = []
    predicted = (probabilities >= threshold).astype(int)
    matrix = confusion_matrix(labels, predicted, labels=[0, 1])
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center", color="black", fontsize=12)
    ax.set_xticks([0, 1], ["0", "1"])
    ax.set_yticks([0, 1], ["0", "1"])
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(f"Confusion matrix (threshold {threshold:.2f})")
    fig.tight_layout()
    fig.savefig(folder / "confusion_matrix.png", dpi=110)
    plt.close(fig)
    made.append(("confusion_matrix.png", "Confusion matrix on the validation split"))

    if len(set(labels.tolist())) == 2:
        precision, recall, _ = precision_recall_curve(labels, probabilities)
        fig, ax = plt.subplots(figsize=(4.5, 3.6))
        ax.plot(recall, precision)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("Precision-recall curve (validation)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        fig.tight_layout()
        fig.savefig(folder / "precision_recall.png", dpi=110)
        plt.close(fig)
        made.append(("precision_recall.png", "Precision-recall curve on the validation split"))

    if len(points) >= 3:
        from sklearn.decomposition import PCA

        xy = PCA(n_components=2, random_state=0).fit_transform(points)
        fig, ax = plt.subplots(figsize=(5, 4))
        for value, colour in ((0, "tab:blue"), (1, "tab:red")):
            chosen = point_labels == value
            ax.scatter(xy[chosen, 0], xy[chosen, 1], s=6, alpha=0.5, c=colour, label=f"label {value}")
        ax.legend()
        ax.set_title("Embeddings, first two principal components")
        fig.tight_layout()
        fig.savefig(folder / "embeddings_pca.png", dpi=110)
        plt.close(fig)
        made.append(("embeddings_pca.png", "PCA of the document embeddings, coloured by label"))
    return made


def cv_cell(row: dict) -> str:
    """One CV cell: log loss (when recorded) and F1, each mean ± s.d. over the folds."""
    f1 = f"F1 {row['f1']:.3f} ± {row['f1_sd']:.3f}"
    if "log_loss" not in row:  # recorded before the CV kept log loss
        return f1
    return f"loss {row['log_loss']:.4f} ± {row['log_loss_sd']:.4f}<br>{f1}"


def cv_table(selection: dict | None) -> str:
    """The model selection's cross-validation table: one row per embedding set, one column per regParam."""
    if not selection:
        return ""
    grid = selection["grid"]
    chosen = selection["chosen"]
    by_set: dict[tuple, dict] = {}
    for row in selection["cv"]:
        by_set.setdefault((row["layer"], row["pooling"], row["dim"]), {})[row["reg_param"]] = row
    header = "".join(f"<th>regParam {g:g}</th>" for g in grid)
    body = ""
    for (layer, pooling, dim), cells in by_set.items():
        tds = ""
        for g in grid:
            row = cells.get(g)
            best = (layer, pooling, g) == (chosen["layer"], chosen["pooling"], chosen["reg_param"])
            text = "–" if not row else cv_cell(row)
            tds += f"<td>{'<b>' + text + '</b>' if best else text}</td>"
        body += f"<tr><th>{html.escape(layer)} / {html.escape(pooling)}</th><td>{dim}</td>{tds}</tr>"
    return (
        f"<h2>Model selection</h2><p>{html.escape(selection_describe(selection))}. Mean held-out log loss and F1 "
        f"± s.d. over the {selection['folds']} folds of the training split ({selection['engine']} engine); the "
        "chosen cell is bold.</p>"
        f"<table><tr><th>layer / pooling</th><th>dim</th>{header}</tr>{body}</table>"
    )


def write_report(
    folder: str | Path,
    report: dict,
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    points: np.ndarray,
    point_labels: np.ndarray,
) -> tuple[Path, Path]:
    """report.json and report.html (with its PNGs) in ``folder``."""
    folder = Path(local_path(str(folder)))
    folder.mkdir(parents=True, exist_ok=True)
    plots = _plots(folder, labels, probabilities, threshold, points, point_labels)
    report = {**report, "plots": [name for name, _ in plots]}
    (folder / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    m = report["metrics"]["validation"]
    b = report["metrics"].get("tfidf_baseline") or {}
    fmt = lambda v: "–" if v is None else f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
    interval = lambda r: "–" if not r.get("f1_interval") else "{:.3f} – {:.3f}".format(*r["f1_interval"])  # noqa: E731
    metric_rows = f"<tr><th>F1 95 % bootstrap interval</th><td>{interval(m)}</td><td>{interval(b)}</td></tr>"
    metric_rows += "".join(
        f"<tr><th>{html.escape(name)}</th><td>{fmt(m.get(key))}</td><td>{fmt(b.get(key))}</td></tr>"
        for name, key in [
            ("F1", "f1"),
            ("precision", "precision"),
            ("recall", "recall"),
            ("ROC AUC", "roc_auc"),
            ("PR AUC", "pr_auc"),
            ("F1-best threshold", "best_threshold"),
            ("F1 at that threshold", "best_threshold_f1"),
            ("validation rows", "rows"),
        ]
    )
    c = report["metrics"].get("comparison")
    verdict = (
        "<p>Embeddings − baseline: {:+.3f} F1, paired bootstrap 95 % interval {:+.3f} to {:+.3f} on the same {:,} "
        "rows: <b>{}</b>.</p>".format(
            c["f1_difference"], *c["interval"], c["rows"], html.escape(c["verdict"])
        )
        if c
        else ""
    )
    baseline_about = (
        "<p>Baseline: {}; cross-validated F1 per regParam: {}.</p>".format(
            html.escape(describe(b)), ", ".join(f"{r['reg_param']:g}: {r['f1']:.3f}" for r in b.get("cv", []))
        )
        if b
        else ""
    )
    selection_table = cv_table(report["metrics"].get("selection"))
    stage_rows = "".join(
        f"<tr><th>{html.escape(stage)}</th><td>{info.get('seconds', 0):.1f} s</td><td>{html.escape(str(info.get('rows', '')))}</td>"
        f"<td>{html.escape(str(info.get('note', '')))}</td></tr>"
        for stage, info in report.get("stages", {}).items()
    )
    images = "".join(
        f'<figure><img src="{name}" alt="{html.escape(title)}"><figcaption>{html.escape(title)}</figcaption></figure>'
        for name, title in plots
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>elmo-lake report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}} table{{border-collapse:collapse;margin:1em 0}}
th,td{{border:1px solid #ccc;padding:4px 10px;text-align:left}} figure{{display:inline-block;margin:0 1em 1em 0}}
code{{background:#f4f4f4;padding:1px 4px}}</style></head><body>
<h1>elmo-lake report</h1>
<p>Classifier <code>{html.escape(report.get("classifier_id", ""))}</code> ({html.escape(report.get("engine", ""))} engine) on ELMo
embeddings <code>{html.escape(report.get("model_id", ""))}</code>, layer <code>{html.escape(report.get("layer", ""))}</code>,
pooling <code>{html.escape(report.get("pooling", ""))}</code>. Delta tables written by
{html.escape(report.get("delta_engine", "?"))}.</p>
<h2>Validation metrics</h2>
<table><tr><th></th><th>ELMo + logistic regression</th><th>honest baseline: TF-IDF 1–2-grams + logistic regression</th></tr>{metric_rows}</table>
{verdict}{baseline_about}{selection_table}
<h2>Plots</h2>{images}
<h2>Stages</h2><table><tr><th>stage</th><th>time</th><th>rows</th><th></th></tr>{stage_rows}</table>
<p>Predictions: <code>{html.escape(str(report.get("predictions_csv", "")))}</code>. All figures: <code>report.json</code>.</p>
</body></html>
"""
    (folder / "report.html").write_text(page, encoding="utf-8")
    return folder / "report.json", folder / "report.html"
