// The decode step's weight products with few activation rows: Y [M, N] (+)= X [M, K] · Wᵀ, W [N, K], bf16 X and
// W row-major, f32 Y, M ≤ 64. Such a product is a stream of the weight (M ≤ 64 rows of X are a few hundred KB, read
// from L1 / L2); what bounds it is how many bytes of W are in flight. cuBLAS's tiles leave most of that on the
// table for N = 3072 … 8384 at these row counts (2.4–2.9 TB/s measured on an H200, the eighth session's ncu tables).
//
// A warp owns 16 output features (one m16 tile, W as the A operand of mma.m16n8k16) and walks its CTA's K range in
// steps of 32, holding kDepth steps of W in registers ahead of the tensor cores. The K order inside a step is
// permuted — the same way for W and X, so the sum is unchanged: lane (gid, quad) loads 16 bytes, k 8·quad … +7, of
// its rows gid and gid + 8 and of X's rows, and the two mma of the step take words 0–1 and 2–3 of those loads as
// the fragment's k pairs (2·quad, +1) and (2·quad + 8, +9). So every load is one 16-byte LDG straight into the
// fragment registers: no shared memory, no ldmatrix. X is read through L1 (the CTA's RT warps read the same X
// words); W bypasses L1.
//
// K splits (grid.y) for products with too few row tiles to fill the GPU: each split writes its partial [M, N] tile
// to the workspace; the CTA that finishes a row tile last (a counter per tile, reset by that CTA) adds the splits'
// partials in split order — deterministic, no atomics on the output, no second launch.
#include <cuda_bf16.h>

#include <cstdint>

#include "kernels.h"
#include "mma.cuh"

namespace {

constexpr int kDepth = 4;  // K steps of W in flight per warp

__device__ __forceinline__ uint4 ldStream(const __nv_bfloat16* p) {  // W: read once, kept out of L1
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

/**
 * One CTA: RT warps × 16 features (rows n0 … n0 + 16·RT − 1 of W), K range of split blockIdx.y, MT n8 tiles of X's
 * rows (MT·8 ≥ M). accumulate: Y += the product. parts [S, M, N] f32 and counters [gridDim.x] (zero on entry,
 * left zero) only for S = gridDim.y > 1.
 */
template <int MT, int RT>
__global__ void __launch_bounds__(RT * 32, 16 / RT) k_skinny_matmul(float* __restrict__ Y, const __nv_bfloat16* __restrict__ X,
                                                                 const __nv_bfloat16* __restrict__ W, int M, int N, int K, int kPer,
                                                                 int accumulate, float* __restrict__ parts, int* __restrict__ counters) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, quad = lane & 3;
  const int n0 = (blockIdx.x * RT + warp) * 16;
  const int S = gridDim.y, split = blockIdx.y;
  const int kBeg = split * kPer, kEnd = min(K, kBeg + kPer);
  const int nSteps = max(0, (kEnd - kBeg) / 32);
  const bool rows = n0 < N;  // warp-uniform: N is a multiple of 16
  float acc[MT][4];
#pragma unroll
  for (int t = 0; t < MT; t++) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.f;
  if (rows) {
    const __nv_bfloat16* w0 = W + (int64_t)(n0 + gid) * K + kBeg + 8 * quad;
    const __nv_bfloat16* w1 = w0 + (int64_t)8 * K;
    const __nv_bfloat16* xr[MT];
    bool xv[MT];
#pragma unroll
    for (int t = 0; t < MT; t++) {
      const int m = t * 8 + gid;
      xv[t] = m < M;
      xr[t] = X + (int64_t)(xv[t] ? m : 0) * K + kBeg + 8 * quad;
    }
    uint4 wa[kDepth], wb[kDepth];
#pragma unroll
    for (int d = 0; d < kDepth; d++)
      if (d < nSteps) wa[d] = ldStream(w0 + d * 32), wb[d] = ldStream(w1 + d * 32);
    for (int s0 = 0; s0 < nSteps; s0 += kDepth) {
#pragma unroll
      for (int d = 0; d < kDepth; d++) {
        const int st = s0 + d;
        if (st < nSteps) {
          const uint4 a = wa[d], b = wb[d];
          if (st + kDepth < nSteps) wa[d] = ldStream(w0 + (st + kDepth) * 32), wb[d] = ldStream(w1 + (st + kDepth) * 32);
          uint4 x[MT];
#pragma unroll
          for (int t = 0; t < MT; t++) x[t] = xv[t] ? __ldg(reinterpret_cast<const uint4*>(xr[t] + st * 32)) : make_uint4(0, 0, 0, 0);
          const uint32_t f0[4] = {a.x, b.x, a.y, b.y}, f1[4] = {a.z, b.z, a.w, b.w};
#pragma unroll
          for (int t = 0; t < MT; t++) {
            mma16816(acc[t], f0, x[t].x, x[t].y);
            mma16816(acc[t], f1, x[t].z, x[t].w);
          }
        }
      }
    }
  }
  // acc[t]: (feature n0 + gid (+8 for 2, 3), token t·8 + 2·quad (+1 for 1, 3))
  auto each = [&](auto&& f) {
#pragma unroll
    for (int t = 0; t < MT; t++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int m = t * 8 + 2 * quad + (e & 1), n = n0 + gid + (e >> 1) * 8;
        if (m < M) f(acc[t][e], (int64_t)m * N + n);
      }
  };
  if (S == 1) {
    if (rows) each([&](float v, int64_t i) { Y[i] = accumulate ? Y[i] + v : v; });
    return;
  }
  const int64_t plane = (int64_t)M * N;
  if (rows) each([&](float v, int64_t i) { parts[split * plane + i] = v; });
  __threadfence();
  __syncthreads();
  __shared__ int last;
  if (threadIdx.x == 0) last = atomicAdd(&counters[blockIdx.x], 1) == S - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  if (rows)
    each([&](float, int64_t i) {
      float v = 0.f;
      for (int p = 0; p < S; p++) v += __ldcg(parts + p * plane + i);
      Y[i] = accumulate ? Y[i] + v : v;
    });
  if (threadIdx.x == 0) counters[blockIdx.x] = 0;
}

}  // namespace

