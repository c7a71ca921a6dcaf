// Programmatic dependent launch (PDL, compute capability 9.0+): a kernel launched by pdlLaunch may be scheduled while
// the kernel before it on the stream still runs — its blocks become resident and wait (pdlStart) instead of the GPU
// finishing one grid before it even starts launching the next. In a decode step of ~315 short kernels that launch
// latency is a large share: a graph of dependent trivial kernels runs one per 0.9 µs on an H200
// (bench/graph-overhead.ts). Rules: a kernel launched with pdlLaunch calls pdlStart() before anything else — before
// it reads or writes any global memory — so it sees all of the previous kernel's writes, and the previous kernel sees
// none of its own; pdlStart then lets the next such kernel launch in turn. M1_PDL=0 launches them as usual (A/B runs).
#pragma once
#include <cuda_runtime.h>

#include <cstdlib>
#include <utility>

#include "runtime.h"

/** the first statement of a kernel launched by pdlLaunch */
__device__ __forceinline__ void pdlStart() {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  asm volatile("griddepcontrol.wait;\n" ::: "memory");              // the previous kernel has finished, its writes visible
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");  // the next kernel may start launching
#endif
}

/** PDL on this device (9.0+) and not switched off by M1_PDL=0; read once */
inline bool pdlEnabled() {
  static const bool on = [] {
    const char* e = std::getenv("M1_PDL");
    return m1ComputeMajor() >= 9 && !(e && e[0] == '0');
  }();
  return on;
}

/** kernel<<<grid, block, smem, s>>>(args...) as a programmatic dependent of the previous kernel on s (see above) */
template <typename... P, typename... A>
cudaError_t pdlLaunch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, A&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdlEnabled() ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...);
}
