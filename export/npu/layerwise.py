"""The NPU graph built, calibrated and quantized one decoder layer at a time, then stitched into one graph.

    for each layer i (then the head):
        fp32 segment i (same tensor names as the whole graph) ─ run on the CPU over every calibration run,
        fed the residual stream segment i - 1 produced and its own KV cache ─> ranges, the next residual
        ─> QDQ segment i (onnxruntime's quantizer, LPBQ for int4) ─> deleted fp32 segment
    QDQ segments ─ stitch: the boundary residual's Q/DQ pair kept once, shared cos/sin/mask Q/DQ once ─>
    model.onnx + weights.data

Memory is about one layer's float weights (the head: the lm_head's) plus the calibration activations of
one residual stream, whatever the depth: the 1.5B shape's fp32 graph alone is 6.2 GB, and onnxruntime's
quantizer needs several times a graph's size. The runs are the ones the runtime makes (StaticDecoder.plan
and .inputs: chunks, then one token a run) over corpus windows, teacher-forced: the decode steps feed the
window's next corpus tokens (the greedy continuation of a whole-graph pass needs every layer at once).
K's smoothing (graph.smoothing_factors) is measured per layer on an unsmoothed build of that layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgelm.errors import QuantizationError
from edgelm.export.npu.calibrate import RangeRecorder, range_overrides, with_all_outputs
from edgelm.export.npu.graph import (EIGHT_BIT_SIDE, EMBEDS, KEYS_TENSORS, STATIC_IO, StaticShape, build_static,
                                     residual_name, smoothing_factors)
from edgelm.export.npu.lpbq import apply_lpbq
from edgelm.export.npu.qdq import QdqScheme, producers, quantize_graph
from edgelm.manifest import LayerPrecision


@dataclass(frozen=True)
class Run:
    window: int  # runs of one window share a KV cache
    pos: int
    take: int  # real tokens
    feeds: dict  # embeddings, cos, sin, mask


def schedule(decoder, windows: list[list[int]], prefill: int) -> list[Run]:
    """The runs the runtime makes for each window: its first `prefill` tokens as a prompt, then the rest one
    token at a time, as decode steps."""
    runs = []
    for w, ids in enumerate(windows):
        pos = 0
        steps = decoder.plan(0, min(prefill, len(ids)))
        for _ in range(len(ids) - min(prefill, len(ids))):
            steps += decoder.plan(pos + sum(t for _, _, t in steps), 1)
        for _, n, take in steps:
            runs.append(Run(w, pos, take, decoder.inputs(pos, np.asarray(ids[pos:pos + take]), n)))
            pos += take
    return runs


class Segments:
    """Builds, calibrates and quantizes the segments in order; `stitch` makes the graph."""

    def __init__(self, arch, source_path: Path, work: Path, shape: StaticShape, scheme: QdqScheme, npu, reader,
                 runs: list[Run]):
        self.arch, self.source_path, self.work, self.shape = arch, source_path, work, shape
        self.scheme, self.npu, self.reader, self.runs = scheme, npu, reader, runs
        self.stream = [r.feeds[EMBEDS] for r in runs]  # the residual entering the next segment, per run
        self.ranges: dict[str, list[float]] = {}
        self.blocks: dict[str, int] = {}  # LPBQ weight -> block (0: kept 8-bit)
        self.done: list[Path] = []
        self.precision: list[LayerPrecision] = []  # LPBQ: per layer, the measured errors and the bits chosen

    def layer(self, i: int) -> None:
        smoothing = None
        if self.npu.smooth_keys:  # K's channel ranges from an unsmoothed build of this layer
            plain = self._build(i, None, "plain")
            channel_max: dict[str, np.ndarray] = {}
            self._run(plain, i, {}, channel_max, KEYS_TENSORS)
            smoothing = smoothing_factors(channel_max, self.arch, self.npu.smooth_keys, layers=[i])
            _remove(plain)
        fp32 = self._build(i, smoothing, "fp32")
        entering = self.stream
        self.stream, sample = self._run(fp32, i, self.ranges)
        self._quantize(fp32, f"layer{i}", sample, (i, entering, self.stream))

    def head(self) -> None:
        fp32 = self._build("head", None, "fp32")
        _, sample = self._run(fp32, None, self.ranges)
        self._quantize(fp32, "head", sample)
        self.stream = []

    def _build(self, segment, smoothing, kind: str) -> Path:
        return build_static(self.arch, self.source_path, self.work, f"{segment}.{kind}.onnx", self.shape, None,
                            smoothing, self.reader, segment=segment)

    def _run(self, path: Path, layer: int | None, ranges: dict, channel_max: dict | None = None,
             channels: tuple[str, ...] = (), stream: list | None = None, count: int | None = None
             ) -> tuple[list[np.ndarray], dict]:
        """Every run (or the first `count`) through one segment fed `stream` (default the current residual
        stream), its KV cache kept per window; (its outputs per run, one feed). Records the ranges of every
        tensor into `ranges` (None: a quantized segment, run as it is, recording nothing)."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if ranges is None:
            full, recorder = None, _Plain(ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]))
        else:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
            full = with_all_outputs(path, path.with_name(f"{path.stem}.calib.onnx"))
            recorder = RangeRecorder(ort.InferenceSession(str(full), opts, providers=["CPUExecutionProvider"]),
                                     ranges, {} if channel_max is None else channel_max, channels)
        entering = EMBEDS if layer == 0 else residual_name(self.arch.num_layers - 1 if layer is None else layer - 1)
        kv, ctx, n = self.arch.kv_cache(), self.shape.context, self.shape.tokens
        wanted = [STATIC_IO.logits] if layer is None else [residual_name(layer), *STATIC_IO.present_names(layer)]
        out, cache, window = [], None, None
        for run, x in zip(self.runs[:count], self.stream if stream is None else stream):
            feeds = {entering: x}
            if layer is not None:
                if run.window != window:
                    cache = [np.zeros((1, kv.num_kv_heads, ctx - n, kv.head_dim), np.float32) for _ in range(2)]
                    window = run.window
                feeds.update({k: v for k, v in run.feeds.items() if k != EMBEDS})
                feeds.update(zip(STATIC_IO.past_names(layer), cache))
            values = recorder.run(wanted, feeds)
            if layer is not None:
                end = min(run.pos + run.take, ctx - n)
                for buf, new in zip(cache, values[1:]):
                    buf[:, :, run.pos:end] = new[:, :, :end - run.pos]
            out.append(values[0])
        sample = recorder.first_feeds
        del recorder
        if full is not None:
            _remove(full)
        return out, sample

    def _error(self, path: Path, layer: int, entering: list, exits: list) -> float:
        """Mean over the first runs of |segment output - fp32 output| / |fp32 output - input|: the error
        relative to what the layer adds to the residual stream."""
        got, _ = self._run(path, layer, None, stream=entering, count=EVAL_RUNS)
        return float(np.mean([np.linalg.norm(g - y) / max(np.linalg.norm(y - x), 1e-12)
                              for g, y, x in zip(got, exits, entering)]))

    def _quantize(self, fp32: Path, name: str, sample: dict, evaluate: tuple | None = None) -> None:
        tensors = producers(fp32)
        known = set(tensors) | set(_input_names(fp32))
        overrides = {k: v for k, v in range_overrides(self.ranges, tensors, self.npu.widen, EIGHT_BIT_SIDE).items()
                     if k in known}
        out = self.work / f"{name}.onnx"
        if self.scheme.lpbq:
            quantized = quantize_graph(fp32, self.work / f"{name}.w8.onnx", sample, overrides, self.scheme)
            blocks = apply_lpbq(quantized, fp32, out, self.scheme.block_size, self.npu.eight_bit)
            if evaluate is not None:  # measured: this layer at 4 bits against 8
                layer, entering, exits = evaluate
                errors = {bits: self._error(path, layer, entering, exits) for bits, path in ((8, quantized), (4, out))}
                bits = 8 if errors[4] - errors[8] > self.npu.w4_max_cost else 4  # 4-bit costs too much: 8
                self.precision.append(LayerPrecision(layer, bits, round(errors[4], 4), round(errors[8], 4)))
                if bits == 8:
                    _remove(out)
                    out, quantized = quantized, out
                    blocks = {w: 0 for w in blocks}
            self.blocks.update(blocks)
            _remove(quantized)
        else:
            quantize_graph(fp32, out, sample, overrides, self.scheme)
        _remove(fp32)
        self.done.append(out)


