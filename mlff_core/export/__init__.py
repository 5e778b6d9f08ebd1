"""The model file: TorchScript + `mlff.json` metadata; `load_model` validates it."""

from mlff_core.export.from_run import export_run
from mlff_core.export.loading import LoadedModel, load_model
from mlff_core.export.model_file import ModelFile, model_metadata, save_model_file

__all__ = ["LoadedModel", "ModelFile", "export_run", "load_model", "model_metadata",
           "save_model_file"]
