// Warp-wide reductions shared by the kernel files (every lane of the (full) warp gets the result), and the fast 2^x.
#pragma once
#include <cuda_runtime.h>

template <class T>
__device__ __forceinline__ T warpSum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/** 2^x by one MUFU.EX2 (ex2.approx.ftz: ~2 ulp, results below 2^-126 flushed to 0; 2^-inf = 0) */
__device__ __forceinline__ float ex2Fast(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
