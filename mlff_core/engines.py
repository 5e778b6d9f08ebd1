"""MD engines, found through the `mlff.engines` entry-point group.

Bridges register a runner (see pyproject.toml), so the core can start MD in any installed engine
without importing a bridge by name (dependencies point one way: bridges → mlff_core):

    run = get_engine("openmm")
    summary = run(model, structure, output_dir, temperature=500.0, steps=20000, ...)

Every runner takes (model, structure, output_dir) and the keywords temperature (K), timestep
(fs), steps, report_interval, friction (1/ps; 0 runs NVE), bond_threshold (Å), action ('stop',
'flag', 'raise' on collapse), warn_ratio and stop_ratio (the exploration monitor's levels:
flag above warn_ratio; stop above stop_ratio, None: never), seed, advance (progress callback),
plus engine-specific options,
writes its files to output_dir, and returns a summary dict with at least ensemble
(`ensemble()`), steps_run, stopped, reason (of the event that stopped the run), last_good (None
when no good frame was saved), seconds, ns_per_day, report_interval, frame_interval_ps (ps
between trajectory frames), first_frame_ps (time of the trajectory's first frame: 0 when it is
the start structure), collapse and exploration (lines from
`mlff_core.monitors.summary_line`), exploration_counts, trajectory (the
trajectory file, one frame per report interval) and topology (a structure file that the
trajectory reader needs for coordinate-only formats, or None).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from mlff_core.errors import MLFFError

GROUP = "mlff.engines"


def ensemble(friction: float, temperature: float) -> str:
    """How every engine words its thermodynamic ensemble in the run summary."""
    return "NVE" if friction == 0 else f"NVT (Langevin, {temperature:g} K, {friction:g}/ps)"


def engine_names() -> list[str]:
    """Installed engines."""
    return sorted(e.name for e in entry_points(group=GROUP))


def get_engine(name: str) -> Callable[..., dict[str, Any]]:
    """The MD runner registered as `name`."""
    for entry in entry_points(group=GROUP):
        if entry.name == name:
            return entry.load()
    raise MLFFError(f"unknown MD engine {name!r}; installed: {', '.join(engine_names())}")
