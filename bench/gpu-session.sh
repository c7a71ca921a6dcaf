#!/usr/bin/env bash
# One device-machine session for issues 6 and 7: build the addon (or reuse a carried one), CUDA tests,
# `m1 init` of the 3B shapes, logprobs vs PyTorch, decode benchmark vs PyTorch. Logs and JSON in $OUT.
# Carry: .gpu native/build/carry dist (and native/build/Release when a built addon is reused).
set -u
source .gpu/prelude.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LOG="$OUT/session.log"
exec > >(tee -a "$LOG") 2>&1
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
tar -xJf native/build/carry/nm.tar.xz && tar -xJf native/build/carry/rt.tar.xz
el "deps unpacked"
# the 3B inits are single-threaded JS: start them first, in the background, while the addon builds
( node bin/m1 init --arch llama --preset llama-3.2-3b --seed 0 --out /tmp/llama3b > /tmp/init-llama.log 2>&1; echo "init llama rc=$?" >> /tmp/init-llama.log ) &
pid_llama=$!
( node bin/m1 init --arch m1 --preset m1-3b --seed 0 --out /tmp/m13b > /tmp/init-m1.log 2>&1; echo "init m1 rc=$?" >> /tmp/init-m1.log ) &
pid_m1=$!
if [ ! -f native/build/Release/m1cuda.node ] || [ "${REBUILD:-0}" = 1 ]; then
  mkdir -p /tmp/npm && tar -C /tmp/npm -xJf native/build/carry/npm.tar.xz
  for d in /tmp/node/include/node /tmp/node; do cp -n native/build/carry/common.gypi native/build/carry/config.gypi $d/; done
  (cd native && node /tmp/npm/npm/bin/npm-cli.js exec --offline -- node-gyp rebuild -j max > "$OUT/build.log" 2>&1 || node /tmp/npm/npm/node_modules/node-gyp/bin/node-gyp.js rebuild -j max >> "$OUT/build.log" 2>&1)
  tail -3 "$OUT/build.log"
fi
cp native/build/Release/m1cuda.node "$OUT/" 2>/dev/null
el "addon ready: $(ls -la native/build/Release/m1cuda.node 2>&1)"
node bin/m1 doctor
node node_modules/vitest/vitest.mjs run test/cuda > "$OUT/test-cuda.log" 2>&1; echo "test:cuda rc=$?"
grep -E "Tests |Test Files|FAIL|×" "$OUT/test-cuda.log" | head -20
el "cuda tests done"
# wait for the two inits by pid: a bare `wait` would also wait for the tee behind `exec > >(…)`
wait $pid_llama $pid_m1
cat /tmp/init-llama.log /tmp/init-m1.log
el "3B models initialised"
IDS=128000,791,4320,315,220,17,10,17,374,220,19,13,6914,596,1781,3094,555,3094
for m in llama3b m13b; do
  node bin/m1 logprobs --backend cuda --model /tmp/$m --ids $IDS --json > /tmp/ours-$m.json 2> /tmp/lp-$m.err; echo "m1 logprobs $m rc=$?"; head -c 300 /tmp/lp-$m.err
  python3 test/gpu/torch_reference.py --model /tmp/$m --ids $IDS --ours /tmp/ours-$m.json --dtype float32 | tee -a "$OUT/numerics.jsonl"
done
el "numerics done"
node dist/bench/decode.js --zero-weights --backend cuda ${DECODE_ARGS:-} 2>&1 | tee "$OUT/decode.txt"
cp bench/results/decode-cuda-*.json "$OUT/" 2>/dev/null
el "decode bench done"
python3 bench/torch_decode.py --config /tmp/llama3b/config.json ${TORCH_ARGS:-} --out "$OUT/torch-decode.json" 2>&1 | tail -12
el "torch peer done"
