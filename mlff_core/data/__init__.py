"""Frames, file formats, splits, torch-geometric batches, starting structures, data generation."""

from mlff_core.data.formats import FORMATS, read_frames, read_systems, write_frames
from mlff_core.data.frames import Frames
from mlff_core.data.splits import Split, split_indices

__all__ = ["FORMATS", "Frames", "Split", "read_frames", "read_systems", "split_indices",
           "write_frames"]
