"""The report page of a continued-learning run (`mlff active-learn`): a table per round and
plots of stability, unexplored ratio and force errors over the rounds."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import numpy as np

from mlff_core.fileio import atomic_output
from mlff_core.report.html import html_figure, html_page, html_table
from mlff_core.report.plots import curves, png_base64, stability_violins
from mlff_core.units import force_conversion

UNIT = "kcal/mol/A"


def _passes(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """MD passes in order, named by the model that ran them (M0, M1, ...)."""
    passes = {f"M{r['round'] - 1}": r for r in summary["rounds"]}
    if summary.get("final"):
        passes[f"M{len(summary['rounds'])}"] = summary["final"]
    return passes


def active_learning_figures(summary: dict[str, Any]) -> dict[str, str]:
    """name → base64 PNG: 'stability' (violins per model), 'unexplored' and 'errors' (curves)."""
    passes = _passes(summary)
    figures = {"stability": png_base64(stability_violins(
        {name: p["frames_before_collapse"] for name, p in passes.items()}))}
    steps = np.arange(len(passes))
    figure = curves(
        steps, {"unexplored ratio": np.array([p["unexplored_ratio"] for p in passes.values()]),
                "collapsed runs (share)": np.array(
                    [p["collapsed_runs"] / max(len(p["runs"]), 1) for p in passes.values()])},
        "Exploration and collapse per model", "model (M_r: after r rounds)", "share")
    figure.axes[0].set_xticks(steps, list(passes))
    figures["unexplored"] = png_base64(figure)
    scale = force_conversion(UNIT)
    rounds = summary["rounds"]
    if rounds:
        series = {"validation F_mae (after the round)":
                  np.array([r["val_F_mae"] * scale for r in rounds])}
        if all("new_frames_F_mae_before" in r for r in rounds):
            series["new frames, before training"] = \
                np.array([r["new_frames_F_mae_before"] * scale for r in rounds])
            series["new frames, after training"] = \
                np.array([r["new_frames_F_mae_after"] * scale for r in rounds])
        numbers = np.array([r["round"] for r in rounds])
        figure = curves(numbers, series, "Force errors per round", "round",
                        "F_mae (kcal/mol/Å)")
        figure.axes[0].set_xticks(numbers)
        figures["errors"] = png_base64(figure)
    return figures


_CAPTIONS = {
    "stability": "Frames before collapse of every MD run, per model (M0: the starting model; "
                 "M_r: after r rounds).",
    "unexplored": "Share of frames before collapse outside the model's training clusters, and "
                  "share of runs that collapsed.",
    "errors": "Force MAE on the fixed validation frames, and on each round's new frames before "
              "and after that round's training.",
}


def render_active_learning(summary: dict[str, Any]) -> str:
    """The report page (self-contained HTML)."""
    scale = force_conversion(UNIT)
    settings = summary["settings"]
    parts = ["<h1>Continued learning</h1>",
             f'<p class="note">Model {html.escape(summary["model"])}; starting structures '
             f'{html.escape(summary["structures"])}; engine {html.escape(settings["engine"])}, '
             f'{settings["temperature"]} K, {settings["steps"]} steps of '
             f'{settings["timestep"]} fs per run, {settings["runs_per_structure"]} runs per '
             f'structure; labels {html.escape(settings["level"])}; collapse threshold '
             f'{settings["bond_threshold"]} Å. Forces in kcal/mol/Å.</p>',
             "<h2>Rounds</h2>"]
    rows = []
    for name, p in _passes(summary).items():
        round_ = next((r for r in summary["rounds"] if f"M{r['round'] - 1}" == name), None)
        rows.append([name, len(p["runs"]), p["median_frames_before_collapse"],
                     p["collapsed_runs"], p["unexplored_ratio"],
                     None if round_ is None else round_["new_frames"],
                     None if round_ is None or "new_frames_F_mae_before" not in round_
                     else round_["new_frames_F_mae_before"] * scale,
                     None if round_ is None else round_["val_F_mae"] * scale,
                     None if round_ is None else round_["training_frames"]])
    parts.append(html_table(["model", "MD runs", "median frames before collapse",
                             "collapsed runs", "unexplored ratio", "frames added",
                             "F_mae on them (before)", "validation F_mae after",
                             "training frames after"], rows))
    figures = active_learning_figures(summary)
    parts.append("<div>" + "".join(html_figure(name, png, _CAPTIONS[name])
                                   for name, png in figures.items()) + "</div>")
    parts.append("<h2>Runs</h2>")
    for name, p in _passes(summary).items():
        parts.append(f"<h3>{name}</h3>")
        keys = ["run", "frames", "frames_before_collapse", "collapsed", "unexplored_ratio",
                "candidates", "steps_run"]
        parts.append(html_table(keys, [[run[k] for k in keys] for run in p["runs"]]))
    return html_page("mlff-plugins continued learning", parts)


def write_active_learning_report(summary: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the page atomically; returns its path."""
    path = Path(path)
    with atomic_output(path, "w") as fh:
        fh.write(render_active_learning(summary))
    return path
