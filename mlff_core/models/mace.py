"""MACE (Batatia et al., NeurIPS 2022) from `mace-torch`'s own modules, behind this suite's
representation contract, so the `Potential` (forward, forward_graph with ghost atoms and layer
pruning, batch_energies for training) and every engine and training method take it unchanged.

This is the only module that imports `mace`; import it only where MACE is used. (`import mace`
sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for the process, which e3nn 0.4.4 needs; every
`torch.load` of this suite passes `weights_only=True` explicitly, which torch still honours.)

Edge conventions. Ours: edge (i ← j), row 0 the receiver i, row 1 the sender j, r_ij = x_j − x_i.
MACE's: row 0 the sender, row 1 the receiver, vector = x_receiver − x_sender + shift. So MACE's
edge_index is ours flipped and its vectors are −r_ij, exactly what MACE's own calculator builds.

Two representations:
- `MaceRepresentation` drives an eager MACE's own blocks (embedding, radial and angular bases,
  interactions, products, readouts) in a short loop that gives each layer its own edge subset
  (ghost pruning). Models trained here and pickled `.model` files use it.
- `MaceModelRepresentation` calls a TorchScript MACE's own `forward` (the `*_compiled.model`
  that `mace_run_train` writes; `torch.jit.load` reads it without unpickling). Positions are
  zero and the shifts carry the edge vectors, so MACE computes exactly our vectors. A scripted
  model cannot be driven block by block, so it runs every layer on the whole graph.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

#: Warnings of mace/e3nn that say nothing to a user of this suite (e3nn reading its own
#: constants file; TorchScript notes while e3nn scripts its generated code).
_NOISE = ("Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD",
          "The TorchScript type system doesn't support instance-level annotations")


@contextlib.contextmanager
def quiet_mace():
    """Silence mace's import banner (printed to stdout) and the warnings in `_NOISE`."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        for message in _NOISE:
            warnings.filterwarnings("ignore", message=message)
        yield


with quiet_mace():
    import mace  # noqa: F401  (before e3nn: sets the torch.load default e3nn 0.4.4 needs)
    from e3nn import o3
    from mace import modules

#: MACE parts the block loop does not run; such models are refused (`MaceRepresentation`).
_UNSUPPORTED_PARTS = ("joint_embedding", "embedding_readout")


def build_mace(species: list[int], hidden: int, num_interactions: int, cutoff: float,
               num_rbf: int, max_L: int, max_ell: int, correlation: int,  # noqa: N803
               radial_mlp: list[int], num_polynomial_cutoff: int,
               avg_num_neighbors: float | None) -> nn.Module:
    """A fresh `mace.modules.MACE` (float64) with zero atomic energies: the `Potential` around
    it carries the reference energies and the force scale, as for SchNet and PaiNN.

    Hidden irreps are `hidden` channels of every l ≤ max_L with parity (−1)^l, as
    `mace_run_train --num_channels --max_L` builds them.
    """
    if avg_num_neighbors is None:
        raise ValueError("MACE needs avg_num_neighbors (measured on the training frames)")
    hidden_irreps = (o3.Irreps.spherical_harmonics(max_L) * hidden).sort()[0].simplify()
    residual = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # MACE builds its constants in the default dtype
    try:
        with quiet_mace():
            model = modules.MACE(
                r_max=float(cutoff), num_bessel=int(num_rbf),
                num_polynomial_cutoff=int(num_polynomial_cutoff), max_ell=int(max_ell),
                interaction_cls=residual, interaction_cls_first=residual,
                num_interactions=int(num_interactions), num_elements=len(species),
                hidden_irreps=hidden_irreps, MLP_irreps=o3.Irreps("16x0e"),
                atomic_energies=np.zeros(len(species)), avg_num_neighbors=float(avg_num_neighbors),
                atomic_numbers=sorted(species), correlation=int(correlation),
                gate=torch.nn.functional.silu, radial_MLP=[int(w) for w in radial_mlp],
            )
    finally:
        torch.set_default_dtype(default)
    return model


