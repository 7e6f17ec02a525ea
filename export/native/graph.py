"""A small ONNX graph builder that streams initializers to one external-data file as they are added.

Only tensor references stay in memory, so peak memory is about one weight at a time. Nodes are named by
where they sit in the model (`/model/layers.3/attn/GroupQueryAttention`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ALIGN = 64  # offsets aligned for mmap-friendly loading


class GraphBuilder:
    def __init__(self, folder: Path, model_file: str):
        from onnx import TensorProto

        self.TensorProto = TensorProto
        self.folder, self.model_file = folder, model_file
        self.data_name = f"{model_file}.data"
        self._data = open(folder / self.data_name, "wb")
        self.nodes, self.inputs, self.outputs, self.initializers, self.value_info = [], [], [], [], []
        self.total_bytes = 0
        self.gather_only_bytes = 0  # tables read one row per token (embeddings)

    # -- weights ---------------------------------------------------------------------------------
    def weight(self, name: str, array: np.ndarray, gather_only: bool = False) -> str:
        """Write `array` to the data file now; keep a reference. Returns the initializer name."""
        from onnx import helper

        array = np.ascontiguousarray(array)
        offset = self._data.tell()
        pad = (-offset) % ALIGN
        if pad:
            self._data.write(b"\0" * pad)
            offset += pad
        self._data.write(array.tobytes())
        tensor = self.TensorProto()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.data_location = self.TensorProto.EXTERNAL
        for key, value in (("location", self.data_name), ("offset", str(offset)), ("length", str(array.nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.initializers.append(tensor)
        self.total_bytes += array.nbytes
        if gather_only:
            self.gather_only_bytes += array.nbytes
        return name

    def constant(self, name: str, array: np.ndarray) -> str:
        """A small constant kept inside the graph."""
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    # -- nodes and I/O ---------------------------------------------------------------------------
    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, domain: str = "", **attrs) -> list[str]:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))
        return outputs

    def input(self, name: str, dtype, shape: list) -> str:
        from onnx import helper

        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def output(self, name: str, dtype, shape: list) -> str:
        from onnx import helper

        self.outputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def typed(self, name: str, dtype) -> str:
        """Declare the element type of an intermediate tensor (for tools whose shape inference stops at
        onnxruntime's contrib ops)."""
        from onnx import helper

        self.value_info.append(helper.make_tensor_value_info(name, dtype, None))
        return name

    def save(self, opset: int = 21) -> Path:
        import onnx
        from onnx import helper

        self._data.close()
        graph = helper.make_graph(self.nodes, "edgelm-decoder", self.inputs, self.outputs, self.initializers,
                                  value_info=self.value_info)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)],
            producer_name="edgelm-native",
        )
        model.ir_version = 10
        path = self.folder / self.model_file
        onnx.save_model(model, str(path))
        return path

    def close(self) -> None:
        if not self._data.closed:
            self._data.close()
