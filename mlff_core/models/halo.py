"""Halo exchange: message passing split between domains with one cutoff of ghost atoms.

An engine that splits space between processes (LAMMPS) gives each one its local atoms and
the ghosts within one cutoff (+ skin). A model with T interaction layers needs T cutoffs of
neighbourhood; rather than T cutoffs of ghosts, the engine runs the model one layer at a time
and, before each layer, fills the ghosts' features from their owners (forward communication).
In the backward pass, gradients that reach ghost features are summed onto their owners
(reverse communication), so one backward pass gives exact forces and virial. This is the
pattern of DeePMD-kit's `border_op` and MACE's ML-IAP coupling.

The model-file contract (format version 2; files whose mlff.json has "halo": {"source_widths":
[W_0, ..., W_{T-1}]}; "halo": null when the architecture cannot run layer by layer):

    halo_graph(atomic_numbers [M], edge_index [2,E], edge_vectors [E,3] Å, finite [n])
        -> graph: list of tensors, the per-step constants
    halo_embed(graph) -> state [M, S]                 the state before layer 0, of every node
    halo_source(k, state [m, S], graph) -> [m, W_k]   what layer k needs from a neighbour;
                                                      row i depends on row i of state alone
    halo_interaction(k, state [n, S], source [M, W_k], graph) -> state [n, S]
    halo_readout(state [n, S], graph) -> [n] eV       per-atom energies (NaN outside the
                                                      model's domain, as forward_graph)

Nodes are the n local atoms first, then M − n ghosts. Every edge (i ← j) has a local
receiver i < n, and edge_vectors holds r_ij = x_j − x_i (the engine's imaged positions).
`finite` says which local atoms have finite positions. The driver (`halo_energies` below, the
C++ pair style in plugins/lammps) does:

    graph = halo_graph(...); state = halo_embed(graph)
    source = halo_source(0, state, graph)             # all M rows: layer-0 state needs no data
    state = state[:n]
    for k in 0..T-1:
        if k > 0: source = exchange(halo_source(k, state, graph))   # [n, W_k] -> [M, W_k]
        state = halo_interaction(k, state, source, graph)
    energies = halo_readout(state, graph)

Forces follow from g_e = ∂E/∂r_e on this domain's edges: F_i += g_e, F_j −= g_e, and the
virial is W = −Σ_e r_e ⊗ g_e; every directed edge belongs to exactly one domain (its
receiver's), so the sums over domains are exact.
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from torch import Tensor

from mlff_core.models.ghosts import ghost_graph

HALO_METHODS = ("halo_graph", "halo_embed", "halo_source", "halo_interaction", "halo_readout")


def halo_energies(module, atomic_numbers: Tensor, edge_index: Tensor, edge_vectors: Tensor,
                  finite: Tensor, owner: Tensor, num_layers: int) -> Tensor:
    """Per-atom energies [n] eV of the n local nodes, running `module`'s halo methods layer
    by layer with the exchange of one domain: ghost row g gets the row of local node owner[g]
    (autograd then sums ghost gradients onto the owners: the reverse communication).

    Args:
        module: a scripted model file (or `HaloModelFile`) with the halo_* methods.
        atomic_numbers: [M] local nodes first.
        edge_index: [2, E] (receiver, sender), receivers local.
        edge_vectors: [E, 3] Å, x_sender − x_receiver.
        finite: [n] bool.
        owner: [M − n] local index of each ghost.
        num_layers: interaction layers T.
    """
    n = finite.shape[0]
    graph = module.halo_graph(atomic_numbers, edge_index, edge_vectors, finite)
    state = module.halo_embed(graph)
    source = module.halo_source(0, state, graph)
    state = state[:n]
    for layer in range(num_layers):
        if layer > 0:
            local = module.halo_source(layer, state, graph)
            source = torch.cat([local, local[owner]])
        state = module.halo_interaction(layer, state, source, graph)
    return module.halo_readout(state, graph)


def halo_energy_forces_virial(module, atoms: Atoms, cutoff: float, num_layers: int
                              ) -> tuple[float, np.ndarray, np.ndarray]:
    """Energy (eV), forces [N, 3] (eV/Å) and virial [3, 3] (eV) of a periodic or molecular
    system through the halo methods, one domain with ghosts one cutoff deep: the reference
    for engines that implement the exchange."""
    positions, numbers, edges, owner = ghost_graph(atoms, cutoff, 1)
    n = len(atoms)
    edges = torch.as_tensor(edges)
    edges = edges[:, edges[0] < n]
    x = torch.as_tensor(positions, dtype=torch.float64)
    vectors = (x[edges[1]] - x[edges[0]]).requires_grad_(True)
    energies = halo_energies(module, torch.as_tensor(numbers), edges, vectors,
                             torch.ones(n, dtype=torch.bool), torch.as_tensor(owner[n:]),
                             num_layers)
    energy = energies.sum()
    (gradient,) = torch.autograd.grad(energy, vectors)
    gradient = gradient.detach()
    forces = torch.zeros(n, 3, dtype=torch.float64)
    forces.index_add_(0, edges[0], gradient)
    forces.index_add_(0, torch.as_tensor(owner)[edges[1]], -gradient)
    virial = -(vectors.detach().T @ gradient)
    return float(energy.detach()), forces.numpy(), virial.numpy()
