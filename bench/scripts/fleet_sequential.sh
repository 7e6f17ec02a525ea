#!/usr/bin/env bash
# examples/fleet.toml's 12 rows done by hand, one command after another (the baseline for `edgelm plan`):
# 6 exports, then for each package and target an eval (perplexity, window 256) and a bench (pp128/tg128, 3 rounds).
#   bench/scripts/fleet_sequential.sh build/fleet-seq
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-build/fleet-seq}
mkdir -p "$OUT"
start=$(date +%s.%N)
for src in smollm2-135m qwen2.5-0.5b; do
  for q in int4 int8 fp32; do
    .venv/bin/edgelm export --synthetic "$src" --quant "$q" -o "$OUT/$src-$q" -q --force
    for t in 2 1; do
      .venv/bin/edgelm eval "$OUT/$src-$q" --window 256 -q > "$OUT/$src-$q-t$t.eval"
      .venv/bin/edgelm bench "$OUT/$src-$q" -p 128 -n 128 -r 3 -t "$t" -q --json "$OUT/$src-$q-t$t.json" > /dev/null
    done
  done
done
end=$(date +%s.%N)
echo "sequential: $(echo "$end - $start" | bc) s"