extern "C" {

int m1_skinny_matmul_handles(int M, int N, int K, const void* X, const void* W) {
  return M >= 1 && M <= 64 && N % 16 == 0 && N > 0 && K % 32 == 0 && K > 0 && reinterpret_cast<uintptr_t>(X) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(W) % 16 == 0;
}

int m1_skinny_matmul_tiles(int N, int rt) { return (N + 16 * rt - 1) / (16 * rt); }

cudaError_t m1_skinny_matmul(float* Y, const void* X, const void* W, int M, int N, int K, int rt, int splits, int accumulate,
                             float* parts, int* counters, cudaStream_t s) {
  if (!m1_skinny_matmul_handles(M, N, K, X, W) || (rt != 4 && rt != 8) || splits < 1) return cudaErrorInvalidValue;
  const int steps = K / 32, perSplit = (steps + splits - 1) / splits, S = (steps + perSplit - 1) / perSplit;
  if (S > 1 && (!parts || !counters)) return cudaErrorInvalidValue;
  const dim3 grid((unsigned)m1_skinny_matmul_tiles(N, rt), (unsigned)S);
  const auto* x = static_cast<const __nv_bfloat16*>(X);
  const auto* w = static_cast<const __nv_bfloat16*>(W);
  const int kPer = perSplit * 32;
#define SKINNY(MT, RT) k_skinny_matmul<MT, RT><<<grid, RT * 32, 0, s>>>(Y, x, w, M, N, K, kPer, accumulate, parts, counters)
#define SKINNY_RT(MT) (rt == 4 ? SKINNY(MT, 4) : SKINNY(MT, 8))
  if (M <= 8) SKINNY_RT(1);
  else if (M <= 16) SKINNY_RT(2);
  else if (M <= 32) SKINNY_RT(4);
  else SKINNY_RT(8);
#undef SKINNY_RT
#undef SKINNY
  return cudaGetLastError();
}

}  // extern "C"
