"""openmm-ml integration: `MLPotential('mlff', modelPath='aspirin.pt')`.

Registered through the `openmmml.potentials` entry point in pyproject.toml, so that

    from openmmml import MLPotential
    potential = MLPotential("mlff", modelPath="aspirin.pt")
    system = potential.createSystem(topology)                            # all ML
    mixed = potential.createMixedSystem(topology, mm_system, ml_atoms)    # ML/MM

work as they do for openmm-ml's own models (mixed systems use openmm-ml's mechanical embedding).
Extra keyword: backend='torch' (openmm-torch TorchForce, default) or 'python' (PythonForce).
"""

from __future__ import annotations

from collections.abc import Iterable

import openmm
from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory

from mlff_core.errors import MLFFError


class MLFFPotentialImplFactory(MLPotentialImplFactory):
    """Creates `MLFFPotentialImpl` for the name 'mlff'."""

    def createImpl(self, name: str, modelPath: str | None = None, **args) -> MLPotentialImpl:  # noqa: N802,N803 (openmm-ml API)
        if modelPath is None:
            raise MLFFError("MLPotential('mlff') needs modelPath='model.pt'")
        return MLFFPotentialImpl(modelPath)


class MLFFPotentialImpl(MLPotentialImpl):
    """An mlff-plugins model file as an openmm-ml potential."""

    def __init__(self, model_path: str):
        from mlff_core.export.loading import load_model

        self.model = load_model(model_path)

    def addForces(self, topology: openmm.app.Topology, system: openmm.System,  # noqa: N802
                  atoms: Iterable[int] | None, forceGroup: int, backend: str = "torch",  # noqa: N803
                  **args) -> None:
        from openmm_bridge.forces import add_mlff_force

        add_mlff_force(system, topology, self.model, None if atoms is None else list(atoms),
                       backend=backend, force_group=forceGroup)

    def getMLLongRange(self) -> bool:  # noqa: N802
        return False  # message passing within cutoff × layers: local
