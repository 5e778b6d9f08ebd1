"""The self-contained HTML page of a report: tables and embedded PNG figures, no external
resources and no scripts."""

from __future__ import annotations

import datetime
import html
from typing import Any

from mlff_core.report.build import Report

_STYLE = """
body { font-family: -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif;
       margin: 2em auto; max-width: 1150px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid
#ddd; } table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 9px; text-align: right; }
th { background: #f3f5f7; } td.name, th.name { text-align: left; }
figure { display: inline-block; margin: 0.6em 1em 0.6em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; max-width: 520px; }
.note { color: #555; font-size: 0.9em; } img { max-width: 100%; }
.scroll { overflow-x: auto; }
"""

_CAPTIONS = {
    "clusters_F_mae": "Per-cluster F_mae: a model weak on one conformation shows a dent.",
    "clusters_F_max_err": "Per-cluster F_max-err (mean over frames of the largest component "
                          "error).",
    "rbp": "Ratio of bad points: fraction of a cluster's frames whose F_mae exceeds the global "
           "F_mae.",
    "elements_F_mae": "Per-element F_mae.",
    "elements_FNM_mae": "Per-element mass-normalised FNM_mae (errors on light atoms weigh "
                        "more in the dynamics).",
    "pca_map": "Reference frames on the first two principal components of the cluster "
               "descriptor; × marks frames outside every training cluster.",
    "error_histogram": "Distribution of per-component force errors.",
    "signals": "Per-frame F_mae against the monitor signals: the exploration ratio (distance "
               "to the nearest training cluster / its radius), the largest predicted force and, "
               "for committee model files, the members' force deviation; the table gives each "
               "signal's ROC AUC for frames above 2 × the median F_mae.",
    "stability": "Frames before collapse per group of runs.",
    "hr": "h(r) of the trajectories (before collapse) against the reference data.",
    "rmsd": "RMSD to the first frame (after superposition).",
    "rmsf": "RMSF per atom.",
    "rdf": "Element-pair radial distribution functions.",
    "energy": "Potential energy along the trajectories.",
    "max_force": "Largest atomic force per frame: spikes precede collapse.",
    "contacts": "Contact maps as the JCP paper draws them (mean distance of every atom pair, "
                "Å): reference data and the first trajectories.",
    "pre_collapse": "Each model's force error against reference labels along the last frames "
                    "before a collapse (mlff report --relabel LEVEL; JCP Fig. 7).",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f'<th class="{"name" if k == 0 else ""}">{html.escape(h)}</th>'
                   for k, h in enumerate(header))
    body = "".join("<tr>" + "".join(
        f'<td class="{"name" if k == 0 else ""}">{_fmt(v)}</td>' for k, v in enumerate(row))
        + "</tr>" for row in rows)
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def html_figure(name: str, png_base64: str, caption: str) -> str:
    """An embedded PNG figure with id `fig-<name>` and an (escaped) caption."""
    return (f'<figure id="fig-{name}"><img alt="{name}" '
            f'src="data:image/png;base64,{png_base64}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _figure(report: Report, name: str) -> str:
    if name not in report.figures:
        return ""
    return html_figure(name, report.figures[name], _CAPTIONS.get(name, ""))


def render_html(report: Report, title: str = "mlff-plugins report") -> str:
    """The report as one HTML page (figures embedded as base64 PNG)."""
    doc = report.document
    unit = doc["force_unit"]
    models = doc["models"]
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="note">Reference data: {html.escape(doc["data"]["path"])} '
             f'({doc["data"]["formula"]}, {doc["data"]["frames"]} frames, '
             f'{html.escape(", ".join(doc["data"]["levels"]))}). Forces in {html.escape(unit)}, '
             f'FNM in {html.escape(unit)}/amu. Generated '
             f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.</p>']
    clusters = doc["clusters"]
    parts.append(f'<p class="note">Conformation clusters: {html.escape(clusters["source"])}; '
                 f'{clusters["n_clusters"]} clusters ({html.escape(clusters["descriptor"])}), '
                 f'frames per cluster {clusters["frames_per_cluster"]}, '
                 f'{clusters["unexplored_frames"]} reference frames outside every cluster.</p>')

    if models:
        names = [m["name"] for m in models]
        parts.append("<h2>Force metrics</h2>")
        keys = ["F_mae", "F_max_err", "FNM_mae", "FNM_max_err", "E_mae", "E_rmse", "n_frames"]
        parts.append(html_table(["metric", *names],
                            [[k, *[m["metrics"]["global"].get(k) for m in models]]
                             for k in keys]))
        elements = list(models[0]["metrics"]["per_element"])
        for caption, pair in (("Per element (absolute)", ("F_mae", "F_max_err")),
                              ("Per element (mass-normalised)", ("FNM_mae", "FNM_max_err"))):
            parts.append(f"<h3>{caption}</h3>")
            header = ["element"] + [f"{n} {k}" for n in names for k in pair]
            rows = [[s, *[m["metrics"]["per_element"][s][k] for m in models for k in pair]]
                    for s in elements]
            parts.append(html_table(header, rows))
        cluster_ids = sorted({k for m in models for k in m["metrics"].get("per_cluster", {})},
                             key=int)
        if cluster_ids:
            parts.append("<h3>Per conformation cluster</h3>")
            pair = ("F_mae", "F_max_err", "RBP", "n_frames")
            header = ["cluster"] + [f"{n} {k}" for n in names for k in pair]
            rows = [[c, *[m["metrics"]["per_cluster"].get(c, {}).get(k) for m in models
                          for k in pair]] for c in cluster_ids]
            parts.append(html_table(header, rows))
        parts.append("<div>" + "".join(_figure(report, n) for n in (
            "clusters_F_mae", "clusters_F_max_err", "rbp", "elements_F_mae",
            "elements_FNM_mae", "pca_map", "error_histogram")) + "</div>")
        signals = doc.get("signals", {})
        parts.append("<h3>Monitor signals against the force error</h3>")
        header = ["signal"] + [f"{n} {k}" for n in names for k in ("AUC", "Spearman")]
        rows = [[signal, *[(signals[n][key] or {}).get(k) for n in names
                           for k in ("auc_high_error", "spearman")]]
                for signal, key in (("exploration score (the larger of the two)",
                                     "exploration_score"),
                                    ("distance / radius", "exploration_ratio"),
                                    ("bond score", "bond_score"),
                                    ("max |F|", "max_force"),
                                    ("committee deviation", "committee_deviation"))
                if any(signals[n].get(key) for n in names)]
        parts.append(html_table(header, rows))
        parts.append("<div>" + _figure(report, "signals") + "</div>")
    else:
        parts.append("<div>" + _figure(report, "pca_map") + "</div>")

    if doc["trajectories"]:
        parts.append("<h2>Simulations</h2>")
        keys = ["label", "file", "frames", "frames_before_collapse", "stability_ps",
                "collapsed", "ns_per_day", "hr_mae", "rdf_mae", "diffusivity",
                "distance_map_mae_A", "rmsd_final_A",
                "explored_ratio", "mean_force_explored", "mean_force_unexplored",
                "max_force_eV_per_A"]
        keys = [k for k in keys if k in ("label", "file")
                or any(t.get(k) is not None for t in doc["trajectories"])]
        rows = [[_cell(t, k) for k in keys] for t in doc["trajectories"]]
        parts.append(html_table(keys, rows))
        criteria = {t["stability_criterion"]["kind"]: t["stability_criterion"]
                    for t in doc["trajectories"] if t.get("stability_criterion")}
        notes = []
        if "bonds" in criteria:
            notes.append("Collapse (molecules): a bond deviating from its mean length in the "
                         f"reference data by more than {criteria['bonds']['threshold']} Å.")
        if "rdf" in criteria:
            notes.append("Collapse (periodic): the first window of "
                         f"{criteria['rdf']['window_frames']} frames whose RDF MAE exceeds "
                         f"{criteria['rdf']['threshold']:g} for any element pair (MDsim).")
        notes.append("h(r) MAE (MDsim): ∫ |h − h_ref| dr over 500 bins on (0, 10] Å, 0 to 2; "
                     "RDF MAE (MDsim): 6 Å × mean |g − g_ref| over 500 bins on [0, 6) Å, per "
                     "pair; diffusivity in cm²/s per element (fit window in the JSON); forces "
                     "in eV/Å.")
        parts.append('<p class="note">' + " ".join(notes) + "</p>")
        parts.append("<div>" + "".join(_figure(report, n) for n in (
            "stability", "pre_collapse", "hr", "rmsd", "rmsf", "contacts", "rdf", "max_force",
            "energy"))
            + "</div>")
    return html_page(title, parts)


def _cell(trajectory: dict, key: str):
    """One cell of the simulations table: maps (per pair, per element) as 'k v' lists."""
    if key == "file":
        return trajectory["path"].rsplit("/", 1)[-1]
    value = trajectory.get(key)
    if key == "diffusivity" and value:
        value = value["per_element"]
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:.3g}" for k, v in value.items())
    return value


def html_page(title: str, parts: list[str]) -> str:
    """A complete page (inline style, no scripts, no external resources) around `parts`."""
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body>\n{body}\n</body></html>\n")
