"""Execution providers: the real QNN HTP simulator, the OpenVINO plugin, auto selection, strict mode,
and typed errors for every way a provider can be missing."""

import sys
import types
import warnings

import numpy as np
import pytest

from edgelm.errors import ProviderUnavailable
from edgelm.runtime import load
from edgelm.runtime.model import ProviderFallbackWarning
from edgelm.runtime.partition import ProviderFallback, partition_of
from edgelm.runtime.providers import PROVIDERS, ProviderSpec, choose_auto, resolve
from edgelm.runtime.session import create_session
from tests.conftest import run_cli


def _qdq_model(path):
    """A small MatMul -> Add -> Sigmoid model, QDQ-quantized for QNN (a16w8), and its fp32 original."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "W"),
               numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["mm"], name="/mm"),
         helper.make_node("Add", ["mm", "B"], ["add"], name="/add"),
         helper.make_node("Sigmoid", ["add"], ["y"], name="/sigmoid")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    fp32, qdq = path / "fp32.onnx", path / "qdq.onnx"
    onnx.save(model, fp32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.data = iter([{"x": rng.standard_normal((1, 16)).astype(np.float32)} for _ in range(16)])

        def get_next(self):
            return next(self.data, None)

    config = get_qnn_qdq_config(str(fp32), Reader(), activation_type=QuantType.QUInt16,
                                weight_type=QuantType.QUInt8)
    quantize(str(fp32), str(qdq), config)
    return fp32, qdq


def test_qdq_model_runs_entirely_on_the_qnn_htp_simulator_in_strict_mode(tmp_path):
    import onnx

    fp32, qdq = _qdq_model(tmp_path)
    qnn = resolve("qnn")
    session = create_session(qdq, qnn, strict=True)
    report = partition_of(session, "QNNExecutionProvider")
    nodes = len(onnx.load(str(qdq)).graph.node)
    assert report.total == nodes and report.on_requested() == nodes and not report.fallback
    assert [s.ep for s in report.shares] == ["QNNExecutionProvider"]
    assert f"{nodes}/{nodes} nodes on QNNExecutionProvider" in report.summary()
    x = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)
    cpu = create_session(fp32, resolve("cpu")).run(None, {"x": x})[0]
    htp = session.run(None, {"x": x})[0]
    assert np.abs(htp - cpu).max() < 0.02  # 16-bit activations, 8-bit weights


def test_strict_qnn_names_the_nodes_it_rejects(builds):
    package = builds.package("tiny-llama", "int4")
    with pytest.raises(ProviderFallback, match="MatMulNBits") as info:
        load(package, ep="qnn", strict=True)
    assert info.value.report.fallback and "strict mode" in str(info.value)
    proc = run_cli("run", package, "--prompt", "Hi", "--ep", "qnn", "--strict", "--max-new-tokens", "2")
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgelm: error:")]
    assert len(errors) == 1 and "MatMulNBits" in errors[0] and "Traceback" not in proc.stderr


def test_non_strict_fallback_is_never_silent(builds):
    package = builds.package("tiny-llama", "int4")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load(package, ep="qnn")
    assert any(issubclass(w.category, ProviderFallbackWarning) for w in caught)
    assert model.partition.fallback and model.partition.on_requested() < model.partition.total
    assert len(model.generate("Hi", max_new_tokens=3, ignore_eos=True).token_ids) == 3
    proc = run_cli("run", package, "--prompt", "Hi", "--ep", "qnn", "--max-new-tokens", "2", "--json", check=True)
    assert "fall back from QNNExecutionProvider" in proc.stderr
    assert proc.stdout.startswith("{")  # the plugin's banner went to stderr, stdout stays JSON


def test_openvino_plugin_matches_cpu(builds):
    try:
        resolve("openvino")
    except ProviderUnavailable as exc:
        pytest.skip(f"OpenVINO not runnable on this machine: {exc}")
    # optimum's graph: plain ONNX ops (OpenVINO has no GroupQueryAttention, which the native builder uses)
    package = builds.package("tiny-llama", "fp32", "optimum")
    ids = list(range(5, 40))
    cpu = load(package).decoder.forward(ids, last_only=False)
    ov = load(package, ep="openvino", strict=True).decoder.forward(ids, last_only=False)
    assert np.abs(ov - cpu).max() < 1e-3


def test_auto_prefers_a_real_accelerator_and_says_why():
    chosen = choose_auto("int4")
    assert chosen.spec.name == "cpu"
    assert "auto chose cpu" in chosen.reason and "qnn" in chosen.reason
    assert "qdq" in chosen.reason  # QNN runs QDQ packages only
    assert "simulator" in choose_auto("qdq").reason  # and on x86 its HTP is a simulator


def test_missing_plugin_package_names_what_to_install(monkeypatch):
    spec = ProviderSpec("fakenpu", "FakeNpuExecutionProvider", "npu", "onnxruntime-fake-npu",
                        plugin_module="edgelm_tests_no_such_plugin")
    monkeypatch.setitem(PROVIDERS, "fakenpu", spec)
    with pytest.raises(ProviderUnavailable, match="pip install onnxruntime-fake-npu"):
        resolve("fakenpu")


def test_plugin_library_that_fails_to_load(monkeypatch, tmp_path):
    broken = tmp_path / "libbroken_ep.so"
    broken.write_bytes(b"not a shared library")
    module = types.ModuleType("edgelm_tests_broken_plugin")
    module.get_library_path = lambda: str(broken)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    spec = ProviderSpec("brokenep", "BrokenExecutionProvider", "gpu", "onnxruntime-broken",
                        plugin_module=module.__name__)
    monkeypatch.setitem(PROVIDERS, "brokenep", spec)
    with pytest.raises(ProviderUnavailable, match="plugin library from onnxruntime-broken failed to load"):
        resolve("brokenep")


def test_info_lists_providers_and_partitions(builds):
    env = run_cli("info", check=True).stdout
    assert "qnn" in env and "npu" in env and "onnxruntime-qnn" in env
    pkg = run_cli("info", builds.package("tiny-qwen2", "int4"), check=True).stdout
    assert "nodes on CPUExecutionProvider" in pkg and "nodes on QNNExecutionProvider" in pkg


def test_qnn_context_cache_is_written_once_and_reused(tmp_path):
    import time

    _, qdq = _qdq_model(tmp_path)
    cache = tmp_path / "cache"
    x = np.random.default_rng(2).standard_normal((1, 16)).astype(np.float32)
    start = time.perf_counter()
    first = create_session(qdq, resolve("qnn"), strict=True, context_cache=cache)
    compile_s = time.perf_counter() - start
    written = sorted(p.name for p in cache.iterdir())
    assert written and any(name.endswith("_ctx.onnx") for name in written)
    start = time.perf_counter()
    again = create_session(qdq, resolve("qnn"), strict=True, context_cache=cache)
    cached_s = time.perf_counter() - start
    assert sorted(p.name for p in cache.iterdir()) == written  # reused, not rewritten
    assert np.array_equal(first.run(None, {"x": x})[0], again.run(None, {"x": x})[0])
    print(f"QNN session load: compile {compile_s:.3f} s, from context cache {cached_s:.3f} s")
