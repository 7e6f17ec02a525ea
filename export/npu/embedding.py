"""The NPU package's embedding table: int8 with one float32 scale per group of GROUP values of a row.

Row r of the model's (vocab, hidden) table is stored group by group as round(x / scale) with scale =
max|group| / 127 (`embedding_scales.npy` is (vocab, hidden / GROUP)). One scale per whole row measured
worse: SmolLM2 a16w8 on the HTP simulator, teacher-forced top-1 vs the fp32 package 0.781 with a scale per
row, 0.852 with the exact float rows (the rows' few large channels set the step for all the others).
Written in slices of rows, so a 152k x 1536 table never needs a second float copy in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROWS_PER_SLICE = 8192
GROUP = 64  # values of a row sharing one scale (a hidden size that is not a multiple: one group per row)


def write_embedding_table(table: np.ndarray, rows_path: Path, scales_path: Path, exact: bool = False,
                          scale: float = 1.0) -> None:
    """Write `table` (vocab, hidden) times `scale` (the model's embedding scale: Granite's multiplier, Gemma's
    sqrt(hidden)) as int8 (`rows_path`, .npy) and float32 group scales (`scales_path`, (vocab, hidden / group));
    `exact`: float32 rows and unit scales (the fp32 parity tests of the graphs)."""
    vocab, hidden = table.shape
    group = GROUP if hidden % GROUP == 0 else hidden
    rows = np.lib.format.open_memmap(rows_path, mode="w+", dtype=np.float32 if exact else np.int8,
                                     shape=(vocab, hidden))
    scales = np.ones((vocab, hidden // group), dtype=np.float32)
    for start in range(0, vocab, ROWS_PER_SLICE):
        part = np.asarray(table[start:start + ROWS_PER_SLICE], dtype=np.float32)
        if scale != 1.0:
            part = part * np.float32(scale)
        if exact:
            rows[start:start + len(part)] = part
            continue
        groups = part.reshape(len(part), -1, group)
        step = np.abs(groups).max(axis=2) / 127.0  # (rows, hidden / group)
        step[step == 0] = 1.0
        codes = np.clip(np.rint(groups / step[..., None]), -127, 127).astype(np.int8)
        rows[start:start + len(part)] = codes.reshape(len(part), hidden)
        scales[start:start + len(part)] = step
    rows.flush()
    del rows
    np.save(scales_path, scales)