def _columns(mace_numbers: list[int], species: list[int]) -> Tensor:
    """[S]: MACE's one-hot column of each of our species indices (our species are sorted,
    MACE's follow its `atomic_numbers`)."""
    missing = sorted(set(species) - set(mace_numbers))
    if missing:
        raise ValueError(f"the MACE model does not know atomic numbers {missing}")
    return torch.tensor([mace_numbers.index(z) for z in species], dtype=torch.long)


def _optional_cutoff(cutoff: Tensor, edges: Tensor) -> Optional[Tensor]:  # noqa: UP045
    """The radial cutoff [E, 1] of `halo_edge_features`, or None where the model has none
    (stored there as an empty tensor)."""
    return cutoff if cutoff.shape[0] == edges.shape[1] else None


class MaceRepresentation(nn.Module):
    """An eager MACE's blocks as a representation: (species index [N], edges (i ← j) [2, E],
    r_ij [E, 3] Å, optional per-layer edge subsets) → per-atom energies [N] in MACE's unit
    (eV), E0 and scale/shift included.

    Args:
        model: a `mace.modules.MACE` or `ScaleShiftMACE` (not scripted).
        species: the Potential's species (sorted atomic numbers).
        head: which readout head to use (multi-head models; the last one by default, as
            mace's LAMMPS wrapper does).
    """

    def __init__(self, model: nn.Module, species: list[int], head: int | None = None):
        super().__init__()
        unsupported = [part for part in _UNSUPPORTED_PARTS if hasattr(model, part)]
        if unsupported or getattr(model, "lammps_mliap", False):
            raise ValueError(f"MACE models with {', '.join(unsupported) or 'lammps_mliap'} are "
                             "not supported; import their compiled (TorchScript) form")
        self.mace = model
        mace_numbers = [int(z) for z in model.atomic_numbers.tolist()]
        self.register_buffer("column", _columns(mace_numbers, species))
        self.num_elements = len(mace_numbers)
        heads = list(getattr(model, "heads", ["Default"]))
        self.head = len(heads) - 1 if head is None else int(head)

    @torch.jit.unused
    def data_hyperparameters(self) -> dict[str, Any]:
        """Hyperparameters measured on data when the model was built (a run records them, so
        `build_potential` rebuilds the same model)."""
        return {"avg_num_neighbors": float(self.mace.interactions[0].avg_num_neighbors)}

    def forward(self, species_index: Tensor, edge_index: Tensor, edge_vectors: Tensor,
                layer_edges: Optional[list[Tensor]] = None) -> Tensor:  # noqa: UP045
        m = self.mace
        n = species_index.shape[0]
        device = species_index.device
        heads = torch.full((n,), self.head, dtype=torch.long, device=device)
        atoms = torch.arange(n, device=device)
        inputs = self.halo_edge_features(species_index, edge_index, edge_vectors)
        node_attrs, edges, edge_attrs, edge_feats = inputs[0], inputs[1], inputs[2], inputs[3]
        cutoff = _optional_cutoff(inputs[4], edges)
        node_e0 = inputs[6]
        node_feats = m.node_embedding(node_attrs)
        terms: list[Tensor] = []
        if hasattr(m, "pair_repulsion"):
            terms.append(inputs[5])
        features: list[Tensor] = []
        blocks = zip(m.interactions, m.products)  # noqa: B905 (TorchScript has no strict=)
        for layer, (interaction, product) in enumerate(blocks):
            attrs, feats, layer_index, layer_cutoff = edge_attrs, edge_feats, edges, cutoff
            if layer_edges is not None:
                subset = layer_edges[layer]
                attrs, feats, layer_index = edge_attrs[subset], edge_feats[subset], \
                    edges[:, subset]
                if layer_cutoff is not None:
                    layer_cutoff = layer_cutoff[subset]
            node_feats, sc = interaction(node_attrs=node_attrs, node_feats=node_feats,
                                         edge_attrs=attrs, edge_feats=feats,
                                         edge_index=layer_index, cutoff=layer_cutoff,
                                         first_layer=(layer == 0))
            node_feats = product(node_feats=node_feats, sc=sc, node_attrs=node_attrs)
            features.append(node_feats)
        for k, readout in enumerate(m.readouts):
            terms.append(readout(features[-1 if len(m.readouts) == 1 else k], heads)[atoms, heads])
        interaction_energy = torch.stack(terms, dim=0).sum(dim=0)
        if hasattr(m, "scale_shift"):
            interaction_energy = m.scale_shift(interaction_energy, heads)
        return (node_e0 + interaction_energy).to(edge_vectors.dtype)

    # --- halo exchange (mlff_core.models.halo): one MACE layer at a time. The state of a
    # node is [node_feats, energy so far]; a neighbour needs its node_feats. The interaction
    # block runs on every node (its skip connection and linear_up touch ghost rows too; MACE's
    # own LAMMPS path exchanges after linear_up instead, inside the block), messages reach
    # only local receivers, the product and readouts run on local nodes.

    @torch.jit.unused
    def halo_source_widths(self) -> list[int]:
        return [int(interaction.node_feats_irreps.dim) for interaction in self.mace.interactions]

    def halo_edge_features(self, species: Tensor, edge_index: Tensor,
                           edge_vectors: Tensor) -> list[Tensor]:
        """[node_attrs [M, elements], MACE edges [2, E], Y_lm [E, ·], radial [E, ·], radial
        cutoff [E, 1] (empty when the model has none), pair repulsion [M] (zeros without one),
        per-node E0 [M]]: the per-step inputs of `forward` and of the halo methods."""
        m = self.mace
        n = species.shape[0]
        node_attrs = nn.functional.one_hot(self.column[species],
                                           self.num_elements).to(edge_vectors.dtype)
        heads = torch.full((n,), self.head, dtype=torch.long, device=species.device)
        edges = edge_index.flip(0)    # MACE: [sender, receiver]
        vectors = -edge_vectors       # x_receiver − x_sender
        lengths = torch.linalg.norm(vectors, dim=-1, keepdim=True)
        edge_attrs = m.spherical_harmonics(vectors)
        edge_feats, cutoff = m.radial_embedding(lengths, node_attrs, edges, m.atomic_numbers)
        if cutoff is None:
            cutoff = torch.zeros(0, 1, dtype=edge_feats.dtype, device=edge_feats.device)
        extra = torch.zeros(n, dtype=edge_vectors.dtype, device=species.device)
        if hasattr(m, "pair_repulsion"):
            extra = extra + m.pair_repulsion_fn(lengths, node_attrs, edges, m.atomic_numbers)
        node_e0 = m.atomic_energies_fn(node_attrs)[torch.arange(n, device=species.device), heads]
        return [node_attrs, edges, edge_attrs, edge_feats, cutoff, extra, node_e0]

    def halo_embed(self, species: Tensor, features: list[Tensor]) -> Tensor:
        feats = self.mace.node_embedding(features[0])
        return torch.cat([feats, torch.zeros_like(feats[:, :1])], dim=1)

    def halo_source(self, layer: int, state: Tensor) -> Tensor:
        return state[:, :-1]

    def halo_interaction(self, layer: int, state: Tensor, source: Tensor, receiver: Tensor,
                         sender: Tensor, features: list[Tensor]) -> Tensor:
        m = self.mace
        n = state.shape[0]
        node_attrs, edges, edge_attrs, edge_feats = features[0], features[1], features[2], \
            features[3]
        cutoff = _optional_cutoff(features[4], edges)
        heads = torch.full((n,), self.head, dtype=torch.long, device=state.device)
        atoms = torch.arange(n, device=state.device)
        out = state
        last = len(m.interactions) - 1
        blocks = zip(m.interactions, m.products)  # noqa: B905 (TorchScript has no strict=)
        for k, (interaction, product) in enumerate(blocks):
            if k == layer:
                feats, sc = interaction(node_attrs=node_attrs, node_feats=source,
                                        edge_attrs=edge_attrs, edge_feats=edge_feats,
                                        edge_index=edges, cutoff=cutoff, first_layer=(k == 0))
                local_sc: Optional[Tensor] = None if sc is None else sc[:n]  # noqa: UP045
                feats = product(node_feats=feats[:n], sc=local_sc, node_attrs=node_attrs[:n])
                energy = state[:, -1]
                for r, readout in enumerate(m.readouts):
                    if (len(m.readouts) == 1 and k == last) or (len(m.readouts) > 1 and r == k):
                        energy = energy + readout(feats, heads)[atoms, heads]
                out = torch.cat([feats, energy.unsqueeze(-1)], dim=1)
        return out

    def halo_readout(self, state: Tensor, graph_features: list[Tensor]) -> Tensor:
        m = self.mace
        n = state.shape[0]
        interaction_energy = state[:, -1] + graph_features[5][:n]
        if hasattr(m, "scale_shift"):
            heads = torch.full((n,), self.head, dtype=torch.long, device=state.device)
            interaction_energy = m.scale_shift(interaction_energy, heads)
        return graph_features[6][:n] + interaction_energy

    @torch.jit.unused
    def scriptable(self) -> MaceRepresentation:
        """A copy whose MACE blocks are compiled by e3nn (plain `torch.jit.script` cannot
        compile them), ready for `torch.jit.script` of the model file."""
        from e3nn.util.jit import compile as e3nn_compile

        ready = copy.deepcopy(self)
        with quiet_mace():
            e3nn_compile(ready.mace)  # compiles the blocks in place; the loop stays ours
        return ready