EVAL_RUNS = 12  # calibration runs a layer's 4- and 8-bit versions are compared on


class _Plain:
    """A session as RangeRecorder is called, recording nothing."""

    def __init__(self, session):
        self.session, self.first_feeds = session, None

    def run(self, outputs, feeds):
        return self.session.run(outputs, feeds)


def _input_names(path: Path) -> list[str]:
    import onnx

    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


def _remove(path: Path) -> None:
    """A graph and its external data file(s)."""
    for p in path.parent.glob(f"{path.name}*"):
        p.unlink()


def stitch(segments: list[Path], out: Path, outputs: list[str]) -> Path:
    """One graph from QDQ segments that share tensor names: nodes and initializers kept once (the same name
    must hold the same thing), a boundary tensor's second QuantizeLinear dropped (the first one's output,
    same name and same scale, feeds the next segment), nodes nothing reads removed. External data stays
    where the segments put it (same folder as `out`)."""
    import onnx
    from onnx import helper

    models = [onnx.load(str(p), load_external_data=False) for p in segments]
    nodes, made, inits, inputs, node_names = [], set(), {}, {}, set()
    for model in models:
        g = model.graph
        for t in g.initializer:
            old = inits.get(t.name)
            if old is None:
                inits[t.name] = t
            elif old.SerializeToString() != t.SerializeToString():  # external ones differ by file: never dropped
                raise QuantizationError(f"stitching the NPU graph: {t.name} differs between segments (an edgelm "
                                        "bug, please report it)")
        for v in g.input:
            if v.name not in made and v.name not in inputs:
                inputs[v.name] = v
        for node in g.node:
            if all(o in made for o in node.output):  # already made by an earlier segment
                continue
            if node.name in node_names:
                node.name = f"{node.name}/{len(nodes)}"
            nodes.append(node)
            node_names.add(node.name)
            made.update(node.output)
    outputs_vi = {v.name: v for m in models for v in m.graph.output}
    kept = _live(nodes, set(outputs))
    used = {i for n in kept for i in n.input}
    graph = helper.make_graph(kept, "edgelm-npu", [v for name, v in inputs.items() if name in used],
                              [outputs_vi[name] for name in outputs], [t for name, t in inits.items() if name in used])
    model = helper.make_model(graph, opset_imports=models[0].opset_import, producer_name="edgelm-npu")
    model.ir_version = models[0].ir_version
    onnx.save_model(model, str(out))
    return out


def _live(nodes: list, outputs: set[str]) -> list:
    """The nodes some graph output depends on, in their order."""
    producer = {o: n for n in nodes for o in n.output}
    needed, stack = set(), list(outputs)
    while stack:
        name = stack.pop()
        node = producer.get(name)
        if node is None or id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(node.input)
    return [n for n in nodes if id(n) in needed]
