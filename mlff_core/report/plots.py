"""Report figures (matplotlib, Agg). Each function returns a Figure; `png_base64` embeds it."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLOURS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def png_base64(figure) -> str:
    """The figure as a base64 PNG (closed afterwards)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def cluster_profile(values: dict[str, list[float]], clusters: list[str], title: str,
                    unit: str):
    """Radar chart of a per-cluster metric, one polygon per model (grouped bars for fewer
    than three clusters, where a radar has no area)."""
    if len(clusters) < 3:
        return grouped_bars(values, [f"cluster {c}" for c in clusters], title, unit)
    angles = np.linspace(0, 2 * np.pi, len(clusters), endpoint=False)
    figure, axis = plt.subplots(figsize=(4.8, 4.8), subplot_kw={"projection": "polar"})
    for k, (name, series) in enumerate(values.items()):
        closed = np.append(series, series[0])
        axis.plot(np.append(angles, angles[0]), closed, color=COLOURS[k % 10], label=name)
        axis.fill(np.append(angles, angles[0]), closed, color=COLOURS[k % 10], alpha=0.15)
    axis.set_xticks(angles)
    axis.set_xticklabels([f"cluster {c}" for c in clusters])
    axis.set_rlabel_position(180.0 / len(clusters))  # radial ticks between two axes
    axis.tick_params(axis="y", labelsize=7)
    axis.set_title(f"{title} ({unit})", pad=18)
    axis.legend(loc="upper right", bbox_to_anchor=(1.35, 1.1), fontsize=8)
    return figure


def grouped_bars(values: dict[str, list[float]], categories: list[str], title: str,
                 unit: str):
    """Bars per category, one colour per model."""
    figure, axis = plt.subplots(figsize=(max(4.5, 0.9 * len(categories) + 2), 3.4))
    width = 0.8 / max(1, len(values))
    x = np.arange(len(categories))
    for k, (name, series) in enumerate(values.items()):
        axis.bar(x + k * width - 0.4 + width / 2, series, width, label=name,
                 color=COLOURS[k % 10])
    axis.set_xticks(x)
    axis.set_xticklabels(categories, rotation=0)
    axis.set_ylabel(unit)
    axis.set_title(title)
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    return figure


def pca_map(projected: np.ndarray, labels: np.ndarray, unexplored: np.ndarray,
            title: str = "Conformation clusters (PCA of descriptors)"):
    """Frames on the first two principal components, coloured by cluster; x marks unexplored."""
    figure, axis = plt.subplots(figsize=(5.2, 4.2))
    y = projected[:, 1] if projected.shape[1] > 1 else np.zeros(len(projected))
    for k in sorted(set(labels.tolist())):
        members = (labels == k) & ~unexplored
        axis.scatter(projected[members, 0], y[members], s=10, color=COLOURS[k % 10],
                     label=f"cluster {k}")
    if unexplored.any():
        axis.scatter(projected[unexplored, 0], y[unexplored], s=28, marker="x", color="black",
                     label=f"unexplored ({int(unexplored.sum())})")
    axis.set_xlabel("PC 1")
    axis.set_ylabel("PC 2")
    axis.set_title(title)
    axis.legend(fontsize=8, markerscale=1.5)
    return figure


def error_histograms(errors: dict[str, np.ndarray], unit: str):
    """Distribution of |F̂ − F| per component, one curve per model (log count)."""
    figure, axis = plt.subplots(figsize=(5.2, 3.4))
    top = max(float(np.percentile(e, 99.9)) for e in errors.values())
    bins = np.linspace(0, top, 60)
    for k, (name, values) in enumerate(errors.items()):
        axis.hist(values, bins=bins, histtype="step", linewidth=1.5, label=name,
                  color=COLOURS[k % 10])
    axis.set_yscale("log")
    axis.set_xlabel(f"|force error| per component ({unit})")
    axis.set_ylabel("count")
    axis.set_title("Force error distribution")
    axis.legend(fontsize=8)
    return figure


