"""Frame descriptors for conformation clustering (TorchScript, so the model file's `explore`
computes exactly what the Python estimator computes).

- Molecules: inverse pairwise distances 1/r_ij over atom pairs i < j — invariant to rotation
  and translation; atom order is fixed by the system. Atoms that are interchangeable
  (`equivalent_groups`: e.g. a methyl group's three hydrogens, which a 120° rotation relabels)
  are made so by `symmetrize`: every block of pairs that a relabelling within the groups can
  permute is sorted, so the descriptor is invariant to those relabellings and still continuous.
- Periodic systems: per element-pair radial distribution histograms g_ab(r) — invariant to
  rotation, translation and permutation of like atoms.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mlff_core.models.neighbors import neighbor_list


def inverse_distances(positions: Tensor) -> Tensor:
    """1/r_ij for i < j. [F, N, 3] Å → [F, N(N−1)/2] 1/Å."""
    n = positions.shape[1]
    pairs = torch.triu_indices(n, n, offset=1, device=positions.device)
    differences = positions[:, pairs[0]] - positions[:, pairs[1]]
    return 1.0 / torch.linalg.norm(differences, dim=-1)


def equivalent_groups(atomic_numbers, bonds) -> list[list[int]]:
    """Sets of interchangeable atoms of a molecule: terminal atoms (one bond) of one element
    bonded to the same atom — a methyl group's hydrogens, an amine's, a carboxylate's or nitro
    group's oxygens. Groups of two or more, each sorted, ordered by their first atom.

    Args:
        atomic_numbers: [N]; bonds: [B, 2] atom index pairs.
    """
    degree: dict[int, int] = {}
    for i, j in bonds:
        degree[int(i)] = degree.get(int(i), 0) + 1
        degree[int(j)] = degree.get(int(j), 0) + 1
    groups: dict[tuple[int, int], list[int]] = {}
    for i, j in bonds:
        for end, parent in ((int(i), int(j)), (int(j), int(i))):
            if degree[end] == 1 and degree[parent] > 1:
                groups.setdefault((parent, int(atomic_numbers[end])), []).append(end)
    return sorted(sorted(group) for group in groups.values() if len(group) > 1)


def symmetric_blocks(n_atoms: int, groups: list[list[int]]) -> tuple[Tensor, Tensor]:
    """The blocks of the i < j pair list (the order of `inverse_distances`) that relabelling
    atoms within `groups` permutes among themselves, for `symmetrize`.

    Pairs (i, j) fall in one block when their atoms' classes agree (an atom's class is its
    group, or itself): e.g. for a methyl group G and another atom k, the three pairs (h, k),
    h in G; the pairs inside G; the |G1|·|G2| pairs between two groups.

    Returns:
        index: [B, S] int64 pair indices of each block, padded with P (the number of pairs).
        keep: [P] positions, in the flattened [B·S] block-sorted values, of the real entries.
    """
    label = list(range(n_atoms))
    for g, group in enumerate(groups):
        for atom in group:
            label[atom] = n_atoms + g
    blocks: dict[tuple[int, int], list[int]] = {}
    position = 0
    for i in range(n_atoms):
        for j in range(i + 1, n_atoms):
            key = (min(label[i], label[j]), max(label[i], label[j]))
            blocks.setdefault(key, []).append(position)
            position += 1
    width = max(len(block) for block in blocks.values()) if blocks else 1
    ordered = [blocks[key] for key in sorted(blocks)]
    index = torch.full((len(ordered), width), position, dtype=torch.long)
    keep: list[int] = []
    for b, block in enumerate(ordered):
        index[b, :len(block)] = torch.tensor(block, dtype=torch.long)
        keep.extend(b * width + k for k in range(len(block)))
    return index, torch.tensor(keep, dtype=torch.long)


def symmetrize(values: Tensor, index: Tensor, keep: Tensor) -> Tensor:
    """Sort every block of pair values (see `symmetric_blocks`). [F, P] → [F, P]."""
    padding = torch.full((values.shape[0], 1), float("inf"), dtype=values.dtype,
                         device=values.device)
    blocks = torch.cat([values, padding], dim=1)[:, index]  # [F, B, S]; padding sorts last
    return blocks.sort(dim=-1).values.reshape(values.shape[0], -1)[:, keep]


def element_pairs(species: list[int]) -> list[tuple[int, int]]:
    """Unordered element pairs (a ≤ b) of a species list, in a fixed order."""
    ordered = sorted(species)
    pairs: list[tuple[int, int]] = []
    for k in range(len(ordered)):
        for m in range(k, len(ordered)):
            pairs.append((ordered[k], ordered[m]))
    return pairs


def pair_rdf(positions: Tensor, atomic_numbers: Tensor, cell: Tensor, pbc: Tensor,
             species: list[int], r_max: float, n_bins: int) -> Tensor:
    """Per element-pair g_ab(r) histograms of one periodic frame, concatenated.

    g_ab(r) = n_ab(r) / (N_a · ρ_b · 4πr²Δr), with n_ab(r) the number of (a, b) neighbour pairs
    in the shell [r, r + Δr) and ρ_b = N_b / V, so g → 1 for an ideal gas.

    Args:
        positions: [N, 3] Å; atomic_numbers: [N]; cell: [3, 3] Å; pbc: [3].
        species: the elements whose pairs are histogrammed.
        r_max: Å; n_bins: histogram bins on [0, r_max).

    Returns:
        [P · n_bins] with P = number of element pairs.
    """
    edge_index, offsets = neighbor_list(positions, cell, pbc, r_max)
    i, j = edge_index[0], edge_index[1]
    distances = torch.linalg.norm(positions[j] - positions[i] + offsets @ cell, dim=-1)
    width = r_max / n_bins
    bins = torch.clamp((distances / width).long(), 0, n_bins - 1)
    edges = torch.arange(n_bins + 1, dtype=positions.dtype, device=positions.device) * width
    shells = 4.0 / 3.0 * math.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    volume = torch.abs(torch.det(cell))
    parts: list[Tensor] = []
    for a, b in element_pairs(species):
        is_a = atomic_numbers == a
        is_b = atomic_numbers == b
        n_a = is_a.sum().to(positions.dtype)
        n_b = is_b.sum().to(positions.dtype)
        selected = is_a[i] & is_b[j]
        counts = torch.zeros(n_bins, dtype=positions.dtype, device=positions.device)
        counts = counts.index_put([bins[selected]],
                                  torch.ones_like(distances[selected]), accumulate=True)
        normaliser = torch.clamp(n_a * n_b / volume, min=1e-12) * shells
        parts.append(counts / normaliser)
    return torch.cat(parts)
