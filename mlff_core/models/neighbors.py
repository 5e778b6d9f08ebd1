"""Neighbour lists in TorchScript: a cell list, linear in the number of atoms, for molecules and
periodic cells of any shape.

Convention (shared by every model): an edge (i, j) carries a message from atom j to atom i, and
its vector is

    r_ij = positions[j] - positions[i] + offsets_ij @ cell          (Å)

with `offsets` integer image counts stored as floats. The list is full (both (i, j) and (j, i)) and
never holds an atom paired with itself in the same image. Indices are found without gradients;
models rebuild r_ij from positions (and cell) so forces and stress come from autograd.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _cell_offsets(device: torch.device) -> Tensor:
    steps = torch.tensor([-1, 0, 1], dtype=torch.long, device=device)
    return torch.cartesian_prod(steps, steps, steps)  # [27, 3]


def pairs_within(
    queries: Tensor, points: Tensor, cutoff: float, chunk: int = 8192
) -> tuple[Tensor, Tensor]:
    """All (q, p) with |points[p] - queries[q]| < cutoff, found with a cell list.

    Space is binned into cubes of edge `cutoff`; each query looks at the points of its own and
    the 26 surrounding cubes, found by binary search in the points sorted by cube key, so time
    and memory grow linearly with the number of points (no N×N tensors).

    Args:
        queries: [Q, 3] positions (Å).
        points: [P, 3] positions (Å).
        cutoff: distance (Å).
        chunk: queries searched at once; bounds memory (about 300 candidates per query at
            liquid density).

    Returns:
        (q_index [K], p_index [K]) int64, every pair closer than `cutoff` (self pairs included
        when queries and points overlap; callers remove them).
    """
    device = points.device
    if queries.shape[0] == 0 or points.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    lower = torch.minimum(points.min(dim=0).values, queries.min(dim=0).values)
    point_bins = torch.floor((points - lower) / cutoff).long()
    query_bins = torch.floor((queries - lower) / cutoff).long()
    dims = torch.maximum(point_bins.max(dim=0).values, query_bins.max(dim=0).values) + 1
    point_keys = (point_bins[:, 0] * dims[1] + point_bins[:, 1]) * dims[2] + point_bins[:, 2]
    sorted_keys, order = torch.sort(point_keys)
    neighbour_cells = _cell_offsets(device)
    cutoff_sq = cutoff * cutoff

    q_parts: list[Tensor] = []
    p_parts: list[Tensor] = []
    for start in range(0, queries.shape[0], chunk):
        bins = query_bins[start : start + chunk]
        cells = bins.unsqueeze(1) + neighbour_cells.unsqueeze(0)  # [n, 27, 3]
        inside = ((cells >= 0) & (cells < dims)).all(dim=-1)
        keys = ((cells[..., 0] * dims[1] + cells[..., 1]) * dims[2] + cells[..., 2]).reshape(-1)
        first = torch.searchsorted(sorted_keys, keys, right=False)
        last = torch.searchsorted(sorted_keys, keys, right=True)
        counts = (last - first) * inside.reshape(-1).long()
        total = int(counts.sum())
        if total == 0:
            continue
        segment = torch.repeat_interleave(torch.arange(counts.shape[0], device=device), counts)
        segment_start = torch.cumsum(counts, 0) - counts
        within = torch.arange(total, device=device) - segment_start[segment]
        p_idx = order[first[segment] + within]
        q_idx = torch.div(segment, 27, rounding_mode="floor") + start
        dist_sq = (points[p_idx] - queries[q_idx]).pow(2).sum(dim=-1)
        close = dist_sq < cutoff_sq
        q_parts.append(q_idx[close])
        p_parts.append(p_idx[close])
    if len(q_parts) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    return torch.cat(q_parts), torch.cat(p_parts)


def neighbor_list(
    positions: Tensor, cell: Tensor, pbc: Tensor, cutoff: float
) -> tuple[Tensor, Tensor]:
    """Full neighbour list within `cutoff` for a molecule or a periodic cell.

    Args:
        positions: [N, 3] Å (need not be wrapped into the cell).
        cell: [3, 3] lattice vectors as rows, Å (ignored where pbc is False; may be zero for
            molecules).
        pbc: [3] bool, periodic directions; a periodic direction needs a non-singular cell.
        cutoff: Å.

    Returns:
        edge_index: [2, E] int64, rows (i, j): receiver i, sender j.
        offsets: [E, 3] image counts (same dtype as positions), so that
            r_ij = positions[j] - positions[i] + offsets @ cell.
    """
    positions = positions.detach()
    cell = cell.detach().to(positions.dtype)
    n_atoms = positions.shape[0]
    device = positions.device
    periodic = pbc.to(torch.bool)
    if not bool(periodic.any()):
        i, j = pairs_within(positions, positions, cutoff)
        keep = i != j
        edge_index = torch.stack([i[keep], j[keep]])
        return edge_index, torch.zeros(edge_index.shape[1], 3, dtype=positions.dtype,
                                       device=device)

    volume = torch.abs(torch.det(cell))
    if float(volume) < 1e-9:
        raise RuntimeError("periodic system with a singular cell (zero volume)")
    fractional = positions @ torch.linalg.inv(cell)
    wrap = torch.where(periodic, torch.floor(fractional), torch.zeros_like(fractional))
    fractional = fractional - wrap
    wrapped = fractional @ cell

    # Perpendicular width of the cell along each lattice direction, and the images needed.
    cross = torch.stack([torch.linalg.cross(cell[1], cell[2]), torch.linalg.cross(cell[2], cell[0]),
                         torch.linalg.cross(cell[0], cell[1])])
    widths = volume / torch.linalg.norm(cross, dim=1)
    margin = torch.where(periodic, cutoff / widths, torch.zeros_like(widths))
    reach = torch.where(periodic, torch.ceil(margin), torch.zeros_like(margin)).long()

    image_points: list[Tensor] = [wrapped]
    image_atoms: list[Tensor] = [torch.arange(n_atoms, device=device)]
    image_shifts: list[Tensor] = [torch.zeros(n_atoms, 3, dtype=positions.dtype, device=device)]
    r0, r1, r2 = int(reach[0]), int(reach[1]), int(reach[2])
    low = -margin
    high = 1.0 + margin
    for a in range(-r0, r0 + 1):
        for b in range(-r1, r1 + 1):
            for c in range(-r2, r2 + 1):
                if a == 0 and b == 0 and c == 0:
                    continue
                shift = torch.tensor([a, b, c], dtype=positions.dtype, device=device)
                moved = fractional + shift
                # Periodic directions: keep images within `cutoff` of the cell.
                near = ((moved >= low) & (moved <= high)) | ~periodic
                take = near.all(dim=1)
                atoms = torch.nonzero(take).reshape(-1)
                if atoms.shape[0] == 0:
                    continue
                image_points.append(wrapped[atoms] + shift @ cell)
                image_atoms.append(atoms)
                image_shifts.append(shift.unsqueeze(0).expand(atoms.shape[0], 3))
    points = torch.cat(image_points)
    atom_of = torch.cat(image_atoms)
    shift_of = torch.cat(image_shifts)

    i, p = pairs_within(wrapped, points, cutoff)
    keep = p >= n_atoms  # an image point is never the query atom itself ...
    keep = keep | (atom_of[p] != i)  # ... and a central point is kept unless it is atom i
    i = i[keep]
    p = p[keep]
    j = atom_of[p]
    offsets = shift_of[p] + wrap[i] - wrap[j]
    return torch.stack([i, j]), offsets
