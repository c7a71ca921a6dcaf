#!/usr/bin/env bash
# Issue 7 on the device machine, in two calls (each under the 10-minute limit of one command):
#   bash bench/gpu-bench.sh build-decode   # addon build + CUDA tests (native/gpu-run.sh), then bench:decode
#   bash bench/gpu-bench.sh peer-prefill-train   # torch peer, bench:prefill, bench:train (reuses the built addon)
# Carry: .gpu native/build/carry dist. Logs and JSON under $OUT; each step has its own time limit so a
# slow one cannot eat the others' time.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
phase=${1:?phase}
source .gpu/prelude.sh
[ -d node_modules/commander ] || { tar -xJf native/build/carry/nm.tar.xz && tar -xJf native/build/carry/rt.tar.xz; }
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
case "$phase" in
build-decode)
  if [ "${SKIP_TESTS:-0}" = 1 ] && [ -f native/build/Release/m1cuda.node ]; then echo "using the carried addon, tests skipped"
  else
    bash native/gpu-run.sh > "$OUT/gpu-run.txt" 2>&1; echo "native/gpu-run.sh rc=$?"
    grep -E "build:|Tests |Test Files|FAIL" "$OUT/gpu-run.txt" | head -12
  fi
  mkdir -p "$OUT/addon" && cp native/build/Release/m1cuda.node "$OUT/addon/" 2>/dev/null
  el "built + tested"
  timeout ${DECODE_S:-240} node dist/bench/decode.js --zero-weights --backend cuda --steps 6 --budget-s ${DECODE_BUDGET_S:-100} \
    --batches 8,16,32,64,128,256,512 --contexts 256,1024,2048,4096 --lengths 4096,8192,16384,20480 > "$OUT/decode.txt" 2> "$OUT/decode.err"
  echo "decode rc=$?"; cat "$OUT/decode.txt"; tail -3 "$OUT/decode.err"
  cp bench/results/decode-cuda-*.json "$OUT/" 2>/dev/null
  el "decode done"
  if [ -n "${SWEEP:-}" ]; then
    bash bench/demo-sweep.sh "$SWEEP" /tmp/sweep "${SWEEP_SEEDS:-0,1}" 12 --eval-problems 300 > "$OUT/sweep.txt" 2>&1
    mkdir -p "$OUT/sweep"; for d in /tmp/sweep/*/; do cp "$d/summary.json" "$OUT/sweep/$(basename "$d").json" 2>/dev/null; done
    cat "$OUT/sweep.txt"; el "sweep done"
  fi
  ;;
peer-prefill-train)
  node -e "import('./dist/src/model/presets.js').then((m) => { const fs = require('node:fs'); fs.mkdirSync('/tmp/llama3b-config', { recursive: true }); fs.writeFileSync('/tmp/llama3b-config/config.json', JSON.stringify(m.findPreset('llama', 'llama-3.2-3b').config)); })"
  timeout ${TORCH_S:-80} python3 bench/torch_decode.py --config /tmp/llama3b-config/config.json --batches 8,64,128 --contexts 256,1024 --steps 6 --out "$OUT/torch-decode.json" > "$OUT/torch.txt" 2>&1
  echo "torch rc=$?"; tail -12 "$OUT/torch.txt"
  el "torch peer done"
  timeout ${PREFILL_S:-120} node dist/bench/prefill.js --backend cuda --lengths 8192,16384,32768 --repeats 2 > "$OUT/prefill.txt" 2> "$OUT/prefill.err"
  echo "prefill rc=$?"; cat "$OUT/prefill.txt"; tail -3 "$OUT/prefill.err"
  el "prefill done"
  timeout ${TRAIN_S:-150} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases > "$OUT/train.txt" 2> "$OUT/train.err"
  echo "train rc=$?"; cat "$OUT/train.txt"; tail -5 "$OUT/train.err"
  cp bench/results/prefill-cuda-*.json bench/results/train-cuda-*.json "$OUT/" 2>/dev/null
  el "train done"
  ;;
*) echo "unknown phase $phase"; exit 2;;
esac