class MaceModelRepresentation(nn.Module):
    """A TorchScript MACE (its own `forward`) as a representation. `layer_edges` is ignored:
    every layer runs on the whole graph, which is exact with ghosts to cutoff × layers.

    Args:
        model: a scripted MACE (`torch.jit.load` of `*_compiled.model`).
        species: the Potential's species (sorted atomic numbers).
        head: readout head (the last one by default).
    """

    def __init__(self, model: torch.jit.ScriptModule, species: list[int],
                 head: int | None = None):
        super().__init__()
        self.mace = model
        mace_numbers = [int(z) for z in model.atomic_numbers.tolist()]
        self.register_buffer("column", _columns(mace_numbers, species))
        self.num_elements = len(mace_numbers)
        heads = list(getattr(model, "heads", ["Default"]))
        self.register_buffer("head", torch.tensor([len(heads) - 1 if head is None else head]))

    def forward(self, species_index: Tensor, edge_index: Tensor, edge_vectors: Tensor,
                layer_edges: Optional[list[Tensor]] = None) -> Tensor:  # noqa: UP045
        n = species_index.shape[0]
        dtype, device = edge_vectors.dtype, edge_vectors.device
        data: dict[str, Tensor] = {
            "positions": torch.zeros(n, 3, dtype=dtype, device=device),
            "node_attrs": nn.functional.one_hot(self.column[species_index],
                                                self.num_elements).to(dtype),
            "edge_index": edge_index.flip(0),
            "shifts": -edge_vectors,  # vectors = pos[receiver] − pos[sender] + shift = −r_ij
            "unit_shifts": torch.zeros_like(edge_vectors),
            "cell": torch.zeros(3, 3, dtype=dtype, device=device),
            "batch": torch.zeros(n, dtype=torch.long, device=device),
            "ptr": torch.tensor([0, n], dtype=torch.long, device=device),
            "head": self.head,
        }
        out = self.mace(data, training=self.training, compute_force=False)
        energies = out["node_energy"]
        assert energies is not None
        return energies.to(dtype)


__all__ = ["MaceModelRepresentation", "MaceRepresentation", "build_mace"]
