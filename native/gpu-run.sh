#!/usr/bin/env bash
# One GPU-machine session: build the addon, run `m1 doctor` and the CUDA tests, logs under $OUT.
# Expects (carried): .gpu/ (packed Node.js), native/build/carry/{nm,rt,npm}.tar.xz (pruned node_modules
# for vitest, the runtime dependencies bin/m1 needs (commander, tokenizers, ...), and npm with its
# bundled node-gyp: the packed Node.js has no npm; common.gypi and config.gypi of this Node.js
# version), dist/ (`npm run build` here first: test/cuda/e2e.test.ts spawns bin/m1, which runs dist/).
set -u
source .gpu/prelude.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
tar -xJf native/build/carry/nm.tar.xz && tar -xJf native/build/carry/rt.tar.xz
# a dist/ older than the sources would test old CLI code: say so up front (the tests still run)
newer=$(find src -name '*.ts' -newer dist/src/cli/main.js 2>/dev/null | head -3)
[ -f dist/src/cli/main.js ] || echo "WARNING: dist/ is missing; the m1 logprobs CLI tests will fail (run npm run build before carrying dist)"
[ -n "$newer" ] && echo "WARNING: dist/ is older than $newer (run npm run build before carrying dist)"
mkdir -p /tmp/npm && tar -C /tmp/npm -xJf native/build/carry/npm.tar.xz
NPM="node /tmp/npm/npm/bin/npm-cli.js"
# the packed Node.js carries only the Node-API headers; node-gyp also wants the gyp include files
for d in /tmp/node/include/node /tmp/node; do cp -n native/build/carry/common.gypi native/build/carry/config.gypi $d/; done
{ echo "date: $(date -u +%FT%TZ)"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -1; } | tee "$OUT/env.log"
t0=$(date +%s)
if ! $NPM run build:cuda > "$OUT/build.log" 2>&1; then
  echo "node-gyp build failed (build.log); building with the same flags directly"; tail -8 "$OUT/build.log"
  C=${CUDA_HOME:-/usr/local/cuda}; R=native/build/Release; mkdir -p $R /tmp/m1o
  FL="-std=c++17 -O3 -fPIC -fexceptions -DNAPI_CPP_EXCEPTIONS -DNAPI_VERSION=8 -I/tmp/node/include/node -Inode_modules/node-addon-api -I$C/include"
  { cuOk=1
    for cu in native/src/*.cu; do  # every kernel file (kernels.cu, flash_attention.cu, ...)
      nvcc -std=c++17 -O3 -Xcompiler -fPIC -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=compute_80 \
        -c "$cu" -o "/tmp/m1o/$(basename "$cu" .cu).o" || { cuOk=0; break; }
    done
    [ $cuOk = 1 ] &&
    g++ $FL -c native/src/addon.cpp -o /tmp/m1o/addon.o && g++ $FL -c native/src/matmul.cpp -o /tmp/m1o/matmul.o &&
    g++ -shared -o $R/m1cuda.node /tmp/m1o/*.o -L$C/lib64 -Wl,-rpath,$C/lib64 -lcublasLt -lcublas -lcudart; } >> "$OUT/build.log" 2>&1 \
    || { echo "direct build failed too"; tail -30 "$OUT/build.log"; exit 1; }
fi
echo "build: $(( $(date +%s) - t0 )) s"
node -e "import('./dist/src/cli/commands/doctor.js').then(async m => { const r = await m.doctorReport(); console.log(r.lines.join('\n')); })" 2>&1 | tee "$OUT/doctor.log"
# every file under test/cuda (ops, backward, model, train, e2e)
$NPM run test:cuda -- --reporter=verbose > "$OUT/test.log" 2>&1; rc=$?
grep -E "✓|×|FAIL|max \|Δ|Δ logprob|worst grad|Tests |Test Files|skipped" "$OUT/test.log" | tail -90
grep -B2 -A12 "AssertionError\|Error:" "$OUT/test.log" | head -80
exit $rc
