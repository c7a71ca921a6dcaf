#!/usr/bin/env bash
# Issue 7 on the device machine, in two calls (each under the 10-minute limit of one command):
#   bash bench/gpu-bench.sh build-decode   # addon build + CUDA tests (native/gpu-run.sh), then bench:decode
#   bash bench/gpu-bench.sh peer-prefill-train   # torch peer, bench:prefill, bench:train (reuses the built addon)
#   bash bench/gpu-bench.sh graphs   # quick sm_90a-only build (parallel nvcc), all CUDA tests, decode eager vs graphs
#   bash bench/gpu-bench.sh train-profile   # quick build, CUDA tests, bench:train per --matmul-precision (PRECISIONS), one
#                                           # profiled step, a profiled prefill; PREFILL_FULL=1 / DECODE=1 add sweeps
#   bash bench/gpu-bench.sh final1; bash bench/gpu-bench.sh final2   # the record in two calls: build, CUDA tests, scan,
#                                   # train (phases + profile), prefill, sampled decode; then the decode sweep and the torch
#                                   # peer eager and compiled (PEER=0 skips it); everything in results.tgz
#   bash bench/gpu-bench.sh ncu | round | train-recompute | scan   # sixth session: kernel times under Nsight Compute,
#                                   # decode round, training per --recompute, the scan alone (+ ncu of its backward)
#   bash bench/gpu-bench.sh shapes14 | sass14 | final14 | final14b | record14 | check14   # fourteenth session: the decode step's kernels
#                                   # under Nsight Compute grouped by grid (product shape) with their DRAM rate; the scan
#                                   # backward's SASS and Nsight Compute sections; the record (tests, scan, training, profile,
#                                   # prefill); the final code (tests, scan, training with / without matmulPair, decode);
#                                   # the final code's figures with JSON; tests + bench:scan after the review. The A/B phases `pf14` (L2 prefetch, M1_PREFETCH_*),
#                                   # `wide14` (M1_MATMUL_TUNE=wide), `scanab14` (M1_SCAN_BWD), `fwd14` and `train14` are in git history
#   bash bench/gpu-bench.sh dev13 | conv13 | exp13 | ncu13 | final13 | pair13 | final13b | check13 | att13 | check13b | review13   # thirteenth session: the training step with bf16 activations
#                                   # kept for the products and the one-pass conv (tests, training twice, profile, prefill,
#                                   # the scan + ncu of its kernels); the conv kernels under ncu; the scan's ex2 decays; ncu of
#                                   # the scan's kernels alone; the record (+ the training step in a second process); decode
#                                   # with and without matmulPair (M1_MATMUL_PAIR=0), alternating; the record on the final code;
#                                   # tests + attention + training after the review; bench:attention's two kernels, alternating;
#                                   # tests + bench:scan after the conv's segment-start loads moved; tests + decode + training
#                                   # after the review
#   bash bench/gpu-bench.sh dev12 | ncu-attn | sass-attn | train12 | ncu-attn-bwd | check12 | final12 | check12b | final12b   # twelfth
#                                   # session: the wgmma attention forward (tests, bench:attention A/B, training, prefill);
#                                   # Nsight Compute on it (full set, stall reasons, pipes); its SASS; the training step
#                                   # and ncu of the attention backward; tests + training; the record (PEER=1: torch.compile);
#                                   # tests + attention + training in three processes; the same on the final code. The `pp12` phase (ping-pong A/B,
#                                   # switch M1_ATTN_PINGPONG) is in git history
#   bash bench/gpu-bench.sh dev11 | weights11 | blocks11 | engine11 | data11 | ops11 | check11 | final11 | sweep11   # eleventh session: tests, the M1 decode step with f32 against bf16 SSM
#                                   # state (the engine under Nsight Systems where installed: it is not on the H200 machine);
#                                   # both models' decode with zero against random weights, then the engine at 3B; both
#                                   # models' decode with contiguous, interleaved and shuffled KV blocks; the engine's decode
#                                   # step split by --time-decode; the engine with zero / random weights and bench:decode with
#                                   # a zero / random KV cache; the engine's and bench:decode's steps op by op; tests + the
#                                   # engine after the pools' dtype fix; the record
#   bash bench/gpu-bench.sh dev10 | final10 | engine10 | engine10b   # tenth session: tests, a decode round and its
#                                   # kernels under Nsight Compute; the record (final9's steps + torch.compile at context
#                                   # 4096); the engine at 3B under node --cpu-prof (host self time by function); the engine
#                                   # without and with bench:generate's per-point warm-up. The `dev10b` /
#                                   # `dev10c` (skinny-product kernel, reverted), `dev10d` (Mamba step in shared memory
#                                   # against registers, switch M1_DECODE_STEP) and `dev10e` (its occupancy bound, switch
#                                   # M1_DECODE_OCC) phases are in git history
#   bash bench/gpu-bench.sh dev9 | dev9b … dev9f | final9   # ninth session: the 32-row attention forward, the head's kept
#                                   # logits, K-split matmul candidates, the scan A/Bs, the record in one call (final9), the scan checkpoints (dev9g)
#   bash bench/gpu-bench.sh dev8 | dev8d | ncu-decode-kernel | train8 | final8 | peer8 | tune8   # eighth session: decode kernel
#                                   # tables (ncu), a round with the matmul-timing A/B, Nsight Compute on one decode kernel
#                                   # (NCU_K, NCU_POINT), training, the record (final8, then final2 with PEER=0), our Llama
#                                   # shape beside torch.compile, the matmul timing's choices. The `dev8b`, `dev8c` and `step8` phases ran A/Bs under
#                                   # switches since removed (decode-attention tile rows and kernel, Mamba step kernel): git history
#   bash bench/gpu-bench.sh dev7 | ncu-kernel | decode7 | train7 | final7   # seventh session: tests + scan + ncu of the
#                                   # scan kernels + training + prefill (+ the engine at 3B); ncu --set full of one kernel
#                                   # (NCU_K); decode round + engine + decode ncu; training per --head-rows (HEAD_ROWS);
#                                   # final1 + the compiled peer at context 4096 (the `ab` phase of the scan backward's
#                                   # layout switches is in git history)
#   bash bench/gpu-bench.sh probe | dev | tests   # development rounds (see each phase's comment; the fifth session's
#                                   # `variants` phase, which compared decode-attention switches since removed, is in git history)
# quick_build uses the objects of `bash scripts/cuda-objects.sh` (compiled ahead, same nvcc) when they match the sources.
# Carry: .gpu native/build/carry dist. Logs and JSON under $OUT; each step has its own time limit so a
# slow one cannot eat the others' time.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
phase=${1:?phase}
source .gpu/prelude.sh
[ -d node_modules/commander ] || { tar -xJf native/build/carry/nm.tar.xz && tar -xJf native/build/carry/rt.tar.xz; }
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
quick_build() {
  # the addon for this GPU only (sm_90a), every file compiled at once: ~1 min instead of node-gyp's ~2
  C=${CUDA_HOME:-/usr/local/cuda}; R=native/build/Release; mkdir -p $R /tmp/m1o
  FL="-std=c++17 -O3 -fPIC -fexceptions -DNAPI_CPP_EXCEPTIONS -DNAPI_VERSION=8 -I/tmp/node/include/node -Inode_modules/node-addon-api -I$C/include"
  # objects compiled ahead by scripts/cuda-objects.sh (same nvcc) are used when they match the sources
  P=native/build/carry/obj; sha=$(cat native/src/*.cu native/src/*.h native/src/*.cuh | sha256sum | cut -d' ' -f1)
  if [ -f $P/SOURCES.sha ] && [ "$(cat $P/SOURCES.sha)" = "$sha" ]; then cp $P/*.o /tmp/m1o/; echo "cuda objects: prebuilt (sources match)"
  else for f in native/src/*.cu; do nvcc -std=c++17 -O3 -Xcompiler -fPIC -gencode arch=compute_90a,code=sm_90a -c "$f" -o "/tmp/m1o/$(basename "$f" .cu).o" & done; fi
  for f in addon matmul; do g++ $FL -c "native/src/$f.cpp" -o "/tmp/m1o/$f.o" & done
  wait
  g++ -shared -o $R/m1cuda.node /tmp/m1o/*.o -L$C/lib64 -Wl,-rpath,$C/lib64 -lcublasLt -lcublas -lcudart || { echo "build failed"; exit 1; }
  el "built (sm_90a only)"
}
cuda_tests() {  # the CUDA test files (TESTS: a subset, default all of test/cuda)
  timeout ${TEST_S:-200} node node_modules/vitest/vitest.mjs run ${TESTS:-test/cuda} > "$OUT/cuda-tests.txt" 2>&1; echo "cuda tests rc=$?"
  sed 's/\x1b\[[0-9;]*m//g' "$OUT/cuda-tests.txt" | grep -E "Tests |Test Files|FAIL|×|AssertionError|Error:" | head -30
  el "tests done"
}
peer() {  # peer eager|compile: PyTorch + transformers on the Llama-3.2-3B shape (bench/torch_decode.py)
  node -e "import('./dist/src/model/presets.js').then((m) => { const fs = require('node:fs'); fs.mkdirSync('/tmp/llama3b-config', { recursive: true }); fs.writeFileSync('/tmp/llama3b-config/config.json', JSON.stringify(m.findPreset('llama', 'llama-3.2-3b').config)); })"
  local flag=""; [ "$1" = compile ] && flag="--compile"
  timeout ${TORCH_S:-240} python3 bench/torch_decode.py --config /tmp/llama3b-config/config.json --batches ${PEER_BATCHES:-8,64,128,256} --contexts ${PEER_CONTEXTS:-256} \
    --steps 6 $flag --out "$OUT/torch-decode-$1.json" > "$OUT/torch-$1.txt" 2>&1
  echo "torch $1 rc=$?"; grep -E '^\{|Error' "$OUT/torch-$1.txt" | tail -12; el "torch peer $1 done"
}
engine3b() {  # the continuous-batching engine at 3B scale, both models, sampling on the device, decode graphs
  # GEN_WARMUP (tenth session on): an untimed run at each point's batch first, so its matmul timing is not in the figures
  timeout ${GEN_S:-200} node dist/bench/generate.js --backend cuda --presets llama-3.2-3b,m1-3b --random-weights --graphs --temperature 0.7 \
    --warmup ${GEN_WARMUP:-4} --batches ${GEN_BATCHES:-64,256} --batch-gen ${GEN_TOKENS:-512} --lengths ${GEN_LENGTHS:-1024} --length-batch ${GEN_LENGTH_BATCH:-128} \
    > "$OUT/generate-3b.txt" 2>&1
  echo "generate rc=$?"; tail -22 "$OUT/generate-3b.txt"; el "generate done"
}
decode_sweep() {  # decode_sweep NAME: the record's decode sweep (m1 + llama, graphs, Llama's waves where its cache does not fit)
  timeout ${DECODE_S:-250} node dist/bench/decode.js --zero-weights --backend cuda --steps 6 --budget-s ${DECODE_BUDGET_S:-80} --graphs --name decode-graphs-sweep-$1 \
    --batches 8,16,32,64,128,256,512 --contexts 256,1024,2048,4096 --lengths 4096,8192,16384,20480 > "$OUT/decode.txt" 2>&1
  echo "decode rc=$?"; grep -A 90 "^decode step" "$OUT/decode.txt" | grep -v "^ *m1-3b \|^llama" | head -40; el "decode done"
}
record() {  # record NAME: the record of a session — build, all CUDA tests, the scan alone, the training step (phases, then
  # a profiled step), prefill (medium), the decode sweep (m1 + llama, graphs, with Llama's waves where its cache does not
  # fit), the engine at 3B; results named *-NAME
  quick_build
  cuda_tests
  timeout 60 node dist/bench/scan.js --backend cuda --name scan-$1 > "$OUT/scan.txt" 2>&1; echo "scan rc=$?"; grep -E "^ *selective" "$OUT/scan.txt"
  timeout ${TRAIN_S:-100} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases --matmul-precision medium --name train-medium-$1 > "$OUT/train-medium.txt" 2>&1
  echo "train rc=$?"; grep -E "^ *m1-3b|^ *(teacher|student|head|optimizer) |activation rec" "$OUT/train-medium.txt"; el "train done"
  train_profile $1
  prefill_medium $1
  decode_sweep $1
  [ "${ENGINE:-1}" = 1 ] && engine3b
}
pack() {  # pack NAME: results.tgz with the logs, the *NAME* JSON and HTML and the newest engine JSON; only cuda-tests.txt and
  # decode.txt stay beside it (the device returns a limited number of files)
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt *.json 2>/dev/null) -C "$PWD" \
    $(ls bench/results/*$1*.json bench/results/*$1*.html $(ls -t bench/results/generate-cuda-*.json | head -1) 2>/dev/null)
  (cd "$OUT" && rm -f $(ls *.txt *.json 2>/dev/null | grep -v -E '^(cuda-tests|decode)\.txt$'))
}
attention_ab() {  # attention_ab NAME: bench:attention with the wgmma and the mma.sync forward (M1_ATTN_WGMMA=0), two rounds alternating
  for r in 1 2; do
    for w in 1 0; do
      M1_ATTN_WGMMA=$w timeout 60 node dist/bench/attention.js --backend cuda --name attention-wgmma$w-r$r-$1 > "$OUT/attention-wgmma$w-r$r.txt" 2>&1
      echo "attention wgmma=$w round $r rc=$?"; grep -E "^ *attention" "$OUT/attention-wgmma$w-r$r.txt"
    done
  done
}
train_step() {  # train_step NAME [LOG]: the training step (2 steps, phases) → $OUT/LOG.txt (default train-medium), JSON *-NAME
  local log="$OUT/${2:-train-medium}.txt"
  timeout ${TRAIN_S:-100} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases --matmul-precision medium --name train-medium-$1 > "$log" 2>&1
  echo "train rc=$?"; grep -E "^ *m1-3b|^ *(teacher|student|head|optimizer) " "$log"; el "train done"
}
train_profile() {  # train_profile NAME: one profiled training step (each op synced) → $OUT/train-profile.txt, JSON *-NAME
  timeout 100 node dist/bench/train.js --backend cuda --seq-len 8192 --steps 1 --profile --name train-profile-$1 > "$OUT/train-profile.txt" 2>&1
  echo "train profile rc=$?"; grep -A 30 "^profile" "$OUT/train-profile.txt"; el "train profile done"
}
prefill_medium() {  # prefill_medium NAME: bench:prefill at 8k / 16k / 32k, bf16 attention → $OUT/prefill-medium.txt, JSON *-NAME
  timeout ${PREFILL_S:-80} node dist/bench/prefill.js --backend cuda --lengths 8192,16384,32768 --repeats 2 --matmul-precision medium --name prefill-medium-$1 > "$OUT/prefill-medium.txt" 2>&1
  echo "prefill rc=$?"; sed -n '/^ *model/,/^$/p' "$OUT/prefill-medium.txt" | head -9; el "prefill done"
}
peer4096() {  # peer4096 NAME: torch.compile at context 4096 (PEER_BATCHES, default 8,64) → $OUT/torch-decode-compile-4096-NAME.json
  PEER_BATCHES=${PEER_BATCHES:-8,64} PEER_CONTEXTS=4096 TORCH_S=${TORCH_S:-200} peer compile
  mv "$OUT/torch-decode-compile.json" "$OUT/torch-decode-compile-4096-$1.json" 2>/dev/null
}
ncu_scan() {  # every kernel of bench:scan's calls under Nsight Compute: time, instructions, registers, occupancy, DRAM → $OUT/ncu-scan.csv
  timeout ${NCU_S:-150} ncu --clock-control none -k regex:${NCU_K:-scan} --launch-count ${NCU_LAUNCHES:-40} --csv --print-units base \
    --metrics gpu__time_duration.sum,smsp__inst_executed.sum,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed \
    node dist/bench/scan.js --backend cuda --repeats 1 > "$OUT/ncu-scan.csv" 2> "$OUT/ncu-scan.err"; echo "ncu rc=$?"
  python3 bench/ncu-table.py "$OUT/ncu-scan.csv" | head -45
}
figures() {  # figures NAME: bench:scan, the training step in two processes, a profiled step, prefill — JSON *-NAME(-a, -b)
  timeout 60 node dist/bench/scan.js --backend cuda --name scan-$1 > "$OUT/scan.txt" 2>&1; echo "scan rc=$?"; grep -E "^ *(selective|causal)" "$OUT/scan.txt"
  train_step $1-a train-medium-a
  train_step $1-b train-medium-b
  train_profile $1
  prefill_medium $1
}
decode_round() {  # decode with graphs, m1 + llama, at BATCHES × CONTEXTS (WEIGHTS: zero or random)
  timeout ${DECODE_S:-150} node dist/bench/decode.js --${WEIGHTS:-zero}-weights --backend cuda --steps 6 --graphs --name ${DECODE_NAME:-decode-graphs} \
    --batches ${BATCHES:-8,64,256,512} --length-batch 64 --lengths 0 --contexts ${CONTEXTS:-256,4096} ${DECODE_FLAGS:-} > "$OUT/decode-graphs.txt" 2>&1
  echo "decode graphs rc=$?"; sed -n '/^ *model/,/^$/p' "$OUT/decode-graphs.txt" | head -30; grep -iE "error" "$OUT/decode-graphs.txt" | head -5
  el "decode done"
}
ncu_decode() {  # ncu_decode "model:batch:context ...": every kernel of a few eager decode steps under Nsight Compute
  # (NCU_CACHE=none keeps L2 warm between kernels as in a real step; ncu's default, all, flushes it before each one)
  for pt in $1; do
    IFS=: read -r m b c <<< "$pt"
    timeout ${NCU_S:-150} ncu --clock-control none --cache-control ${NCU_CACHE:-all} --metrics ${NCU_METRICS:-gpu__time_duration.sum} --csv --print-units base \
      node dist/bench/decode.js --zero-weights --backend cuda --models $m --batches $b --contexts $c --lengths 0 --steps 2 --warmup-s 0 \
      > /tmp/ncu-$m-$b-$c.csv 2> /tmp/ncu-$m-$b-$c.err; echo "ncu $pt rc=$?"
    gzip -c /tmp/ncu-$m-$b-$c.csv > "$OUT/ncu-$m-$b-$c.csv.gz"
    python3 bench/ncu-summary.py /tmp/ncu-$m-$b-$c.csv --steps 2 --label "$m B=$b ctx=$c" --json "$OUT/ncu-$m-$b-$c.json" | head -${NCU_TOP:-40}
    el "ncu $pt done"
  done
}
case "$phase" in
build-decode)
  if [ "${SKIP_TESTS:-0}" = 1 ] && [ -f native/build/Release/m1cuda.node ]; then echo "using the carried addon, tests skipped"
  else
    bash native/gpu-run.sh > "$OUT/gpu-run.txt" 2>&1; echo "native/gpu-run.sh rc=$?"
    grep -E "build:|Tests |Test Files|FAIL" "$OUT/gpu-run.txt" | head -12
  fi
  [ -n "${KEEP_ADDON:-}" ] && mkdir -p "$OUT/addon" && cp native/build/Release/m1cuda.node "$OUT/addon/" 2>/dev/null
  el "built + tested"
  timeout ${DECODE_S:-240} node dist/bench/decode.js --zero-weights --backend cuda --steps 6 --budget-s ${DECODE_BUDGET_S:-100} --name ${DECODE_NAME:-decode} ${DECODE_FLAGS:-} \
    --batches 8,16,32,64,128,256,512 --contexts 256,1024,2048,4096 --lengths 4096,8192,16384,20480 > "$OUT/decode.txt" 2> "$OUT/decode.err"
  echo "decode rc=$?"; cat "$OUT/decode.txt"; tail -3 "$OUT/decode.err"
  cp bench/results/${DECODE_NAME:-decode}-cuda-2*.json "$OUT/" 2>/dev/null
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
graphs)
  quick_build
  cuda_tests
  for mode in eager graphs; do
    flag=""; [ $mode = graphs ] && flag="--graphs"
    timeout ${DECODE_S:-110} node dist/bench/decode.js --zero-weights --backend cuda --steps 6 $flag --name decode-$mode \
      --batches ${BATCHES:-8,64,512} --length-batch 64 --lengths 0 --contexts ${CONTEXTS:-256,4096} > "$OUT/decode-$mode.txt" 2> "$OUT/decode-$mode.err"
    echo "decode $mode rc=$?"; sed -n '1,/^$/p' "$OUT/decode-$mode.txt"; grep -iE "error|out of memory" "$OUT/decode-$mode.err" | head -5
    el "decode $mode done"
  done
  cp bench/results/decode-eager-cuda-*.json bench/results/decode-graphs-cuda-*.json "$OUT/" 2>/dev/null
  if [ -n "${PROFILE:-}" ]; then
    timeout 60 node dist/bench/decode.js --zero-weights --backend cuda --profile --models m1-3b --batches 512 --length-batch 512 --lengths 0 \
      --contexts 256 --steps 3 --name decode-profile > /dev/null 2> "$OUT/profile.err"; cp bench/results/decode-profile-cuda-2*.json "$OUT/"; echo "profile rc=$?"; grep -A 22 "^profile" "$OUT/profile.err"
  fi
  ;;
train-profile)
  # training and prefill, where the time goes: the weight-gradient precision, a per-op profile of one step
  quick_build
  [ "${SKIP_TESTS:-0}" = 1 ] || cuda_tests
  for p in ${PRECISIONS:-highest medium}; do
    timeout ${TRAIN_S:-120} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases --matmul-precision $p --name train-$p > "$OUT/train-$p.txt" 2>&1
    echo "train $p rc=$?"; grep -E "^ *m1-3b|^ *(teacher|student|head|optimizer)" "$OUT/train-$p.txt"
    el "train $p done"
  done
  timeout ${TRAIN_S:-120} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 1 --profile --name train-profile > "$OUT/train-profile.txt" 2>&1
  echo "train profile rc=$?"; grep -A 30 "^profile" "$OUT/train-profile.txt"
  el "train profile done"
  timeout ${PREFILL_S:-100} node dist/bench/prefill.js --backend cuda --lengths 8192 --repeats 2 --profile > "$OUT/prefill-profile.txt" 2>&1
  echo "prefill rc=$?"; grep -B2 -A 12 "^profile" "$OUT/prefill-profile.txt" | head -40; tail -5 "$OUT/prefill-profile.txt"
  if [ -n "${PREFILL_FULL:-}" ]; then
    for p in ${PREFILL_PRECISIONS:-highest medium}; do
      timeout ${PREFILL_S:-100} node dist/bench/prefill.js --backend cuda --lengths 8192,16384,32768 --repeats 2 --matmul-precision $p --name prefill-$p > "$OUT/prefill-$p.txt" 2>&1
      echo "prefill $p rc=$?"; tail -9 "$OUT/prefill-$p.txt"
    done
  fi
  if [ -n "${DECODE:-}" ]; then
    timeout ${DECODE_S:-150} node dist/bench/decode.js --zero-weights --backend cuda --steps 6 --graphs --name ${DECODE_NAME:-decode-graphs} \
      --batches ${BATCHES:-8,64,512} --length-batch 64 --lengths 0 --contexts ${CONTEXTS:-256,4096} > "$OUT/decode-graphs.txt" 2>&1
    echo "decode graphs rc=$?"; sed -n '/^ *model/,/^$/p' "$OUT/decode-graphs.txt" | head -30
  fi
  # the new result files in one archive (the device returns at most 8 files)
  tar czf "$OUT/results.tgz" $(ls bench/results/train-{highest,medium,profile}-cuda-2*.json bench/results/prefill-{highest,medium}-cuda-2*.json bench/results/decode-graphs-cuda-2*.json 2>/dev/null)
  el "prefill done"
  ;;
probe)
  # where the time goes now: decode per-op profile (batch 64 / 512), a profiled training step, the torch peer compiled
  quick_build
  [ "${SKIP_TESTS:-1}" = 1 ] || cuda_tests
  timeout 90 node dist/bench/decode.js --zero-weights --backend cuda --profile --models ${PROFILE_MODELS:-m1-3b} --batches 64,512 --length-batch 512 --lengths 0 \
    --contexts 256 --steps 3 --name decode-profile > /dev/null 2> "$OUT/decode-profile.txt"; echo "decode profile rc=$?"; grep -A 24 "^profile" "$OUT/decode-profile.txt"
  el "decode profile done"
  timeout ${TRAIN_S:-100} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 1 --profile --name train-profile > "$OUT/train-profile.txt" 2>&1
  echo "train profile rc=$?"; grep -A 30 "^profile" "$OUT/train-profile.txt"; el "train profile done"
  peer compile
  tar czf "$OUT/results.tgz" $(ls bench/results/decode-profile-cuda-2*.json bench/results/train-profile-cuda-2*.json 2>/dev/null)
  ;;
dev)
  # a development round: build, CUDA tests, training step (phases + profile), decode with graphs (m1 + llama)
  quick_build
  cuda_tests
  timeout ${TRAIN_S:-100} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases --matmul-precision medium --name train-medium > "$OUT/train-medium.txt" 2>&1
  echo "train rc=$?"; grep -E "^ *m1-3b|^ *(teacher|student|head|optimizer) " "$OUT/train-medium.txt"; el "train done"
  if [ -n "${TRAIN_PROFILE:-}" ]; then
    timeout 100 node dist/bench/train.js --backend cuda --seq-len 8192 --steps 1 --profile --name train-profile > "$OUT/train-profile.txt" 2>&1
    echo "train profile rc=$?"; grep -A 16 "^profile" "$OUT/train-profile.txt"; el "train profile done"
  fi
  decode_round
  ;;
ncu)
  # kernel by kernel: GPU time of every kernel of a few eager decode steps under Nsight Compute (one metric, clocks
  # left alone), grouped by kernel (bench/ncu-summary.py); NCU_POINTS="model:batch:context ..."
  quick_build
  ncu_decode "${NCU_POINTS:-m1-3b:64:256 m1-3b:512:256}"
  ;;
round)
  # a development round for decode: build, CUDA tests, decode with graphs (m1 + llama). (The sixth session's
  # decode-attention chunk knobs and Mamba-step tokens-per-warp variants, measured here and removed, are in git history.)
  quick_build
  [ "${SKIP_TESTS:-0}" = 1 ] || cuda_tests
  decode_round
  ;;
train-recompute)
  # the training step per --recompute (RECOMPUTES: on = every layer, auto = the fewest that fit, or a layer count)
  quick_build
  for rc in ${RECOMPUTES:-on auto 8}; do
    timeout ${TRAIN_S:-100} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases --matmul-precision medium --recompute $rc \
      --name train-r$rc > "$OUT/train-r$rc.txt" 2>&1
    echo "train --recompute $rc rc=$?"; grep -E "^ *m1-3b|^ *(teacher|student|head|optimizer) |activation|Error|error" "$OUT/train-r$rc.txt" | head -12
    el "train $rc done"
  done
  ;;
scan)
  # the selective scan alone at the training shape (bench/scan.ts), then Nsight Compute on its backward kernels
  quick_build
  timeout 60 node dist/bench/scan.js --backend cuda > "$OUT/scan.txt" 2>&1; echo "scan rc=$?"; cat "$OUT/scan.txt" | head -8
  timeout ${NCU_S:-200} ncu --clock-control none -k regex:selective_scan_bwd --launch-count ${NCU_LAUNCHES:-2} --set full \
    node dist/bench/scan.js --backend cuda --repeats 1 > "$OUT/ncu-scan-bwd.txt" 2>&1; echo "ncu rc=$?"
  grep -E "^  k_|^  void|Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Stall|Warp Cycles Per Issued|Block Limit|L2 Hit|L1/TEX Hit" "$OUT/ncu-scan-bwd.txt" | head -60
  el "scan done"
  ;;
dev7)
  # seventh session's development call: build, CUDA tests, the scan alone + Nsight Compute times of its kernels, the
  # training step, and the engine at 3B scale (bf16 KV cache, pool growth) with sampling on the device
  quick_build
  [ "${SKIP_TESTS:-0}" = 1 ] || cuda_tests
  timeout 60 node dist/bench/scan.js --backend cuda --name scan > "$OUT/scan.txt" 2>&1; echo "scan rc=$?"; sed -n 1,8p "$OUT/scan.txt"
  timeout ${NCU_S:-120} ncu --clock-control none --metrics gpu__time_duration.sum,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active \
    -k regex:scan node dist/bench/scan.js --backend cuda --repeats 1 > "$OUT/ncu-scan.txt" 2>&1; echo "ncu rc=$?"
  grep -E "k_[a-z_]+|gpu__time_duration|registers_per|warps_active" "$OUT/ncu-scan.txt" | sed -E 's/\(int, .*//' | head -60
  el "scan done"
  timeout ${TRAIN_S:-100} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases --matmul-precision medium --name train-medium > "$OUT/train-medium.txt" 2>&1
  echo "train rc=$?"; grep -E "^ *m1-3b|^ *(teacher|student|head|optimizer) |activation rec|MFU" "$OUT/train-medium.txt"; el "train done"
  if [ "${PROFILE:-1}" = 1 ]; then
    timeout 100 node dist/bench/train.js --backend cuda --seq-len 8192 --steps 1 --profile --name train-profile > "$OUT/train-profile.txt" 2>&1
    echo "train profile rc=$?"; grep -A 30 "^profile" "$OUT/train-profile.txt"; el "train profile done"
  fi
  if [ "${PREFILL:-1}" = 1 ]; then
    timeout ${PREFILL_S:-80} node dist/bench/prefill.js --backend cuda --lengths 8192,16384,32768 --repeats 2 --matmul-precision medium --name prefill-medium > "$OUT/prefill-medium.txt" 2>&1
    echo "prefill medium rc=$?"; sed -n '/^ *model/,/^$/p' "$OUT/prefill-medium.txt" | head -9; el "prefill done"
  fi
  if [ "${ENGINE:-1}" = 1 ]; then
    engine3b
  fi
  ;;
train7)
  # build, CUDA tests, the training step at --head-rows HEAD_ROWS (the first is the default), a profiled step
  quick_build
  [ "${SKIP_TESTS:-0}" = 1 ] || cuda_tests
  for hr in ${HEAD_ROWS:-1024 2048 4096}; do
    timeout ${TRAIN_S:-100} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases --matmul-precision medium --head-rows $hr \
      --name train-medium-hr$hr > "$OUT/train-hr$hr.txt" 2>&1
    echo "train --head-rows $hr rc=$?"; grep -E "^ *m1-3b|^ *(teacher|student|head|optimizer) |activation rec|Error|error" "$OUT/train-hr$hr.txt" | head -9
  done
  el "train done"
  timeout 100 node dist/bench/train.js --backend cuda --seq-len 8192 --steps 1 --profile --name train-profile > "$OUT/train-profile.txt" 2>&1
  echo "train profile rc=$?"; grep -A 24 "^profile" "$OUT/train-profile.txt"; el "train profile done"
  ;;
decode7)
  # seventh session: decode with graphs (m1 + llama) after the allocator change, the engine at 3B scale, then
  # every kernel of a few eager M1-3B decode steps under Nsight Compute (NCU_POINTS, as the ncu phase)
  quick_build
  decode_round
  engine3b
  ncu_decode "${NCU_POINTS:-m1-3b:64:256}"
  ;;
