#!/usr/bin/env bash
# Reproduce docs/quality-per-byte.json: SmolLM2-135M-Instruct in every edgelm format and llama.cpp's Q4_0,
# Q4_K_M and Q8_0, KL divergence scored as llama-perplexity scores it, decode speed interleaved with llama-bench.
#   LLAMA_BIN=path/to/llama.cpp/build/bin bash bench/scripts/quality_per_byte.sh [WORKDIR]
# llama.cpp: the copy vendored in the llama-cpp-python 0.3.36 sdist, built with
#   cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF
#   cmake --build build --target llama-bench llama-quantize llama-perplexity
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:-build/quality}
: "${LLAMA_BIN:?set LLAMA_BIN to the build/bin folder of llama.cpp}"
E=.venv/bin/edgelm
mkdir -p "$W"
GGUF=$(.venv/bin/python -c "from edgelm.export.gguf import smollm2_gguf; print(smollm2_gguf())")
.venv/bin/python -c "from edgelm.export.gguf import gguf_to_hf; gguf_to_hf('$GGUF', '$W/hf')"
for q in fp32 int4 int4-gptq-compact int4-gptq int8 int8-gptq; do
  $E export "$W/hf" -o "$W/smol-$q" --quant "$q" -q --force
done
# edgelm's rows: the dequantized GGUF (fp32 package) is the reference
$E eval --kld "$W/smol-fp32" "$W"/smol-int4 "$W"/smol-int4-gptq-compact "$W"/smol-int4-gptq "$W"/smol-int8 \
  "$W"/smol-int8-gptq -q | tee "$W/kld-edgelm.txt"
# llama.cpp's rows, scored by llama-perplexity itself on the same text against its own F32 file
.venv/bin/python -c "from edgelm.bench.kld import license_text; open('$W/licenses.txt', 'w').write(license_text())"
"$LLAMA_BIN/llama-quantize" --allow-requantize "$GGUF" "$W/F32.gguf" F32
"$LLAMA_BIN/llama-perplexity" -m "$W/F32.gguf" -f "$W/licenses.txt" -c 256 -t 2 --kl-divergence-base "$W/base.kld"
for t in Q4_0 Q4_K_M Q8_0; do
  "$LLAMA_BIN/llama-quantize" "$W/F32.gguf" "$W/$t.gguf" "$t"
  "$LLAMA_BIN/llama-perplexity" -m "$W/$t.gguf" -c 256 -t 2 --kl-divergence-base "$W/base.kld" --kl-divergence \
    | grep -E "Mean +KLD|Same top" | tee "$W/kld-$t.txt"
done
# speed, each format beside the llama.cpp format of its size class, interleaved rounds
for pair in "int4 Q4_0" "int4-gptq-compact Q4_0" "int4-gptq Q4_K_M" "int8-gptq Q8_0"; do
  set -- $pair
  $E bench "$W/smol-$1" --vs llamacpp --gguf "$W/$2.gguf" --llama-bench "$LLAMA_BIN" -p 128 -n 128 -t 2 -r 5 -q \
    --json "$W/bench-$1-$2.json"
done
.venv/bin/python bench/scripts/quality_per_byte_plot.py