def signals_vs_error(ratios: np.ndarray, largest: dict[str, np.ndarray],
                     frame_errors: dict[str, np.ndarray], unit: str,
                     deviations: dict[str, np.ndarray] | None = None,
                     bond_scores: np.ndarray | None = None):
    """Per-frame F_mae of each model against the monitor signals: the distance to the nearest
    training cluster / its radius (> 1 is outside the clusters), the bond score (molecules;
    > 1: a bond outside its training range), the model's largest predicted atomic force (the
    naive baseline) and, for committee model files, the committee's force deviation. The
    dotted line marks 2 × the median F_mae."""
    deviations = deviations or {}
    columns = [("ratio", "distance / cluster radius", "Cluster ratio vs force error")]
    if bond_scores is not None:
        columns.append(("bond", "bond score", "Bond score vs force error"))
    columns.append(("max", f"largest predicted |F| ({unit})", "Max |F| vs force error"))
    if deviations:
        columns.append(("committee", f"committee force deviation ({unit})",
                        "Committee deviation vs force error"))
    figure, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.4),
                                sharey=True)
    for k, (name, errors) in enumerate(frame_errors.items()):
        colour = COLOURS[k % 10]
        values = {"ratio": ratios, "bond": bond_scores, "max": largest[name],
                  "committee": deviations.get(name)}
        for axis, (key, _, _) in zip(axes, columns, strict=True):
            if values[key] is not None:
                axis.scatter(values[key], errors, s=10, color=colour, alpha=0.7, label=name)
            axis.axhline(2.0 * np.median(errors), color=colour, linestyle=":", linewidth=1)
    for axis, (key, label, title) in zip(axes, columns, strict=True):
        axis.set_xlabel(label)
        axis.set_title(title)
        if key in ("ratio", "bond"):
            axis.axvline(1.0, color="grey", linewidth=1)
    axes[0].set_ylabel(f"frame F_mae ({unit})")
    axes[-1].legend(fontsize=8)
    return figure


def stability_violins(groups: dict[str, list[float]], ylabel: str = "frames before collapse"):
    """Violin (or points, for a single run) of frames before collapse per group of runs."""
    figure, axis = plt.subplots(figsize=(max(4.0, 1.3 * len(groups) + 1.5), 3.6))
    names = list(groups)
    for k, name in enumerate(names):
        values = np.asarray(groups[name], dtype=float)
        if len(values) > 1 and np.ptp(values) > 0:
            parts = axis.violinplot(values, positions=[k], showmedians=True)
            for body in parts["bodies"]:
                body.set_facecolor(COLOURS[k % 10])
        axis.scatter(np.full(len(values), k), values, s=14, color="black", zorder=3)
    axis.set_xticks(range(len(names)))
    axis.set_xticklabels(names)
    axis.set_ylabel(ylabel)
    axis.set_title("Stability")
    axis.grid(axis="y", alpha=0.3)
    return figure


def curves(x: np.ndarray | dict[str, np.ndarray], series: dict[str, np.ndarray], title: str,
           xlabel: str, ylabel: str, reference: np.ndarray | None = None,
           reference_label: str = "reference"):
    """Overlaid curves (h(r), g(r), RMSD, RMSF, traces); x may differ per series."""
    figure, axis = plt.subplots(figsize=(5.6, 3.4))
    if reference is not None:
        grid = x if not isinstance(x, dict) else next(iter(x.values()))
        axis.plot(grid, reference, color="black", linewidth=2, label=reference_label)
    for k, (name, values) in enumerate(series.items()):
        grid = x[name] if isinstance(x, dict) else x
        axis.plot(grid, values, color=COLOURS[k % 10], linewidth=1.2, label=name)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return figure


def distance_maps(maps: dict[str, np.ndarray]):
    """Side-by-side maps of the mean distance of every atom pair (Å), the JCP paper's contact
    maps, on one colour scale."""
    figure, axes = plt.subplots(1, len(maps), figsize=(3.6 * len(maps) + 0.8, 3.4),
                                squeeze=False)
    top = max(float(np.max(values)) for values in maps.values())
    for axis, (name, values) in zip(axes[0], maps.items(), strict=True):
        image = axis.imshow(values, vmin=0.0, vmax=top, cmap="viridis_r")
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("atom")
        axis.set_ylabel("atom")
    figure.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="mean distance r_ij (Å)")
    return figure