dev8)
  # eighth session: build (tests unless SKIP_TESTS=1), decode with graphs at BATCHES, then every kernel of a few
  # eager decode steps under Nsight Compute (NCU_POINTS), to set the kernels' sum against the graph's step time
  quick_build
  [ "${SKIP_TESTS:-0}" = 1 ] || cuda_tests
  decode_round
  ncu_decode "${NCU_POINTS:-m1-3b:64:256 m1-3b:512:256}"
  ;;
ncu-decode-kernel)
  # Nsight Compute, full set, on one launch of the kernels matching NCU_K during eager decode steps at NCU_POINT
  # (model:batch:context; L2 kept warm between kernels as in a real step)
  quick_build
  IFS=: read -r m b c <<< "${NCU_POINT:-m1-3b:512:4096}"
  timeout ${NCU_S:-200} ncu --clock-control none --cache-control none -k regex:${NCU_K:-decode_partial} --launch-skip ${NCU_SKIP:-12} \
    --launch-count 1 --set full node dist/bench/decode.js --zero-weights --backend cuda --models $m --batches $b --contexts $c \
    --lengths 0 --steps 2 --warmup-s 0 > "$OUT/ncu-decode-kernel.txt" 2>&1; echo "ncu rc=$?"
  grep -E "^  [a-z_ ]*k_|Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Executed Ipc|Issue Slots Busy|Warp Cycles Per Issued|Block Limit|L1/TEX Hit|L2 Hit|Stall|Dynamic Shared|Grid Size|Waves|No Eligible|Active Warps|Error" "$OUT/ncu-decode-kernel.txt" | head -70
  el "ncu done"
  ;;
