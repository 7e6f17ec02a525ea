"""Activation-aware weight scaling (AWQ-style) for the native builder's int4/int8 linears.

A linear's input channels do not matter alike: a few carry large activations, and rounding errors in
their weight columns cost the most. Scaling column j of W by s_j and the input by 1/s_j is exact in real
arithmetic, but block-wise rounding then spends its resolution where the activations are large. The 1/s
is folded into whatever produces the input, so the graph gets no new node:

    group  input                              scaled linears   1/s folded into
    attn   input_layernorm output             q, k, v          the input norm's gain
    mlp    post_attention_layernorm output    gate, up         the post-attention norm's gain
    down   act(gate) * up                     down             up's output rows

    s = mean|x|^alpha (normalised), alpha per group and layer from a small grid (0 = plain rounding),
    the one whose rounded linears best reproduce the float outputs on calibration activations.

The activations come from a float32 numpy forward of the calibration windows (`edgelm.export.calibration`),
run one layer at a time as the builder asks for that layer's weights: one pass over the weights, no
torch, memory about one layer's weights plus the windows' hidden states. o_proj is not scaled: its
input is the attention output, whose channels GQA shares between query heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgelm.errors import ExportError
from edgelm.export.native.activations import ACTIVATIONS
from edgelm.export.native.quant import fake_quantize
from edgelm.export.native.rope import rotary_for_length

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
WINDOW = 128  # tokens per calibration window
SAMPLE_ROWS = 256  # activation rows (tokens) per group for the error search
SAMPLE_OUTPUTS = 512  # output channels per linear the search rounds (rows round independently)


@dataclass(frozen=True)
class ScaleGroup:
    name: str
    linears: tuple[str, ...]  # ArchSpec roles scaled by s along their input axis
    fold: str  # ArchSpec role that absorbs 1/s
    fold_rows: bool  # True: 1/s scales the fold tensor's output rows; False: a norm gain vector
    mlp: bool  # its linears take the MLP block size


GROUPS = (
    ScaleGroup("attn", ("q", "k", "v"), "input_norm", False, False),
    ScaleGroup("mlp", ("gate", "up"), "post_norm", False, True),
    ScaleGroup("down", ("down",), "up", True, True),
)
LAYER_ROLES = ("input_norm", "q", "k", "v", "q_bias", "k_bias", "v_bias", "q_norm", "k_norm", "o", "o_bias",
               "post_norm", "gate", "up", "down", "gate_bias", "up_bias", "down_bias")


def _bias(w: dict, role: str):
    return w[role] if w.get(role) is not None else 0


def best_scales(x: np.ndarray, mean_abs: np.ndarray, weights: list[np.ndarray], bits: int, block_size: int,
                symmetric: bool, seed: int = 0, alphas: tuple[float, ...] | None = None) -> tuple[np.ndarray, float]:
    """The input-channel scales (and their alpha) whose rounded linears best reproduce x @ W.T."""
    rng = np.random.default_rng(seed)
    sampled = [w[np.sort(rng.choice(w.shape[0], min(w.shape[0], SAMPLE_OUTPUTS), replace=False))] for w in weights]
    exact = [x @ w.T for w in sampled]
    stat = np.maximum(mean_abs, mean_abs.max() * 1e-5).astype(np.float64)
    best, best_alpha, best_err = np.ones(len(mean_abs), np.float32), 0.0, np.inf
    for alpha in alphas or ALPHAS:  # the module's grid, read at call time
        s = stat**alpha
        s = (s / np.sqrt(s.max() * s.min())).astype(np.float32)
        err = sum(float((((x / s) @ fake_quantize(w * s, bits, block_size, symmetric).T - y) ** 2).sum())
                  for w, y in zip(sampled, exact))
        if err < best_err:
            best, best_alpha, best_err = s, alpha, err
    return best, best_alpha


class CalibrationForward:
    """The float32 model over the calibration windows, one layer at a time (what the graph computes)."""

    def __init__(self, arch, table: np.ndarray, windows: list[list[int]]):
        """`table`: the embedding table (vocab, hidden)."""
        self.arch = arch
        ids = np.array(windows, dtype=np.int64)  # (windows, L)
        self.h = table[ids] * (arch.multiplier("embedding") or 1.0)  # (windows, L, hidden)
        length = ids.shape[1]
        self.cos, self.sin = rotary_for_length(arch.rotary_dim, length, arch.rope_theta, arch.rope_scaling)
        pos = np.arange(length)
        allowed = pos[None, :] <= pos[:, None]
        self.masks = {}  # window -> (L, L) additive mask
        for window in {arch.layer_window(i) for i in range(arch.num_layers)}:
            visible = allowed & (pos[None, :] > pos[:, None] - window) if window else allowed
            self.masks[window] = np.where(visible, 0.0, -np.inf).astype(np.float32)
        self.act = ACTIVATIONS[arch.activation].numpy

    def _norm(self, x: np.ndarray, gain: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.arch.rms_norm_eps) * gain

    def _rotate(self, x: np.ndarray) -> np.ndarray:  # (..., L, heads, hd), half-split rotary of the first dims
        dim = self.arch.rotary_dim
        half = dim // 2
        cos, sin = self.cos[:, None, :], self.sin[:, None, :]
        x1, x2 = x[..., :half], x[..., half:dim]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, x[..., dim:]], axis=-1)

    def layer(self, w: dict[str, np.ndarray | None], index: int) -> dict[str, np.ndarray]:
        """Advance the hidden states through layer `index` of float weights `w` (by role); return each group's
        input activations, (tokens, channels)."""
        a, h = self.arch, self.h
        nw, length, _ = h.shape
        nh, kv, hd = a.num_heads, a.num_kv_heads, a.head_dim
        x = self._norm(h, w["input_norm"])
        q, k, v = (x @ w[r].T + _bias(w, f"{r}_bias") for r in "qkv")
        q, k = q.reshape(nw, length, nh, hd), k.reshape(nw, length, kv, hd)
        if a.qk_norm:  # per head, before rotary
            q, k = self._norm(q, w["q_norm"]), self._norm(k, w["k_norm"])
        if a.layer_rope(index):  # NoPE layers (SmolLM3) do not rotate
            q, k = self._rotate(q), self._rotate(k)
        q, k = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3)  # (nw, heads, L, hd)
        v = v.reshape(nw, length, kv, hd).transpose(0, 2, 1, 3)
        group = nh // kv
        q = q.reshape(nw, kv, group * length, hd)  # the query heads sharing one kv head, stacked
        mask = self.masks[a.layer_window(index)]
        scale = a.multiplier("attention") or float(hd) ** -0.5
        scores = (q @ k.transpose(0, 1, 3, 2) * scale).reshape(nw, kv, group, length, length) + mask
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = (scores / scores.sum(-1, keepdims=True)).reshape(nw, kv, group * length, length)
        attn = (probs @ v).reshape(nw, nh, length, hd).transpose(0, 2, 1, 3).reshape(nw, length, nh * hd)
        r = np.float32(a.multiplier("residual") or 1.0)
        h = h + (attn @ w["o"].T + _bias(w, "o_bias")) * r
        x2 = self._norm(h, w["post_norm"])
        gate, up = x2 @ w["gate"].T + _bias(w, "gate_bias"), x2 @ w["up"].T + _bias(w, "up_bias")
        prod = self.act(gate) * up
        self.h = h + (prod @ w["down"].T + _bias(w, "down_bias")) * r  # float32 throughout (numpy scalars would promote to float64)
        return {"attn": x.reshape(nw * length, -1), "mlp": x2.reshape(nw * length, -1),
                "down": prod.reshape(nw * length, -1), "o": attn.reshape(nw * length, -1)}


class AwqReader:
    """A SafetensorsReader whose layer weights come out scaled, their producers absorbing the inverse.

    The first request for a tensor of layer i runs layer i of the calibration forward on the float
    weights and chooses that layer's scales; the builder asks for layers in order, so the forward advances
    with it. The forward starts from the embedding table the builder reads first, not a second read."""

    def __init__(self, reader, arch, windows: list[list[int]], fmt, seed: int = 0, moments: bool = False,
                 alphas: tuple[float, ...] | None = None):
        self.reader, self.arch, self.fmt, self.seed = reader, arch, fmt, seed
        self.keep_moments, self.alpha_grid = moments, alphas
        self.layer_moments: dict[str, np.ndarray] = {}  # the latest layer's X^T X per linear input, scaled
        self.windows = windows
        self.forward: CalibrationForward | None = None
        self.layer_of = {arch.tensor(role, i): i for i in range(arch.num_layers) for role in LAYER_ROLES
                         if role in arch.tensor_names}
        self.done = -1
        self.current: dict[str, np.ndarray] = {}  # the scaled tensors of the latest layer, by name
        self.alphas: dict[tuple[str, int], float] = {}
        self.rng = np.random.default_rng(seed)

    def __contains__(self, name: str) -> bool:
        return name in self.reader

    def get(self, name: str) -> np.ndarray:
        layer = self.layer_of.get(name)
        if layer is None:
            tensor = self.reader.get(name)
            if self.forward is None and name == self.arch.tensor("embed"):
                self.forward = CalibrationForward(self.arch, tensor, self.windows)
            return tensor
        while self.done < layer:
            self._calibrate(self.done + 1)
        if layer < self.done:
            raise ExportError(f"awq: {name} (layer {layer}) was asked for after layer {self.done}; the calibration "
                              "forward only moves forward (a builder bug, please report it)")
        return self.current[name] if name in self.current else self.reader.get(name)

    def _calibrate(self, layer: int) -> None:
        a, fmt = self.arch, self.fmt
        if self.forward is None:  # a builder that asked for a layer before the embedding
            self.forward = CalibrationForward(a, self.reader.get(a.tensor("embed")), self.windows)
        w = {role: self.reader.get(a.tensor(role, layer)) if a.uses(role) else None for role in LAYER_ROLES}
        acts = self.forward.layer(w, layer)
        scaled = {role: w[role] for role in LAYER_ROLES}
        for group in GROUPS:
            x = acts[group.name]
            rows = x[np.sort(self.rng.choice(len(x), min(len(x), SAMPLE_ROWS), replace=False))]
            s, alpha = best_scales(rows, np.abs(x).mean(0), [w[r] for r in group.linears], fmt.bits,
                                   fmt.block(group.mlp), fmt.symmetric, seed=self.seed + layer, alphas=self.alpha_grid)
            self.alphas[(group.name, layer)] = alpha
            if self.keep_moments:  # the scaled linears see x / s: their moments are H / (s s^T)
                xs = x / s
                self.layer_moments[group.name] = xs.T @ xs
            for role in group.linears:
                scaled[role] = scaled[role] * s
            fold = scaled[group.fold]
            scaled[group.fold] = fold / s[:, None] if group.fold_rows else fold / s
            if group.fold_rows and scaled.get(f"{group.fold}_bias") is not None:  # the output rows' bias too
                scaled[f"{group.fold}_bias"] = scaled[f"{group.fold}_bias"] / s
        if self.keep_moments:
            self.layer_moments["o"] = acts["o"].T @ acts["o"]
        self.current = {a.tensor(role, layer): t for role, t in scaled.items() if t is not None}
        self.done = layer

    def moments(self, name: str) -> np.ndarray | None:
        """X^T X (K, K) of the calibration inputs of builder linear `name` in the latest calibrated layer (in the
        scaled weights' coordinates; the lm_head's once the last layer is done), or None (not kept)."""
        from edgelm.export.native.precision import role_of

        role, layer = role_of(name)
        if role == "lm_head":
            return self.head_moments()
        group = MOMENT_GROUPS.get(role)
        if not self.keep_moments or group is None or layer != self.done:
            return None
        return self.layer_moments.get(group)

    def head_moments(self) -> np.ndarray | None:
        """X^T X of the lm_head's inputs (the final norm of the last layer's output), once every layer is
        calibrated; None before that or when moments are not kept."""
        if not self.keep_moments or self.forward is None or self.done != self.arch.num_layers - 1:
            return None
        if "head" not in self.layer_moments:
            h = self.forward.h
            x = self.forward._norm(h, self.reader.get(self.arch.tensor("final_norm"))).reshape(-1, h.shape[-1])
            self.layer_moments["head"] = x.T @ x
        return self.layer_moments["head"]

    @property
    def mean_alpha(self) -> float:
        return float(np.mean(list(self.alphas.values()))) if self.alphas else 0.0


# builder linear role -> the calibration input it reads
MOMENT_GROUPS = {"qkv": "attn", "o": "o", "gate_up": "mlp", "down": "down"}


def awq_reader(source, reader, fmt, samples: int, seed: int = 0, moments: bool = False,
               alphas: tuple[float, ...] | None = None) -> AwqReader:
    from edgelm.export.calibration import calibration_windows

    windows = calibration_windows(source, samples, WINDOW, wide=moments)  # gptq needs many distinct tokens
    return AwqReader(reader, source.arch, windows, fmt, seed, moments, alphas)
