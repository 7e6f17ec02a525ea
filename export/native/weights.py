"""Read safetensors lazily, one tensor at a time, without torch (bf16/fp16/fp32 -> float32 numpy)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from edgelm.errors import ModelSourceError

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


class SafetensorsReader:
    """Tensor name -> (file, dtype, shape, byte range); arrays are read from a memory map on demand."""

    def __init__(self, folder: Path):
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            files = sorted({folder / f for f in json.loads(index.read_text())["weight_map"].values()})
        else:
            files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise ModelSourceError(f"{folder} has no .safetensors weights; save the model with safe_serialization")
        self.entries: dict[str, tuple[Path, str, list[int], int, int]] = {}
        for path in files:
            with open(path, "rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(size))
            for name, meta in header.items():
                if name == "__metadata__":
                    continue
                start, end = meta["data_offsets"]
                self.entries[name] = (path, meta["dtype"], meta["shape"], 8 + size + start, end - start)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def get(self, name: str) -> np.ndarray:
        """The tensor as float32 (a fresh array, read from the file)."""
        return self.get_rows(name)

    def shape(self, name: str) -> list[int]:
        return list(self._entry(name)[2])

    def _entry(self, name: str):
        if name not in self.entries:
            raise ModelSourceError(f"weight {name} is missing from the safetensors files")
        return self.entries[name]

    def get_rows(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows start:stop of the tensor (along its first axis) as float32, read from the file alone: a vocab
        table's slice without the whole table in memory."""
        path, dtype, shape, offset, length = self._entry(name)
        if dtype not in _DTYPES:
            raise ModelSourceError(f"weight {name} has dtype {dtype}; the native builder reads F32, F16, BF16")
        item = np.dtype(_DTYPES[dtype]).itemsize
        rows = shape[0] if shape else 1
        stop = rows if stop is None else min(stop, rows)
        per_row = length // item // max(rows, 1)
        shape = [stop - start, *shape[1:]] if shape else shape
        # read into a private array (no memory map: mapped pages would count as resident beside the copy)
        data = np.fromfile(path, dtype=_DTYPES[dtype], count=(stop - start) * per_row,
                           offset=offset + start * per_row * item).reshape(shape)
        if dtype == "BF16":  # bfloat16 is the top half of a float32
            wide = data.astype(np.uint32)
            wide <<= 16  # in place: no second full-size temporary
            return wide.view(np.float32)
        return data if dtype == "F32" else data.astype(np.float32)


def role_weight(reader, arch, role: str, layer: int | None = None) -> np.ndarray:
    """Tensor `role` of `layer`; a role stored inside a fused tensor (Phi-3's q in qkv_proj) is cut from it, its
    rows at their place in the fused order (ArchSpec.fused, ArchSpec.out_features)."""
    for fused, parts in arch.fused.items():
        if role in parts:
            sizes = [arch.out_features(p) for p in parts]
            start = sum(sizes[:parts.index(role)])
            return reader.get(arch.tensor(fused, layer))[start:start + arch.out_features(role)]
    return reader.get(arch.tensor(role, layer))
