"""One external-data file for several graphs: tensors with the same name and bytes are stored once.

The prefill and decode graphs of an NPU package are quantized from the same weights with the same
ranges, so their quantized weights are identical; keeping one copy halves the package's ONNX weights.
Returns what it saved, as a pass reports what it changed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

ALIGN = 64


def _external(tensor) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


def share_external_data(folder: Path, model_files: list[str], data_name: str = "weights.data") -> int:
    """Rewrite `model_files` (in `folder`) to read their external tensors from one file; return bytes saved."""
    import onnx
    from onnx import TensorProto

    models = {name: onnx.load(str(folder / name), load_external_data=False) for name in model_files}
    old_files: set[str] = set()
    stored: dict[tuple[str, str], tuple[int, int]] = {}  # (name, sha256) -> (offset, length)
    saved = 0
    with open(folder / data_name, "wb") as out:
        for model in models.values():
            for tensor in model.graph.initializer:
                if tensor.data_location != TensorProto.EXTERNAL:
                    continue
                info = _external(tensor)
                old_files.add(info["location"])
                with open(folder / info["location"], "rb") as f:
                    f.seek(int(info.get("offset", 0)))
                    raw = f.read(int(info["length"]))
                key = (tensor.name, hashlib.sha256(raw).hexdigest())
                if key in stored:
                    offset, length = stored[key]
                    saved += length
                else:
                    offset = out.tell() + (-out.tell()) % ALIGN
                    out.write(b"\0" * (offset - out.tell()))
                    out.write(raw)
                    offset, length = stored.setdefault(key, (offset, len(raw)))
                del tensor.external_data[:]
                for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(length))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = k, v
    for name, model in models.items():
        onnx.save_model(model, str(folder / name))
    for name in old_files - {data_name}:
        (folder / name).unlink()
    return saved
