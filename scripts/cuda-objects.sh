#!/usr/bin/env bash
# Compile native/src/*.cu for the H200 (sm_90a) on a machine that has nvcc but no cuBLAS, so that the
# GPU machine only compiles the two .cpp files and links (bench/gpu-bench.sh quick_build uses the objects
# when native/build/carry/obj/SOURCES.sha matches the sources). Needs the same nvcc as the GPU machine (13.0).
#   bash scripts/cuda-objects.sh        # then carry native/build/carry
set -eu
cd "$(dirname "$0")/.."
O=native/build/carry/obj; mkdir -p "$O"
sha=$(cat native/src/*.cu native/src/*.h native/src/*.cuh | sha256sum | cut -d' ' -f1)
if [ -f "$O/SOURCES.sha" ] && [ "$(cat "$O/SOURCES.sha")" = "$sha" ]; then echo "cuda objects up to date"; exit 0; fi
rm -f "$O"/*.o "$O/SOURCES.sha"
pids=()
for f in native/src/*.cu; do
  nvcc -std=c++17 -O3 -Xcompiler -fPIC -gencode arch=compute_90a,code=sm_90a -c "$f" -o "$O/$(basename "$f" .cu).o" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || { echo "nvcc failed"; exit 1; }; done
echo "$sha" > "$O/SOURCES.sha"
ls -la "$O"
