"""TorchScript and `torch.save` archives as `mlff import` meets them: what kind a file is,
its digest, its scripted methods' signatures, its extra files."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch

from mlff_core.errors import ModelFileError
from mlff_core.export.model_file import METADATA_NAME


def archive_kind(path: Path) -> str:
    """'torchscript' (a zip with TorchScript code), 'pickle' (a `torch.save` zip) or 'other'."""
    if not zipfile.is_zipfile(path):
        return "other"
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any("/code/" in name for name in names):
        return "torchscript"
    if any(name.endswith("data.pkl") for name in names):
        return "pickle"
    return "other"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text(value: str | bytes) -> str:
    """An extra file's content as text (torch gives bytes)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the first parameter (else floating buffer); float64 for a model with
    neither."""
    for parameter in model.parameters():
        return parameter.dtype
    for buffer in model.buffers():
        if buffer.is_floating_point():
            return buffer.dtype
    return torch.float64


def error_line(exc: Exception) -> str:
    """The message of an error raised in TorchScript code (its last line; the first only says
    that the interpreter failed)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1].removeprefix("builtins.") if lines else type(exc).__name__


def load_scripted(path: Path, extra_names: Sequence[str], expected: str
                  ) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """A TorchScript file and the named extra files of its archive (as text, '' when absent),
    or a ModelFileError naming the file and what it is instead of `expected`."""
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    kind = archive_kind(path)
    if kind == "pickle":
        raise ModelFileError(f"{path}: a torch.save (pickle) archive, not {expected}")
    if kind != "torchscript":
        raise ModelFileError(f"{path}: not {expected} (not a TorchScript archive)")
    extra = {name: "" for name in extra_names}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise ModelFileError(f"{path}: not a readable TorchScript file ({first})") from None
    module.eval()
    return module, {name: text(value) for name, value in extra.items()}


def is_model_file(path: Path) -> bool:
    """Whether a TorchScript archive is already an mlff model file (holds mlff.json)."""
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("extra/" + METADATA_NAME) for name in archive.namelist())


def method_signature(module: torch.jit.ScriptModule, name: str) -> tuple[list[str], list[str]]:
    """(argument types without self, return types) of a scripted method."""
    schema = module._c._get_method(name).schema
    return ([str(arg.type) for arg in schema.arguments[1:]],
            [str(ret.type) for ret in schema.returns])
