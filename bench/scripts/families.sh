#!/usr/bin/env bash
# One interleaved run per family at its published shape (random weights), int4, pp128/tg128, 2 threads:
# edgelm's native package against onnxruntime-genai's builder + runtime for the same HF folder.
#   GENAI_PY=/path/to/genai-venv/bin/python bench/scripts/families.sh qwen3-0.6b gemma-3-1b ...
# GENAI_PY: a venv with onnxruntime-genai, onnx-ir and transformers >= 5 (its builder needs them); onnxruntime-genai must
# also be importable by edgelm's own venv (the bench's genai peer runs it). Writes build/families/ (HF folders,
# packages, /usr/bin/time -v logs) and docs/bench-family-PRESET.json (the bench rows). HF_DTYPE=bfloat16 saves the
# HF folders in bf16 (as published checkpoints are; genai's builder then fits 3-4B models in 24 GiB).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${GENAI_PY:?set GENAI_PY to a python with onnxruntime-genai and transformers >= 5}"
B=build/families
ROUNDS=${ROUNDS:-3}
mkdir -p "$B/hf" docs
for p in "$@"; do
  hf="$B/hf/$p"
  [ -f "$hf/config.json" ] || .venv/bin/python -c \
    "from edgelm.export.synthetic import build_synthetic; build_synthetic('$p', '$hf', dtype='${HF_DTYPE:-float32}')"
  # each step once (a rerun picks up where one stopped: delete build/families/PRESET-* to redo it)
  [ -f "$B/$p-int4/edgelm.json" ] || \
    /usr/bin/time -v .venv/bin/edgelm export "$hf" -o "$B/$p-int4" -q --force 2> "$B/$p-export.time"
  if [ ! -f "$B/$p-genai/genai_config.json" ]; then
    /usr/bin/time -v "$GENAI_PY" bench/scripts/genai_build.py -i "$hf" -o "$B/$p-genai" -p int4 -e cpu \
        -c "$B/cache-$p" > "$B/$p-genai.log" 2> "$B/$p-genai.time"
    rm -rf "$B/cache-$p"
  fi
  .venv/bin/edgelm bench "$B/$p-int4" -p 128 -n 128 -t 2 -r "$ROUNDS" --vs genai --genai-model "$B/$p-genai" -q \
      --json "docs/bench-family-$p.json" > "$B/$p-bench.md"
  for t in export genai; do
    printf '%s %s: %s, peak RSS %s KiB\n' "$p" "$t" "$(grep 'Elapsed (wall' "$B/$p-$t.time" | sed 's/.*: //')" \
      "$(grep 'Maximum resident' "$B/$p-$t.time" | sed 's/.*: //')"
  done
  du -sh "$B/$p-int4" "$B/$p-genai"
  cat "$B/$p-bench.md"
done
