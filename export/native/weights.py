"""Read safetensors lazily, one tensor at a time, without torch (bf16/fp16/fp32 -> float32 numpy)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from edgelm.errors import ModelSourceError

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}
_ITEM = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
         "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
HEADER_LIMIT = 100 << 20  # safetensors' own readers refuse a header over 100 MB


def _header(path: Path) -> dict[str, tuple[str, list[int], int, int]]:
    """name -> (dtype, shape, offset, length) of one safetensors file, each entry checked against the file's
    size: a truncated or corrupt file is a ModelSourceError naming it, before a byte of weights is read."""
    def bad(why: str) -> ModelSourceError:
        return ModelSourceError(f"{path} is not a valid safetensors file ({why}): the copy is truncated or corrupt; "
                                "download or save it again")

    file_size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad(f"{file_size} bytes")
        (size,) = struct.unpack("<Q", head)
        if size > min(HEADER_LIMIT, file_size - 8):
            raise bad(f"its header claims {size} bytes")
        try:
            header = json.loads(f.read(size))
        except (ValueError, RecursionError) as exc:
            raise bad(f"its header is not JSON: {str(exc)[:80]}") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    entries = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = meta["dtype"], [int(d) for d in meta["shape"]], meta["data_offsets"]
            ok = isinstance(start, int) and isinstance(end, int) and 0 <= start <= end and all(d >= 0 for d in shape)
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise bad(f"tensor {name!r} has a malformed entry")
        if 8 + size + end > file_size:
            raise bad(f"tensor {name!r} ends at byte {8 + size + end}, past the file's {file_size}")
        if dtype in _ITEM and int(np.prod(shape)) * _ITEM[dtype] != end - start:
            raise bad(f"tensor {name!r}'s shape {shape} does not fill its {end - start} bytes")
        entries[name] = (dtype, shape, 8 + size + start, end - start)
    return entries


class SafetensorsReader:
    """Tensor name -> (file, dtype, shape, byte range); arrays are read from a memory map on demand."""

    def __init__(self, folder: Path):
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            try:
                files = sorted({folder / f for f in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()})
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                raise ModelSourceError(f"{index} is not a safetensors index (a JSON object with a weight_map of "
                                       "file names); save the model again") from None
            missing = [f for f in files if not f.is_file()]
            if missing:
                raise ModelSourceError(f"{missing[0]}, named by {index.name}, is missing; download the whole model")
        else:
            files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise ModelSourceError(f"{folder} has no .safetensors weights; save the model with safe_serialization")
        self.entries: dict[str, tuple[Path, str, list[int], int, int]] = {}
        for path in files:
            for name, entry in _header(path).items():
                self.entries[name] = (path, *entry)

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
            data = wide.view(np.float32)
        return finite(name, data if data.dtype == np.float32 else data.astype(np.float32))


def finite(name: str, array: np.ndarray) -> np.ndarray:
    """`array`, or ModelSourceError naming tensor `name` if it holds NaN or infinity (a corrupt or badly
    converted checkpoint: every logit downstream would be NaN). min and max propagate NaN and show an
    infinity, without a temporary the size of the tensor."""
    if array.size and not (np.isfinite(array.min()) and np.isfinite(array.max())):
        bad = np.flatnonzero(~np.isfinite(array))
        where = np.unravel_index(bad[0], array.shape)
        raise ModelSourceError(f"weight {name} holds {len(bad)} NaN or infinite value(s) (the first at index "
                               f"{tuple(int(i) for i in where)}: {array[where]}); the checkpoint is corrupt or "
                               "was converted badly: re-download or re-convert it")
    return array


def role_weight(reader, arch, role: str, layer: int | None = None) -> np.ndarray:
    """Tensor `role` of `layer`; a role stored inside a fused tensor (Phi-3's q in qkv_proj) is cut from it, its
    rows at their place in the fused order (ArchSpec.fused, ArchSpec.out_features)."""
    for fused, parts in arch.fused.items():
        if role in parts:
            sizes = [arch.out_features(p) for p in parts]
            start = sum(sizes[:parts.index(role)])
            return reader.get(arch.tensor(fused, layer))[start:start + arch.out_features(role)]
    return reader.get(arch.tensor(role, layer))
