"""Options shared by `mlff export` and `mlff import` for the model file's exploration reference
(conformation clusters and the rule that sets their radii), and the lines both print about it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click

from mlff_core.data.frames import Frames
from mlff_core.export.from_run import RADIUS_RULES


def radius_options(default_calibration: str) -> Callable:
    """--radius, --false-flag-rate and --calibration-data; `default_calibration` says which
    held-out frames are used when --calibration-data is not given."""
    def decorate(command: Callable) -> Callable:
        command = click.option(
            "--calibration-data", multiple=True, type=click.Path(dir_okay=False),
            help="Held-out frames (repeatable) that --radius calibrated is set on, from the "
                 f"training distribution but not trained on (default: {default_calibration}).",
        )(command)
        command = click.option(
            "--false-flag-rate", type=click.FloatRange(0, 1, min_open=True, max_open=True),
            default=0.05, show_default=True,
            help="--radius calibrated: the fraction of held-out frames flagged unexplored.",
        )(command)
        return click.option(
            "--radius", type=click.Choice(RADIUS_RULES), default="max", show_default=True,
            help="Cluster radius: max = the farthest training member (JCP 159, 035101); "
                 "calibrated = scaled so that --false-flag-rate of held-out frames are "
                 "flagged.",
        )(command)
    return decorate


def check_radius_options(radius: str, calibration_paths: Sequence[str]) -> None:
    """Held-out frames are used by --radius calibrated only: refuse them otherwise, rather
    than ignore them."""
    if calibration_paths and radius != "calibrated":
        raise click.UsageError("--calibration-data applies to --radius calibrated")


def read_calibration_data(paths: Sequence[str]) -> list[Frames] | None:
    """Frames of every system in `paths`; None when no path is given."""
    if not paths:
        return None
    from mlff_core.data import read_systems

    return [part for path in paths for part in read_systems(path)]


def echo_exploration(metadata: dict) -> None:
    """One line per system of the model file's exploration reference: clusters and radii."""
    for system in (metadata.get("exploration") or {}).get("systems", []):
        click.echo(f"  conformation clusters of {system['formula']}: {system['n_clusters']} "
                   f"(sizes {', '.join(map(str, system['cluster_sizes']))}); "
                   f"{describe_radius_rule(system.get('radius_rule'))}")


def describe_radius_rule(rule: dict | None) -> str:
    """'radius: ...' in words, from a system's `radius_rule` record."""
    if not rule or rule.get("rule") == "max":
        return "radius: farthest training member"
    return (f"radius: calibrated to flag {rule['false_flag_rate']:.1%} of "
            f"{rule['calibration_frames']} held-out frames (flags {rule['flagged_rate']:.1%}; "
            f"the farthest-member radius flags {rule['flagged_rate_max_radius']:.1%}; "
            f"score: {rule.get('scores', 'distance/radius')}), "
            f"scale {rule['scale']:.3f}")