dev8d)
  # eighth session: build, CUDA tests, decode with graphs (m1 + llama at BATCHES × CONTEXTS), decode again with the
  # cuBLASLt heuristic's first algorithm (M1_MATMUL_TUNE=0) for the timed-algorithm A/B, then the training step
  quick_build
  [ "${SKIP_TESTS:-0}" = 1 ] || cuda_tests
  decode_round
  M1_MATMUL_TUNE=0 timeout 100 node dist/bench/decode.js --zero-weights --backend cuda --steps 6 --graphs --name decode-notune \
    --batches 8,64,256,512 --length-batch 64 --lengths 0 --contexts 256 > "$OUT/decode-notune.txt" 2>&1
  echo "decode no tuning rc=$?"; sed -n '/^ *model/,/^$/p' "$OUT/decode-notune.txt" | head -12; el "decode no tuning done"
  timeout ${TRAIN_S:-100} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases --matmul-precision medium --name train-medium > "$OUT/train.txt" 2>&1
  echo "train rc=$?"; grep -E "^ *m1-3b|^ *(teacher|student|head|optimizer) |Error|error" "$OUT/train.txt" | head -9; el "train done"
  ;;
dev9)
  # ninth session: build, CUDA tests, the training step as before and with the head's logits kept over the whole
  # vocabulary, profiled steps with the 32-row attention forward and (M1_ATTN_FWD=16) the 16-row one, prefill
  quick_build
  [ "${SKIP_TESTS:-0}" = 1 ] || cuda_tests
  tr() {  # tr NAME [flags]: one training step bench, phases
    local n=$1; shift
    timeout ${TRAIN_S:-90} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases --matmul-precision medium --name $n "$@" > "$OUT/$n.txt" 2>&1
    echo "$n rc=$?"; grep -E "^ *m1-3b|^ *(teacher|student|head|optimizer) |Error|error" "$OUT/$n.txt" | head -9; el "$n done"
  }
  tr train-medium-ninth
  tr train-keep-ninth --head-keep-logits --head-vocab-chunk 131072
  for a in 32 16; do
    M1_ATTN_FWD=$a timeout 90 node dist/bench/train.js --backend cuda --seq-len 8192 --steps 1 --profile --head-keep-logits --head-vocab-chunk 131072 \
      --name train-profile-fwd$a-ninth > "$OUT/train-profile-fwd$a.txt" 2>&1
    echo "train profile fwd$a rc=$?"; grep -A 24 "^profile" "$OUT/train-profile-fwd$a.txt"; el "train profile fwd$a done"
  done
  timeout ${PREFILL_S:-80} node dist/bench/prefill.js --backend cuda --lengths 8192,16384,32768 --repeats 2 --matmul-precision medium --name prefill-medium-ninth > "$OUT/prefill-medium.txt" 2>&1
  echo "prefill rc=$?"; sed -n '/^ *model/,/^$/p' "$OUT/prefill-medium.txt" | head -12; el "prefill done"
  ;;
