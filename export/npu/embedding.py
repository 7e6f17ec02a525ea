"""The NPU package's embedding table: int8 rows with one float32 scale per row, read by the runtime.

Row r of the model's (vocab, hidden) table is stored as round(row / scale[r]) with scale[r] = max|row| / 127,
so every token's vector keeps 8 bits of its own range (a per-tensor 16-bit table in the graph would cost
twice the bytes and share one range across the vocabulary). Written in slices of rows, so a 152k x 1536
table never needs a second float copy in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROWS_PER_SLICE = 8192


def write_embedding_table(table: np.ndarray, rows_path: Path, scales_path: Path, exact: bool = False) -> None:
    """Write `table` (vocab, hidden) as int8 rows (`rows_path`, .npy) and float32 scales (`scales_path`);
    `exact`: float32 rows and unit scales (the fp32 parity tests of the graphs)."""
    vocab, hidden = table.shape
    rows = np.lib.format.open_memmap(rows_path, mode="w+", dtype=np.float32 if exact else np.int8,
                                     shape=(vocab, hidden))
    scales = np.ones(vocab, dtype=np.float32)
    for start in range(0, vocab, ROWS_PER_SLICE):
        part = np.asarray(table[start:start + ROWS_PER_SLICE], dtype=np.float32)
        if exact:
            rows[start:start + len(part)] = part
            continue
        scale = np.abs(part).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        rows[start:start + len(part)] = np.clip(np.rint(part / scale[:, None]), -127, 127).astype(np.int8)
        scales[start:start + len(part)] = scale
    rows.flush()
    del rows
    np.save(scales_path, scales)