dev9b)
  # ninth session: build, CUDA tests, the scan alone, the training step (head logits kept) with the heuristic's
  # matmul algorithms and with every shape timed (M1_MATMUL_TUNE=all), a profiled step
  quick_build
  [ "${SKIP_TESTS:-0}" = 1 ] || cuda_tests
  timeout 60 node dist/bench/scan.js --backend cuda > "$OUT/scan.txt" 2>&1; echo "scan rc=$?"; tail -8 "$OUT/scan.txt"; el "scan done"
  for tune in heur all; do
    M1_MATMUL_TUNE=$([ $tune = all ] && echo all || echo 1) timeout ${TRAIN_S:-100} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases \
      --matmul-precision medium --head-keep-logits --head-vocab-chunk 131072 --name train-$tune-ninth > "$OUT/train-$tune.txt" 2>&1
    echo "train $tune rc=$?"; grep -E "^ *m1-3b|^ *(teacher|student|head|optimizer) |Error|error" "$OUT/train-$tune.txt" | head -9; el "train $tune done"
  done
  M1_MATMUL_TUNE=${PROFILE_TUNE:-1} timeout 90 node dist/bench/train.js --backend cuda --seq-len 8192 --steps 1 --profile --head-keep-logits --head-vocab-chunk 131072 \
    --name train-profile-ninth > "$OUT/train-profile.txt" 2>&1
  echo "train profile rc=$?"; grep -A 40 "^profile" "$OUT/train-profile.txt"; el "train profile done"
  ;;
dev9c)
  # ninth session: build, CUDA tests, decode at context 256 with K-split candidates offered to the matmul timing
  # (verbose: each choice) and without (M1_MATMUL_TUNE=nosplit), the training step with every shape timed
  quick_build
  [ "${SKIP_TESTS:-0}" = 1 ] || cuda_tests
  for t in verbose nosplit; do
    M1_MATMUL_TUNE=$t timeout 100 node dist/bench/decode.js --zero-weights --backend cuda --steps 6 --graphs --name decode-split-$t-ninth \
      --batches ${BATCHES:-8,64,128,256,512} --length-batch 64 --lengths 0 --contexts ${CONTEXTS:-256} > "$OUT/decode-split-$t.txt" 2>&1
    echo "decode M1_MATMUL_TUNE=$t rc=$?"; sed -n '/^ *model/,/^$/p' "$OUT/decode-split-$t.txt" | head -14; el "decode $t done"
  done
  grep "m1 matmul timing" "$OUT/decode-split-verbose.txt" | sort | uniq -c | sort -rn | head -30
  M1_MATMUL_TUNE=all timeout ${TRAIN_S:-100} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases \
    --matmul-precision medium --head-keep-logits --head-vocab-chunk 131072 --name train-all-ninth > "$OUT/train-all.txt" 2>&1
  echo "train all rc=$?"; grep -E "^ *m1-3b|^ *(teacher|student|head|optimizer) |Error|error" "$OUT/train-all.txt" | head -9; el "train all done"
  ;;
dev9d)
  # ninth session: build, CUDA tests, the training step (bench defaults: head logits kept, whole vocabulary, every
  # matmul shape timed) with auto recompute and with none, a profiled step, prefill
  quick_build
  [ "${SKIP_TESTS:-0}" = 1 ] || cuda_tests
  for rc in auto off; do
    timeout ${TRAIN_S:-100} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases --matmul-precision medium --recompute $rc \
      --name train-rc$rc-ninth > "$OUT/train-rc$rc.txt" 2>&1
    echo "train recompute $rc rc=$?"; grep -E "^ *m1-3b|^ *(teacher|student|head|optimizer) |Error|error|memory" "$OUT/train-rc$rc.txt" | head -12; el "train $rc done"
  done
  timeout 90 node dist/bench/train.js --backend cuda --seq-len 8192 --steps 1 --profile --name train-profile-ninth > "$OUT/train-profile.txt" 2>&1
  echo "train profile rc=$?"; grep -A 40 "^profile" "$OUT/train-profile.txt"; el "train profile done"
  timeout ${PREFILL_S:-80} node dist/bench/prefill.js --backend cuda --lengths 8192,16384,32768 --repeats 2 --matmul-precision medium --name prefill-medium-ninth > "$OUT/prefill-medium.txt" 2>&1
  echo "prefill rc=$?"; sed -n '/^ *model/,/^$/p' "$OUT/prefill-medium.txt" | head -12; el "prefill done"
  ;;
dev9e)
  # ninth session: build, the scan CUDA tests under both decay exponentials, the scan alone with expf and with
  # ex2.approx (M1_SCAN_EXP=2) in the backward, alternating twice, then the training step with each
  quick_build
  for x in 1 2; do
    M1_SCAN_EXP=$x timeout 120 node node_modules/vitest/vitest.mjs run test/cuda/ops.test.ts test/cuda/backward.test.ts test/cuda/model.test.ts test/cuda/train.test.ts > "$OUT/cuda-tests-exp$x.txt" 2>&1
    echo "cuda tests M1_SCAN_EXP=$x rc=$?"; sed 's/\x1b\[[0-9;]*m//g' "$OUT/cuda-tests-exp$x.txt" | grep -E "Tests |FAIL|AssertionError" | head -5
  done
  for r in 1 2; do for x in 1 2; do
    M1_SCAN_EXP=$x timeout 60 node dist/bench/scan.js --backend cuda --name scan-exp$x-ninth > "$OUT/scan-exp$x-$r.txt" 2>&1
    echo "scan M1_SCAN_EXP=$x run $r rc=$?"; grep -E "^ *selective" "$OUT/scan-exp$x-$r.txt"
  done; done
  el "scan done"
  for x in 1 2; do
    M1_SCAN_EXP=$x timeout ${TRAIN_S:-100} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases --matmul-precision medium \
      --name train-exp$x-ninth > "$OUT/train-exp$x.txt" 2>&1
    echo "train M1_SCAN_EXP=$x rc=$?"; grep -E "^ *m1-3b|^ *student backward|Error|error" "$OUT/train-exp$x.txt" | head -4; el "train $x done"
  done
  ;;
dev9f)
  # ninth session: build, CUDA tests, the scan alone twice, its kernels' times under Nsight Compute (warm L2),
  # the training step
  quick_build
  [ "${SKIP_TESTS:-0}" = 1 ] || cuda_tests
  for r in 1 2; do timeout 60 node dist/bench/scan.js --backend cuda --name scan-ninth > "$OUT/scan-$r.txt" 2>&1; echo "scan run $r rc=$?"; grep -E "^ *selective" "$OUT/scan-$r.txt"; done
  timeout 120 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv --print-units base \
    node dist/bench/scan.js --backend cuda --repeats 1 > /tmp/ncu-scan.csv 2> /tmp/ncu-scan.err; echo "ncu scan rc=$?"
  gzip -c /tmp/ncu-scan.csv > "$OUT/ncu-scan-ninth.csv.gz"
  python3 - <<'PY'
import csv, collections
rows = [r for r in csv.reader(open('/tmp/ncu-scan.csv')) if len(r) > 10]
h = rows[0]; ki = h.index('Kernel Name'); vi = h.index('Metric Value')
acc = collections.OrderedDict()
for r in rows[1:]:
    k = r[ki].split('(')[0][:70]; acc.setdefault(k, []).append(float(r[vi].replace(',', '')) / 1e3)
for k, v in acc.items(): print(f"{k:72s} n={len(v):3d} median {sorted(v)[len(v)//2]:9.1f} us")
PY
  el "scan done"
  timeout ${TRAIN_S:-100} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases --matmul-precision medium --name train-ninth > "$OUT/train.txt" 2>&1
  echo "train rc=$?"; grep -E "^ *m1-3b|^ *(teacher|student|head|optimizer) |Error|error" "$OUT/train.txt" | head -8; el "train done"
  ;;
train8)
  # eighth session: build, CUDA tests, the training step and a profiled step
  quick_build
  [ "${SKIP_TESTS:-0}" = 1 ] || cuda_tests
  timeout ${TRAIN_S:-100} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases --matmul-precision medium --name train-medium > "$OUT/train.txt" 2>&1
  echo "train rc=$?"; grep -E "^ *m1-3b|^ *(teacher|student|head|optimizer) |Error|error" "$OUT/train.txt" | head -9; el "train done"
  timeout 100 node dist/bench/train.js --backend cuda --seq-len 8192 --steps 1 --profile --name train-profile > "$OUT/train-profile.txt" 2>&1
  echo "train profile rc=$?"; grep -A 30 "^profile" "$OUT/train-profile.txt"; el "train profile done"
  ;;
tune8)
  # eighth session: build, the CUDA matmul tests, then decode with graphs with the timed cuBLASLt algorithms
  # (verbose: each shape's choice) and with the heuristic's first (M1_MATMUL_TUNE=0), same call
  quick_build
  timeout 120 node node_modules/vitest/vitest.mjs run test/cuda/ops.test.ts test/cuda/decode.test.ts > "$OUT/cuda-tests.txt" 2>&1; echo "cuda tests rc=$?"
  sed 's/\x1b\[[0-9;]*m//g' "$OUT/cuda-tests.txt" | grep -E "Tests |Test Files|FAIL" | head -5
  for t in verbose 0; do
    M1_MATMUL_TUNE=$t timeout 100 node dist/bench/decode.js --zero-weights --backend cuda --steps 6 --graphs --name decode-tune-$t \
      --batches 8,64,128,256 --length-batch 64 --lengths 0 --contexts 256 > "$OUT/decode-tune-$t.txt" 2>&1
    echo "decode M1_MATMUL_TUNE=$t rc=$?"; sed -n '/^ *model/,/^$/p' "$OUT/decode-tune-$t.txt" | head -12
  done
  grep "m1 matmul timing" "$OUT/decode-tune-verbose.txt" | sort | uniq | head -40
  el "tune done"
  ;;
ncu-kernel)
  # Nsight Compute, full set, on one launch of the kernels matching NCU_K during bench/scan.ts (default: the scan
  # backward's lane-per-state kernel); then the engine at 3B scale unless ENGINE=0
  quick_build
  timeout ${NCU_S:-200} ncu --clock-control none -k regex:${NCU_K:-bwd_lanes} --launch-count 1 --set full \
    node dist/bench/scan.js --backend cuda --repeats 1 > "$OUT/ncu-kernel.txt" 2>&1; echo "ncu rc=$?"
  grep -E "^  [a-z_ ]*k_|Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Executed Ipc|Issue Slots Busy|Executed Instructions  |Warp Cycles Per Issued|Block Limit|L1/TEX Hit|L2 Hit|Stall|pipe|Pipe" "$OUT/ncu-kernel.txt" | head -60
  el "ncu done"
  if [ "${ENGINE:-1}" = 1 ]; then
    engine3b
  fi
  ;;
tests)
  # build + all CUDA tests only
  quick_build
  cuda_tests
  ;;
final1)
  # the session's record, part 1 (the device answers ≤ 10 minutes per call): build, all CUDA tests, the scan alone,
  # the training step (phases, then a profiled step), prefill at both precisions, decode with sampling on the device
  quick_build
  cuda_tests
  timeout 60 node dist/bench/scan.js --backend cuda --name scan > "$OUT/scan.txt" 2>&1; echo "scan rc=$?"; sed -n 1,6p "$OUT/scan.txt"
  timeout ${TRAIN_S:-100} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases --matmul-precision medium --name train-medium > "$OUT/train-medium.txt" 2>&1
  echo "train rc=$?"; grep -E "^ *m1-3b|^ *(teacher|student|head|optimizer) |activation rec" "$OUT/train-medium.txt"; el "train done"
  timeout 100 node dist/bench/train.js --backend cuda --seq-len 8192 --steps 1 --profile --name train-profile > "$OUT/train-profile.txt" 2>&1
  echo "train profile rc=$?"; grep -A 24 "^profile" "$OUT/train-profile.txt"; el "train profile done"
  for p in highest medium; do
    timeout ${PREFILL_S:-80} node dist/bench/prefill.js --backend cuda --lengths 8192,16384,32768 --repeats 2 --matmul-precision $p --name prefill-$p > "$OUT/prefill-$p.txt" 2>&1
    echo "prefill $p rc=$?"; sed -n '/^ *model/,/^$/p' "$OUT/prefill-$p.txt" | head -9
  done
  el "prefill done"
  timeout 120 node dist/bench/decode.js --zero-weights --backend cuda --steps 6 --graphs --temperature 0.7 --name decode-sampled \
    --batches 8,64,256,512 --length-batch 64 --lengths 0 --contexts 256 > "$OUT/decode-sampled.txt" 2>&1
  echo "decode sampled rc=$?"; sed -n '/^ *model/,/^$/p' "$OUT/decode-sampled.txt" | head -12; grep -E "fell back" "$OUT/decode-sampled.txt"
  el "decode sampled done"
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt | grep -v '^cuda-tests') \
    -C "$PWD" $(ls bench/results/{scan,train-medium,train-profile,prefill-highest,prefill-medium,decode-sampled}-cuda-2*.json 2>/dev/null)
  (cd "$OUT" && rm -f $(ls *.txt | grep -v -E '^(cuda-tests|train-medium)\.txt$'))
  ;;
dev11)
  # eleventh session: build, CUDA tests (TESTS: a subset), the M1 decode step with graphs, f32 against bf16 SSM state in
  # the same call (two rounds, alternating), then (NSYS=1, when nsys is installed) the engine at 3B under Nsight Systems
  # with graph nodes traced: its kernels summed by name (where the engine's step goes beyond bench:decode's)
  quick_build
  [ "${SKIP_TESTS:-0}" = 1 ] || cuda_tests
  for r in 1 2; do
    for st in f32 bf16; do
      timeout ${DECODE_S:-100} node dist/bench/decode.js --zero-weights --backend cuda --steps 6 --graphs --models m1-3b --ssm-dtype $st \
        --name decode-ssm-$st-r$r-eleventh --batches ${BATCHES:-8,64,256,512} --length-batch 64 --lengths 0 --contexts ${CONTEXTS:-256,4096} \
        > "$OUT/decode-ssm-$st-r$r.txt" 2>&1
      echo "decode ssm $st round $r rc=$?"; sed -n '/^ *model/,/^$/p' "$OUT/decode-ssm-$st-r$r.txt" | head -12; el "decode $st r$r done"
    done
  done
  if [ "${NSYS:-1}" = 1 ]; then
    if command -v nsys > /dev/null; then
      timeout ${NSYS_S:-200} nsys profile --cuda-graph-trace=node --trace=cuda --sample=none -o /tmp/engine-nsys -f true \
        node dist/bench/generate.js --backend cuda --presets llama-3.2-3b,m1-3b --random-weights --graphs --temperature 0.7 \
        --batches ${GEN_BATCHES:-256} --batch-gen ${GEN_TOKENS:-256} --lengths ${GEN_LENGTHS:-16} --length-batch 8 > "$OUT/generate-nsys.txt" 2>&1
      echo "nsys rc=$?"; grep -A4 "^batch sweep" "$OUT/generate-nsys.txt"
      nsys stats --report cuda_gpu_kern_sum --report cuda_gpu_mem_time_sum --report cuda_api_sum --format csv -o /tmp/engine-nsys-stats /tmp/engine-nsys.nsys-rep > /dev/null 2>&1
      for f in /tmp/engine-nsys-stats*.csv; do cp "$f" "$OUT/$(basename "$f")"; head -25 "$f"; done
    else echo "nsys: not installed"; ls /usr/local/cuda/bin | grep -i nsys; ls /opt/nvidia 2>/dev/null; fi
    el "nsys done"
  fi
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt *.json *.csv 2>/dev/null) -C "$PWD" $(ls bench/results/*eleventh*.json 2>/dev/null)
  el "all done"
  ;;
check11)
  # eleventh session: all CUDA tests, then the engine at 3B (batch 256 × 256, --time-decode) after the pools' dtype fix
  quick_build
  cuda_tests
  timeout ${GEN_S:-200} node dist/bench/generate.js --backend cuda --presets llama-3.2-3b,m1-3b --random-weights --graphs --temperature 0.7 \
    --time-decode --batches ${GEN_BATCHES:-256} --batch-gen ${GEN_TOKENS:-256} --lengths 16 --length-batch 8 > "$OUT/generate-timed.txt" 2>&1
  echo "generate rc=$?"; grep -E "256 × [0-9]+: .*decode steps|^ *256 +[0-9]+ " "$OUT/generate-timed.txt"
  el "all done"
  ;;
sweep11)
  # eleventh session: the record's decode sweep alone, once more on the final code (the spread of the batch-512 ratio)
  quick_build
  decode_sweep eleventh-r4
  pack eleventh-r4
  el "all done"
  ;;
final11)
  # the eleventh session's record, one call: record eleventh (final10's steps on this session's code; PEER=1 adds
  # torch.compile at context 4096 as final10 did)
  record eleventh
  if [ "${PEER:-0}" = 1 ]; then
    peer4096 eleventh
  fi
  pack eleventh
  el "all done"
  ;;
dev13)
  # thirteenth session: the training step with bf16 activations kept for the products, the one-pass conv kernels and
  # the inference forward's pending residual — all CUDA tests, the training step in two processes, a profiled step,
  # prefill, the scan
  quick_build
  cuda_tests
  train_step dev13
  train_step dev13b train-medium-b
  train_profile dev13
  prefill_medium dev13
  timeout 60 node dist/bench/scan.js --backend cuda --name scan-dev13 > "$OUT/scan.txt" 2>&1; echo "scan rc=$?"; grep -E "^ *(selective|causal)" "$OUT/scan.txt"
  [ "${NCU_SCAN:-1}" = 1 ] && ncu_scan
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt *.csv 2>/dev/null) -C "$PWD" $(ls bench/results/*dev13*.json 2>/dev/null)
  el "all done"
  ;;
final13)
  # the thirteenth session's record, one call: record thirteenth (build, all CUDA tests, the scan, the training step and a
  # profiled one, prefill, the decode sweep, the engine at 3B), then the training step in a second process
  record thirteenth
  train_step final13b train-medium-b
  pack thirteenth
  el "all done"
  ;;
shapes14)
  # fourteenth session: where a short-context decode step goes — every kernel of eager M1 steps under Nsight Compute
  # with its grid and DRAM bytes (kernels grouped by name and grid, i.e. by product shape), L2 kept warm between
  # kernels as in a real step; then decode with graphs at the same points
  quick_build
  NCU_CACHE=none NCU_METRICS=gpu__time_duration.sum,launch__grid_size,dram__bytes_read.sum NCU_TOP=60 ncu_decode "${NCU_POINTS:-m1-3b:64:256 m1-3b:512:256}"
  BATCHES=64,512 CONTEXTS=256 DECODE_FLAGS="--models m1-3b" decode_round
  ;;
sass14)
  # fourteenth session: the scan backward's main kernel — its SASS (cuobjdump) and Nsight Compute's instruction mix,
  # warp stalls and source counters on one launch of bench:scan's backward from checkpoints
  quick_build
  cuobjdump -sass /tmp/m1o/kernels.o | awk '/Function : .*bwd_lanes/{p=1} /Function :/{if (!/bwd_lanes/) p=0} p' > "$OUT/scan-bwd.sass"
  wc -l "$OUT/scan-bwd.sass"
  timeout ${NCU_S:-200} ncu --clock-control none -k regex:${NCU_K:-bwd_lanes} --launch-skip 2 --launch-count 1 \
    --section InstructionStats --section WarpStateStats --section SourceCounters --section LaunchStats --section Occupancy \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
    node dist/bench/scan.js --backend cuda --repeats 1 > "$OUT/ncu-scan-bwd.txt" 2>&1; echo "ncu rc=$?"
  grep -E "Duration|Executed Ipc|Issue Slots Busy|Registers Per|Achieved Occupancy|Warp Cycles Per Issued|Stall|Executed Instructions " "$OUT/ncu-scan-bwd.txt" | head -40
  ;;
final14)
  # fourteenth session's record (training and prefill kernels changed; decode did not): all CUDA tests, bench:scan, the
  # training step in two processes, a profiled step, prefill
  quick_build
  cuda_tests
  figures final14
  ;;
final14b)
  # fourteenth session, the final code (the scan passes' step inputs through scanStepIn, the training MLP's gate and up
  # as one product): all CUDA tests, bench:scan, the training step with and without matmulPair (M1_MATMUL_PAIR=0: the
  # teacher's and the student's) alternating, two rounds, then decode with graphs (m1 + llama)
  quick_build
  cuda_tests
  timeout 60 node dist/bench/scan.js --backend cuda --name scan-final14b > "$OUT/scan.txt" 2>&1; echo "scan rc=$?"; grep -E "^ *(selective|causal)" "$OUT/scan.txt"
  for r in 1 2; do
    for p in 1 0; do echo "M1_MATMUL_PAIR=$p round $r"; M1_MATMUL_PAIR=$p train_step final14b-pair$p-r$r train-pair$p-r$r; done
  done
  decode_round
  ;;
record14)
  # fourteenth session: the figures of the final code with their JSON (scan, the training step twice and a profiled one,
  # prefill, decode with graphs) packed into results.tgz
  quick_build
  figures fourteenth
  DECODE_NAME=decode-graphs-fourteenth decode_round
  pack fourteenth
  ;;
pdl15)
  # fifteenth session: the decode step's own kernels launched as programmatic dependents (pdl.cuh) — all CUDA tests,
  # then decode with graphs with PDL and without (M1_PDL=0), two rounds alternating, then the training step with PDL
  quick_build
  cuda_tests
  for r in 1 2; do
    for p in 1 0; do
      echo "M1_PDL=$p round $r"
      M1_PDL=$p DECODE_NAME=decode-pdl$p-r$r-${NAME:-pdl15} BATCHES=${BATCHES:-8,64,128,256,512} decode_round
      mv "$OUT/decode-graphs.txt" "$OUT/decode-pdl$p-r$r.txt"
    done
  done
  [ "${TRAIN:-1}" = 1 ] && train_step ${NAME:-pdl15}
  pack ${NAME:-pdl15}
  el "all done"
  ;;
record15)
  # fifteenth session: the figures of the final code with their JSON (all CUDA tests, scan, the training step twice and a
  # profiled one, prefill, decode with graphs at batch 8 … 512) packed into results.tgz
  quick_build
  cuda_tests
  figures fifteenth
  DECODE_NAME=decode-graphs-fifteenth BATCHES=${BATCHES:-8,64,128,256,512} decode_round
  pack fifteenth
  el "all done"
  ;;
sweep15)
  # fifteenth session: the record's decode sweep on the final code (m1 + llama, graphs, Llama's waves where its cache
  # does not fit): batch 8 … 512 × context 256 … 4096, generated lengths, the 4096-token runs against Llama; NAME=fifteenth-b
  # after bench:decode gained its peak-memory column
  quick_build
  decode_sweep ${NAME:-fifteenth}
  tar czf "$OUT/results.tgz" -C "$OUT" decode.txt -C "$PWD" $(ls bench/results/*sweep-${NAME:-fifteenth}-*.json bench/results/*sweep-${NAME:-fifteenth}-*.html 2>/dev/null)
  el "all done"
  ;;
check15b)
  # fifteenth session, after the review (the capability and SM-count reads shared through runtime.h): all CUDA tests,
  # decode with graphs (m1, batch 64 / 512, context 256 / 4096)
  quick_build
  cuda_tests
  DECODE_NAME=decode-graphs-check15b BATCHES=64,512 DECODE_FLAGS="--models m1-3b" decode_round
  ;;
check15)
  # fifteenth session, the final code (the skinny-product kernel measured in dev15 / dev15b / dev15c and removed: the
  # native code is check14's): all CUDA tests, then decode with graphs (m1 + llama) at batch 8 … 512, context 256 / 4096
  quick_build
  cuda_tests
  DECODE_NAME=decode-graphs-check15 BATCHES=${BATCHES:-8,64,128,256,512} decode_round
  el "all done"
  ;;
check14)
  # fourteenth session, after the review (comments moved in kernels.cu): all CUDA tests and bench:scan
  quick_build
  cuda_tests
  timeout 60 node dist/bench/scan.js --backend cuda --name scan-check14 > "$OUT/scan.txt" 2>&1; echo "scan rc=$?"; grep -E "^ *(selective|causal)" "$OUT/scan.txt"
  ;;
pair13)
  # thirteenth session: gate and up as one batched product (matmulPair) — all CUDA tests, then decode with graphs
  # (m1 + llama, batch 8 … 512, context 256 / 4096) with it and without it (M1_MATMUL_PAIR=0), two rounds alternating
  quick_build
  cuda_tests
  for r in 1 2; do
    for p in 1 0; do
      M1_MATMUL_PAIR=$p DECODE_NAME=decode-pair$p-r$r-pair13 BATCHES=${BATCHES:-8,64,128,256,512} decode_round
      mv "$OUT/decode-graphs.txt" "$OUT/decode-pair$p-r$r.txt"
    done
  done
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt 2>/dev/null) -C "$PWD" $(ls bench/results/*pair13*.json 2>/dev/null)
  el "all done"
  ;;
final13b)
  # the record on the final code (after matmulPair): record thirteenth-b, then the training step in a second process
  record thirteenth-b
  train_step final13c train-medium-b
  pack thirteenth-b
  el "all done"
  ;;
check13)
  # thirteenth session, after the review (AdamW's finiteness check without a second rounding, the attention forward's
  # bf16 copies made once, the wgmma switch read once): all CUDA tests, bench:attention, the training step
  quick_build
  cuda_tests
  timeout 60 node dist/bench/attention.js --backend cuda --name attention-check13 > "$OUT/attention.txt" 2>&1; echo "attention rc=$?"; grep -E "^ *attention" "$OUT/attention.txt"
  train_step check13
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt 2>/dev/null) -C "$PWD" $(ls bench/results/*check13*.json 2>/dev/null)
  el "all done"
  ;;
check13b)
  # thirteenth session, last: the conv row walks load the rows' segment starts with the rows — all CUDA tests, bench:scan
  quick_build
  cuda_tests
  timeout 60 node dist/bench/scan.js --backend cuda --name scan-check13b > "$OUT/scan.txt" 2>&1; echo "scan rc=$?"; grep -E "^ *(selective|causal)" "$OUT/scan.txt"
  el "all done"
  ;;
review13)
  # thirteenth session's review (TypeScript only: the cuda backend's outputs through produce) — all CUDA tests, a decode
  # round with graphs (m1 + llama, batch 8 / 64 / 512, context 256 / 4096), the training step
  quick_build
  cuda_tests
  BATCHES=8,64,512 DECODE_NAME=decode-review13 decode_round
  train_step review13
  el "all done"
  ;;
att13)
  # thirteenth session: bench:attention with the wgmma and the mma.sync forward, two rounds alternating (after check13)
  quick_build
  attention_ab att13
  el "all done"
  ;;
ncu13)
  # thirteenth session: Nsight Compute on bench:scan's kernels alone
  quick_build
  ncu_scan
  el "all done"
  ;;
exp13)
  # thirteenth session: the scan's decays by ex2.approx (scanExp) — all CUDA tests, bench:scan, the training step twice
  quick_build
  cuda_tests
  timeout 60 node dist/bench/scan.js --backend cuda --name scan-exp13 > "$OUT/scan.txt" 2>&1; echo "scan rc=$?"; grep -E "^ *(selective|causal)" "$OUT/scan.txt"
  train_step exp13
  train_step exp13b train-medium-b
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt 2>/dev/null) -C "$PWD" $(ls bench/results/*exp13*.json 2>/dev/null)
  el "all done"
  ;;
conv13)
  # thirteenth session: the conv fix checked (backward and training tests), bench:scan (with the conv rows), then Nsight
  # Compute on the scan's and the conv's kernels (NCU_K: kernel regex)
  quick_build
  TESTS=${TESTS:-test/cuda/backward.test.ts test/cuda/train.test.ts} cuda_tests
  timeout 60 node dist/bench/scan.js --backend cuda --name scan-conv13 > "$OUT/scan.txt" 2>&1; echo "scan rc=$?"; grep -E "^ *(selective|causal)" "$OUT/scan.txt"
  timeout ${NCU_S:-200} ncu --clock-control none -k regex:${NCU_K:-conv1d} --launch-count ${NCU_LAUNCHES:-4} --set full \
    node dist/bench/scan.js --backend cuda --repeats 1 > "$OUT/ncu-conv.txt" 2>&1; echo "ncu rc=$?"
  grep -E "^  k_|^  void|Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Executed Ipc A|Warp Cycles Per Issued|Block Limit Reg|L1/TEX Hit|Executed Instructions  " "$OUT/ncu-conv.txt" | head -80
  el "all done"
  ;;
dev12)
  # twelfth session: the wgmma attention forward (Dh 128 on Hopper) — its tests, bench:attention against the mma.sync
  # kernel (M1_ATTN_WGMMA=0) alternating, then the training step (phases + profile) and prefill on it
  quick_build
  TESTS=${TESTS:-test/cuda/flash-attention.test.ts} cuda_tests
  attention_ab twelfth
  if [ "${TRAIN:-1}" = 1 ]; then
    train_step dev12
    train_profile dev12
    prefill_medium dev12
  fi
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt 2>/dev/null) -C "$PWD" $(ls bench/results/*{twelfth,dev12}*.json 2>/dev/null)
  el "all done"
  ;;
train12)
  # twelfth session: the training step (phases) on this session's code, then Nsight Compute on the attention backward
  quick_build
  train_step train12
  NCU_K=k_flash_bwd_dkdv_tc NCU_S=120 bash bench/gpu-bench.sh ncu-attn-bwd
  ;;
ncu-attn-bwd)
  # the attention backward's kernel under Nsight Compute (full set + stall reasons), one launch at the training shape
  K=${NCU_K:-k_flash_bwd_dkdv_tc}
  timeout ${NCU_S:-150} ncu --clock-control none -k regex:$K --launch-skip 1 --launch-count 1 --set full \
    node dist/bench/attention.js --backend cuda --repeats 1 --name attention-ncu > "$OUT/ncu-attn-bwd.txt" 2>&1; echo "ncu rc=$?"
  grep -E "Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Compute \(SM\) Throughput|Executed Ipc|Issue Slots Busy|Warp Cycles Per Issued|Block Limit|Bank|Dynamic Shared|No Eligible|Active Warps|Error" "$OUT/ncu-attn-bwd.txt" | head -40
  timeout ${NCU_S:-150} ncu --clock-control none -k regex:$K --launch-skip 1 --launch-count 1 --csv \
    --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,regex:l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_(ld|st)\.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum" \
    node dist/bench/attention.js --backend cuda --repeats 1 --name attention-ncu > "$OUT/ncu-attn-bwd-metrics.txt" 2>&1; echo "ncu metrics rc=$?"
  grep -E '^"' "$OUT/ncu-attn-bwd-metrics.txt" | awk -F'","' '{print $(NF-2), $NF}' | grep -v ' "0"$' | tail -30
  rm -f bench/results/attention-ncu*
  el "all done"
  ;;
check12)
  # twelfth session: all CUDA tests, then the training step (phases) and a profiled one on this session's code
  quick_build
  cuda_tests
  train_step check12
  train_profile check12
  el "all done"
  ;;
final12)
  # the twelfth session's record, one call: record twelfth (final11's steps on this session's code), bench:attention with
  # the wgmma and the mma.sync forward (M1_ATTN_WGMMA=0), alternating, and (PEER=1) torch.compile at context 4096
  record twelfth
  attention_ab final12
  if [ "${PEER:-0}" = 1 ]; then
    peer4096 twelfth
  fi
  pack twelfth
  tar czf "$OUT/attention-final12.tgz" $(ls bench/results/attention-*final12*.json 2>/dev/null)
  el "all done"
  ;;
check12b)
  # twelfth session, after the record: all CUDA tests, bench:attention (wgmma) twice, the training step (phases) in
  # TRAIN_RUNS separate processes (the spread between runs)
  quick_build
  cuda_tests
  for r in 1 2; do
    timeout 60 node dist/bench/attention.js --backend cuda --name attention-wgmma1-r$r-check12b > "$OUT/attention-r$r.txt" 2>&1
    echo "attention round $r rc=$?"; grep -E "^ *attention" "$OUT/attention-r$r.txt"
  done
  for r in $(seq 1 ${TRAIN_RUNS:-3}); do train_step check12b-r$r train-medium-r$r; done
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt 2>/dev/null) -C "$PWD" $(ls bench/results/*check12b*.json 2>/dev/null)
  el "all done"
  ;;
final12b)
  # twelfth session, the final native code (ping-pong on, its switch removed): all CUDA tests, bench:attention with both
  # forward kernels, the training step in TRAIN_RUNS processes, prefill
  quick_build
  cuda_tests
  attention_ab final12b
  for r in $(seq 1 ${TRAIN_RUNS:-2}); do train_step final12b-r$r train-medium-r$r; done
  prefill_medium final12b
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt 2>/dev/null) -C "$PWD" $(ls bench/results/*final12b*.json 2>/dev/null)
  el "all done"
  ;;
ncu-attn)
  # twelfth session: Nsight Compute on one launch of the attention forward (NCU_K, default the wgmma kernel) at the
  # training shape: the full set, then the warp stall reasons and the tensor pipes
  quick_build
  K=${NCU_K:-k_flash_fwd_wgmma}
  timeout ${NCU_S:-150} ncu --clock-control none -k regex:$K --launch-skip 1 --launch-count 1 --set full \
    node dist/bench/attention.js --backend cuda --repeats 1 --no-backward --name attention-ncu > "$OUT/ncu-attn.txt" 2>&1; echo "ncu rc=$?"
  grep -E "^  [a-z_ ]*k_|Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Memory Throughput|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Compute \(SM\) Throughput|Executed Ipc|Issue Slots Busy|Warp Cycles Per Issued|Block Limit|L1/TEX Hit|L2 Hit|Bank|Dynamic Shared|Grid Size|Waves|No Eligible|Active Warps|Error" "$OUT/ncu-attn.txt" | head -50
  timeout ${NCU_S:-150} ncu --clock-control none -k regex:$K --launch-skip 1 --launch-count 1 --csv \
    --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__pipe_tensor.*cycles_active\.avg\.pct_of_peak_sustained_active,regex:sm__inst_executed_pipe_(tensor|uniform|fma|alu|xu|lsu).*\.sum,regex:l1tex__data_bank_conflicts_pipe_lsu_mem_shared.*\.sum,smsp__inst_executed.sum" \
    node dist/bench/attention.js --backend cuda --repeats 1 --no-backward --name attention-ncu > "$OUT/ncu-attn-metrics.txt" 2>&1; echo "ncu metrics rc=$?"
  python3 - "$OUT/ncu-attn-metrics.txt" <<'PY'
import csv, sys
lines = [l for l in open(sys.argv[1]) if l.startswith('"')]
for r in csv.DictReader(lines):
    v = r.get('Metric Value', '').replace(',', '')
    try:
        if float(v) == 0: continue
    except ValueError:
        pass
    print(f"{r['Metric Name']:90s} {v}")
PY
  rm -f bench/results/attention-ncu*
  el "all done"
  ;;
sass-attn)
  # twelfth session: the SASS of the attention forward kernels (cuobjdump on the prebuilt object) and every kernel's time
  # in one bench:attention forward call (ncu, gpu__time_duration only)
  quick_build
  cuobjdump -sass native/build/carry/obj/flash_attention_tc.o > "$OUT/sass-flash-tc.txt" 2>&1; echo "cuobjdump rc=$?"
  timeout ${NCU_S:-120} ncu --clock-control none --metrics gpu__time_duration.sum --csv \
    node dist/bench/attention.js --backend cuda --repeats 2 --no-backward --name attention-ncu > "$OUT/ncu-attn-times.txt" 2>&1; echo "ncu rc=$?"
  grep -E '^"' "$OUT/ncu-attn-times.txt" | awk -F'","' '{print $5, $NF}' | tail -14
  rm -f bench/results/attention-ncu*
  el "all done"
  ;;
ops11)
  # eleventh session: where the engine's decode step goes, op by op (eager steps, each op synced: bench:generate
  # --profile-ops, batch 256 × 256), beside bench:decode --profile at batch 256, contexts 256 and 512
  quick_build
  timeout ${GEN_S:-250} node dist/bench/generate.js --backend cuda --presets llama-3.2-3b,m1-3b --random-weights --temperature 0.7 \
    --profile-ops --batches ${GEN_BATCHES:-256} --batch-gen ${GEN_TOKENS:-128} --lengths 16 --length-batch 8 > "$OUT/generate-ops.txt" 2>&1
  echo "generate rc=$?"; grep -A26 "256 × [0-9]*: ops per decode step" "$OUT/generate-ops.txt" | head -60
  timeout ${DECODE_S:-150} node dist/bench/decode.js --random-weights --backend cuda --steps 4 --profile --name decode-ops-eleventh \
    --batches 256 --length-batch 256 --lengths 0 --contexts 256,384 > "$OUT/decode-ops.txt" 2>&1
  echo "decode profile rc=$?"; grep -A19 "^profile B=" "$OUT/decode-ops.txt" | head -90
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt 2>/dev/null) -C "$PWD" $(ls bench/results/*eleventh*.json 2>/dev/null)
  el "all done"
  ;;
data11)
  # eleventh session: does the data moved change the step time? The engine (batch 256 × 256, --time-decode) with zero and
  # with random weights; bench:decode at batch 256 with the KV cache as allocated (zeros) and filled with random values
  quick_build
  for w in zero random; do
    timeout ${GEN_S:-200} node dist/bench/generate.js --backend cuda --presets llama-3.2-3b,m1-3b --$w-weights --graphs --temperature 0.7 \
      --time-decode --batches ${GEN_BATCHES:-256} --batch-gen ${GEN_TOKENS:-256} --lengths 16 --length-batch 8 > "$OUT/generate-timed-$w.txt" 2>&1
    echo "generate $w weights rc=$?"; grep -E "256 × 256: .*decode steps|^ *256 +[0-9]+ " "$OUT/generate-timed-$w.txt"
  done
  for f in zero random; do
    WEIGHTS=random BATCHES=${BATCHES:-256} CONTEXTS=${CONTEXTS:-256,512,4096} DECODE_FLAGS="--kv-fill $f" DECODE_NAME=decode-kv-$f-eleventh decode_round
    mv "$OUT/decode-graphs.txt" "$OUT/decode-kv-$f.txt"
  done
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt 2>/dev/null) -C "$PWD" $(ls bench/results/*eleventh*.json 2>/dev/null)
  el "all done"
  ;;
engine11)
  # eleventh session: the engine at 3B (batch 256 × 256, both models) with each decode step split by --time-decode
  # (host preparation / model step on the device / sampling + accepting), beside bench:decode's step at the contexts
  # it runs through (256 … 512)
  quick_build
  timeout ${GEN_S:-200} node dist/bench/generate.js --backend cuda --presets llama-3.2-3b,m1-3b --random-weights --graphs --temperature 0.7 \
    --time-decode --batches ${GEN_BATCHES:-256} --batch-gen ${GEN_TOKENS:-256} --lengths 16 --length-batch 8 > "$OUT/generate-timed.txt" 2>&1
  echo "generate rc=$?"; grep -E "decode steps|^ *[0-9]+ +[0-9]+ " "$OUT/generate-timed.txt"
  WEIGHTS=random BATCHES=256 CONTEXTS=256,384,512 DECODE_NAME=decode-engine-contexts-eleventh decode_round
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt 2>/dev/null) -C "$PWD" $(ls bench/results/*eleventh*.json 2>/dev/null)
  el "all done"
  ;;
blocks11)
  # eleventh session: the decode step of both models with each sequence's KV blocks contiguous (bench:decode so far),
  # interleaved (the engine's order when its sequences grow in step) and shuffled, same call
  quick_build
  for b in contiguous interleaved shuffled; do
    DECODE_FLAGS="--block-order $b" BATCHES=${BATCHES:-64,256} CONTEXTS=${CONTEXTS:-256,4096} DECODE_NAME=decode-blocks-$b-eleventh decode_round
    mv "$OUT/decode-graphs.txt" "$OUT/decode-blocks-$b.txt"
  done
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt 2>/dev/null) -C "$PWD" $(ls bench/results/*eleventh*.json 2>/dev/null)
  el "all done"
  ;;
weights11)
  # eleventh session: the decode step of both models with zero weights (bench:decode's default so far) and with random
  # weights (ordinary scales, as the engine bench and real models have), same call; then the engine at 3B
  quick_build
  for w in zero random; do
    WEIGHTS=$w BATCHES=${BATCHES:-64,256,512} CONTEXTS=${CONTEXTS:-256,4096} DECODE_NAME=decode-$w-weights-eleventh decode_round
    mv "$OUT/decode-graphs.txt" "$OUT/decode-$w-weights.txt"
  done
  [ "${ENGINE:-1}" = 1 ] && GEN_BATCHES=${GEN_BATCHES:-256} GEN_TOKENS=${GEN_TOKENS:-256} GEN_LENGTHS=${GEN_LENGTHS:-16} GEN_LENGTH_BATCH=8 engine3b
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt 2>/dev/null) -C "$PWD" $(ls bench/results/*eleventh*.json 2>/dev/null)
  el "all done"
  ;;
dev10)
  # tenth session: build, CUDA tests (TESTS: a subset), decode with graphs at BATCHES × CONTEXTS, then every kernel
  # of a few eager decode steps under Nsight Compute (NCU_POINTS); results.tgz with the logs and JSON
  quick_build
  [ "${SKIP_TESTS:-0}" = 1 ] || cuda_tests
  BATCHES=${BATCHES:-8,64,128,256,512} DECODE_NAME=${DECODE_NAME:-decode-dev10-tenth} decode_round
  [ -n "${NCU_POINTS-x}" ] && ncu_decode "${NCU_POINTS:-m1-3b:64:256 m1-3b:512:4096}"
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt *.json 2>/dev/null) -C "$PWD" $(ls bench/results/*tenth*.json 2>/dev/null)
  el "all done"
  ;;
engine10)
  # tenth session: the engine at 3B (engine3b's command at batch 256 × 512, both models) under node --cpu-prof; the
  # host thread's self time by function (bench/cpuprof-summary.mjs): how much of a step is JavaScript, how much
  # waiting for the device
  quick_build
  rm -rf /tmp/cpuprof
  timeout ${GEN_S:-200} node --cpu-prof --cpu-prof-dir /tmp/cpuprof dist/bench/generate.js --backend cuda --presets llama-3.2-3b,m1-3b --random-weights \
    --graphs --temperature 0.7 --batches ${GEN_BATCHES:-256} --batch-gen ${GEN_TOKENS:-512} --lengths ${GEN_LENGTHS:-256} --length-batch ${GEN_LENGTH_BATCH:-8} \
    > "$OUT/generate-prof.txt" 2>&1
  echo "generate rc=$?"; grep -A4 "^batch sweep" "$OUT/generate-prof.txt"
  for f in /tmp/cpuprof/*.cpuprofile; do node bench/cpuprof-summary.mjs "$f" --top ${PROF_TOP:-30}; done | tee "$OUT/cpuprof-summary.txt"
  el "all done"
  ;;
engine10b)
  # tenth session: the engine at 3B (engine3b) without and with the per-point warm-up (GEN_WARMUP=0, 4)
  quick_build
  for w in 0 4; do
    GEN_WARMUP=$w engine3b
    mv "$OUT/generate-3b.txt" "$OUT/generate-3b-warmup$w.txt"; cp $(ls -t bench/results/generate-cuda-*.json | head -1) "$OUT/generate-3b-warmup$w.json"
  done
  el "all done"
  ;;
final10)
  # the tenth session's record, one call: record tenth (final9's steps on the tenth session's code); then (PEER=1) the
  # Llama-3.2-3B shape beside torch.compile at context 4096 (PEER_BATCHES)
  record tenth
  if [ "${PEER:-1}" = 1 ]; then
    timeout 100 node dist/bench/decode.js --zero-weights --backend cuda --steps 6 --graphs --name decode-llama-peer4096-tenth --models llama-3.2-3b \
      --batches ${PEER_BATCHES:-8,64} --length-batch 64 --lengths 0 --contexts 4096 > "$OUT/decode-llama-4096.txt" 2>&1
    echo "decode llama 4096 rc=$?"; sed -n '/^ *model/,/^$/p' "$OUT/decode-llama-4096.txt" | head -6
    peer4096 tenth
  fi
  pack tenth
  el "all done"
  ;;
dev9g)
  # ninth session: build, CUDA tests, the scan alone (with and without the forward's checkpoints), the training step
  quick_build
  [ "${SKIP_TESTS:-0}" = 1 ] || cuda_tests
  for r in 1 2; do timeout 60 node dist/bench/scan.js --backend cuda --name scan-ckpt-ninth > "$OUT/scan-$r.txt" 2>&1; echo "scan run $r rc=$?"; grep -E "^ *selective" "$OUT/scan-$r.txt"; done
  timeout ${TRAIN_S:-100} node dist/bench/train.js --backend cuda --seq-len 8192 --steps 2 --phases --matmul-precision medium --name train-ckpt-ninth > "$OUT/train.txt" 2>&1
  echo "train rc=$?"; grep -E "^ *m1-3b|^ *(teacher|student|head|optimizer) |Error|error|estimate" "$OUT/train.txt" | head -9; el "train done"
  timeout 90 node dist/bench/train.js --backend cuda --seq-len 8192 --steps 1 --profile --name train-profile-ckpt-ninth > "$OUT/train-profile.txt" 2>&1
  echo "train profile rc=$?"; grep -A 12 "^profile" "$OUT/train-profile.txt"; el "train profile done"
  ;;
peer9)
  # ninth session: the Llama-3.2-3B shape side by side at context 256 — our decode step (graphs) and PyTorch +
  # transformers torch.compile (static cache) in one call
  quick_build
  timeout 100 node dist/bench/decode.js --zero-weights --backend cuda --steps 6 --graphs --name decode-llama-peer-ninth --models llama-3.2-3b \
    --batches ${PEER_BATCHES:-8,64,128,256} --length-batch 64 --lengths 0 --contexts 256 > "$OUT/decode-llama.txt" 2>&1
  echo "decode llama rc=$?"; sed -n '/^ *model/,/^$/p' "$OUT/decode-llama.txt" | head -8; el "decode llama done"
  PEER_BATCHES=${PEER_BATCHES:-8,64,128,256} PEER_CONTEXTS=256 TORCH_S=${TORCH_S:-240} peer compile
  el "all done"
  ;;
dev9h)
  # ninth session: build, CUDA tests, decode (m1 + llama, graphs) at context 256 with the matmul timing kept per row
  # bucket (verbose: which shapes were timed), the engine at 3B
  quick_build
  [ "${SKIP_TESTS:-0}" = 1 ] || cuda_tests
  M1_MATMUL_TUNE=verbose timeout 100 node dist/bench/decode.js --zero-weights --backend cuda --steps 6 --graphs --name decode-bucket-ninth \
    --batches ${BATCHES:-8,64,128,256,512} --length-batch 64 --lengths 0 --contexts 256 > "$OUT/decode-bucket.txt" 2>&1
  echo "decode rc=$?"; sed -n '/^ *model/,/^$/p' "$OUT/decode-bucket.txt" | head -14; grep -c "m1 matmul timing" "$OUT/decode-bucket.txt"; el "decode done"
  [ "${ENGINE:-1}" = 1 ] && engine3b
  ;;
final9)
  # the ninth session's record, one call: record ninth; results JSON copied to $OUT
  record ninth
  # one archive (the device returns a limited number of files): every log and this call's JSON
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt) -C "$PWD" $(ls bench/results/*ninth*.json $(ls -t bench/results/generate-cuda-*.json | head -1) 2>/dev/null)
  (cd "$OUT" && rm -f $(ls *.txt | grep -v -E '^(cuda-tests|train-medium)\.txt$'))
  el "all done"
  ;;
final7)
  # the seventh session's record: final1 (build, CUDA tests, scan, training + profile, prefill, sampled decode), then the
  # torch.compile peer at context 4096 (batches 8, 64; our Llama-shape steps at that context are in decode7's table)
  bash "$0" final1
  PEER_BATCHES=${PEER7_BATCHES:-8,64} PEER_CONTEXTS=4096 TORCH_S=${TORCH_S:-200} peer compile
  mv "$OUT/torch-decode-compile.json" "$OUT/torch-decode-compile-4096.json" 2>/dev/null; rm -f "$OUT/torch-compile.txt"
  el "all done"
  ;;
final8)
  # the eighth session's record, part 1: final1 (build, CUDA tests, scan, training + profile, prefill, sampled decode),
  # then the engine at 3B scale (both models, sampling on the device, graphs)
  bash "$0" final1
  engine3b
  el "all done"
  ;;
peer8)
  # the Llama-3.2-3B shape side by side: our decode step (graphs) and PyTorch + transformers torch.compile in one call,
  # at context 256 (PEER_BATCHES) and 4096 (PEER4096_BATCHES; larger batches run out of memory in the static cache)
  quick_build
  timeout 100 node dist/bench/decode.js --zero-weights --backend cuda --steps 6 --graphs --name decode-llama-peer --models llama-3.2-3b \
    --batches 8,64,128,256 --length-batch 64 --lengths 0 --contexts 256,4096 > "$OUT/decode-llama.txt" 2>&1
  echo "decode llama rc=$?"; sed -n '/^ *model/,/^$/p' "$OUT/decode-llama.txt" | head -12; el "decode llama done"
  PEER_BATCHES=${PEER_BATCHES:-8,64,128,256} PEER_CONTEXTS=256 peer compile
  mv "$OUT/torch-decode-compile.json" "$OUT/torch-decode-compile-256.json" 2>/dev/null
  PEER_BATCHES=${PEER4096_BATCHES:-8} PEER_CONTEXTS=4096 TORCH_S=${TORCH_S:-200} peer compile
  mv "$OUT/torch-decode-compile.json" "$OUT/torch-decode-compile-4096.json" 2>/dev/null
  el "all done"
  ;;
final2)
  # part 2: the decode sweep (m1 + llama, graphs) and the PyTorch peer, eager then torch.compile, in the same call
  quick_build
  timeout ${DECODE_S:-250} node dist/bench/decode.js --zero-weights --backend cuda --steps 6 --budget-s ${DECODE_BUDGET_S:-80} --graphs --name decode-graphs-sweep \
    --batches 8,16,32,64,128,256,512 --contexts 256,1024,2048,4096 --lengths 4096,8192,16384,20480 > "$OUT/decode.txt" 2>&1
  echo "decode rc=$?"; grep -A 80 "^decode step" "$OUT/decode.txt" | head -90
  el "decode done"
  if [ "${PEER:-1}" = 1 ]; then
    PEER_BATCHES=${PEER_EAGER_BATCHES:-8,64,128,256} PEER_CONTEXTS=${PEER_EAGER_CONTEXTS:-256,4096} peer eager
    peer compile
  fi
  tar czf "$OUT/results.tgz" -C "$OUT" $(cd "$OUT" && ls *.txt *.json 2>/dev/null) \
    -C "$PWD" $(ls bench/results/decode-graphs-sweep-cuda-2*.json 2>/dev/null)
  (cd "$OUT" && rm -f *.json $(ls *.txt | grep -v -E '^decode\.txt$'))
  el "all done"
  ;;
*) echo "unknown phase $phase"; exit 2;;
esac
