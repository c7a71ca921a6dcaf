// Tiled causal GQA attention forward on the tensor cores (bf16 operands, f32 accumulation and f32
// softmax): the path of m1_attention when the caller asks for bf16 products (the backend's
// "medium" f32 matmul precision, as autocast runs attention in bf16). Same semantics, shapes and
// outputs (out, lse) as k_flash_fwd in flash_attention.cu, whose f32 SIMT kernel stays the default.
//
// FlashAttention-2 structure on mma.sync.m16n8k16 (bf16 in, f32 accumulate). A block of 4 warps takes
// 64 queries of one (b, head); warp w owns query rows 16w..16w+15, and in every fragment lane
// (gid = lane / 4, quad = lane % 4) holds rows gid and gid + 8:
//   - Q stays in registers as A fragments for the whole key loop (read once from global, rounded);
//   - per 64-key tile the block stages K and V as bf16 [key][dim] in shared memory (coalesced f32
//     reads, 8-byte stores): K's B operand is pairs of adjacent bf16 (32-bit loads), V's is read
//     transposed by ldmatrix.trans;
//   - S = Q·Kᵀ lands in C fragments whose layout is the A layout of the next product: the softmax
//     (running max / sum per row, reduced over the 4 lanes of a quad) runs in registers and P goes
//     straight into P·V as bf16 without touching shared memory; O is 16 × Dh per warp in registers.
// Shared memory at Dh = 128: K, V [64][136] bf16 = 34 KiB. Row strides are padded (+8 bf16) so a
// warp's fragment loads and ldmatrix rows hit different banks.
#include <cuda_bf16.h>
#include <math_constants.h>

#include <cstdint>

#include "flash_attention.h"

namespace {

constexpr int kWarps = 4, kTile = 64;

template <int DH>
struct TcLayout {
  static constexpr int LDK = DH + 8;  // bf16 row stride of K and V [key][dim] (rows 16-byte aligned)
  static constexpr size_t k = (size_t)kTile * LDK * sizeof(__nv_bfloat16);
  static constexpr size_t bytes = 2 * k;
};

__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
__device__ __forceinline__ uint32_t ld32(const __nv_bfloat16* p) { return *reinterpret_cast<const uint32_t*>(p); }

/**
 * The B operand of an m16n8k16 product from a row-major [k][n] bf16 tile: ldmatrix.trans of the two
 * 8 × 8 blocks at rows k0..k0+7 and k0+8..k0+15, columns n0..n0+7 — lanes 0–15 give the row addresses
 * (row k0 + lane), every lane receives {rows k0 + 2·quad, +1; column n0 + gid} and the same 8 rows on.
 */
__device__ __forceinline__ void ldB_trans(uint32_t& b0, uint32_t& b1, const __nv_bfloat16* rowPtr) {
  const uint32_t addr = (uint32_t)__cvta_generic_to_shared(rowPtr);
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(b0), "=r"(b1) : "r"(addr));
}

/** d += a · b for one m16n8k16 tile (a: 4 regs of bf16 pairs, b: 2, d: 4 floats) */
__device__ __forceinline__ void mma16816(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <int DH>
__global__ void __launch_bounds__(kWarps * 32, 2)
k_flash_fwd_tc(float* __restrict__ out, float* __restrict__ lse, const float* __restrict__ q, const float* __restrict__ k,
               const float* __restrict__ v, const int* __restrict__ seg, int T, int Hq, int Hkv, float scale) {
  using L = TcLayout<DH>;
  constexpr int LDK = L::LDK, NKT = kTile / 8, NDT = DH / 8, KQ = DH / 16;
  extern __shared__ float4 smem4[];
  __nv_bfloat16* Ks = reinterpret_cast<__nv_bfloat16*>(smem4);
  __nv_bfloat16* Vs = reinterpret_cast<__nv_bfloat16*>(reinterpret_cast<unsigned char*>(smem4) + L::k);
  __shared__ int qSeg[kTile], kSeg[kTile];

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, quad = lane & 3;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kTile;  // the longest query tiles first
  const int h = blockIdx.y, b = blockIdx.z, g = h / (Hq / Hkv);
  const int nq = min(kTile, T - q0);
  const int64_t row0 = (int64_t)b * T, qStride = (int64_t)Hq * DH, kStride = (int64_t)Hkv * DH;
  const int r0 = warp * 16 + gid, r1 = r0 + 8;  // this lane's two rows in the query tile
  const int t0 = q0 + r0, t1 = q0 + r1;

  // Q as A fragments: for k-step kk, regs {row r0, dims 16kk + 2quad..+1}, {r1, same}, {r0, +8}, {r1, +8}
  uint32_t qa[KQ][4];
  {
    const float* qr0 = q + (row0 + t0) * qStride + (int64_t)h * DH;
    const float* qr1 = q + (row0 + t1) * qStride + (int64_t)h * DH;
#pragma unroll
    for (int kk = 0; kk < KQ; kk++) {
      const int d = 16 * kk + 2 * quad;
      float2 a = t0 < T ? *reinterpret_cast<const float2*>(qr0 + d) : make_float2(0.f, 0.f);
      float2 bq = t1 < T ? *reinterpret_cast<const float2*>(qr1 + d) : make_float2(0.f, 0.f);
      float2 c = t0 < T ? *reinterpret_cast<const float2*>(qr0 + d + 8) : make_float2(0.f, 0.f);
      float2 e = t1 < T ? *reinterpret_cast<const float2*>(qr1 + d + 8) : make_float2(0.f, 0.f);
      qa[kk][0] = pack2(a.x, a.y);
      qa[kk][1] = pack2(bq.x, bq.y);
      qa[kk][2] = pack2(c.x, c.y);
      qa[kk][3] = pack2(e.x, e.y);
    }
  }
  if (seg && threadIdx.x < kTile) qSeg[threadIdx.x] = threadIdx.x < nq ? seg[row0 + q0 + threadIdx.x] : 0;

  float o[NDT][4];
#pragma unroll
  for (int d = 0; d < NDT; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  float m0 = -CUDART_INF_F, m1 = -CUDART_INF_F, l0 = 0.f, l1 = 0.f;

  const int lastQuery = q0 + nq - 1;
  for (int k0 = 0; k0 <= lastQuery; k0 += kTile) {
    const int nk = min(kTile, T - k0);
    __syncthreads();  // every warp is done with the previous K / V tiles (and qSeg is visible)
    if (seg) {
      if (threadIdx.x < kTile) kSeg[threadIdx.x] = threadIdx.x < nk ? seg[row0 + k0 + threadIdx.x] : 0;
      __syncthreads();
      bool any = false;
      for (int e = threadIdx.x; e < kTile * kTile; e += kWarps * 32) {
        const int qi = e / kTile, kj = e % kTile;
        any |= k0 + kj <= q0 + qi && q0 + qi < T && kSeg[kj] == qSeg[qi];
      }
      if (!__syncthreads_or(any)) continue;
    }
    // stage K and V [key][dim] as bf16; keys past T are zeros
#pragma unroll 4
    for (int e = threadIdx.x; e < kTile * (DH / 4); e += kWarps * 32) {
      const int r = e / (DH / 4), c = (e % (DH / 4)) * 4;
      const int64_t off = (row0 + k0 + r) * kStride + (int64_t)g * DH + c;
      const float4 kv = r < nk ? *reinterpret_cast<const float4*>(k + off) : make_float4(0.f, 0.f, 0.f, 0.f);
      const float4 vv = r < nk ? *reinterpret_cast<const float4*>(v + off) : make_float4(0.f, 0.f, 0.f, 0.f);
      *reinterpret_cast<uint2*>(Ks + r * LDK + c) = make_uint2(pack2(kv.x, kv.y), pack2(kv.z, kv.w));
      *reinterpret_cast<uint2*>(Vs + r * LDK + c) = make_uint2(pack2(vv.x, vv.y), pack2(vv.z, vv.w));
    }
    __syncthreads();

    // S = Q·Kᵀ: n-tile j covers keys 8j..8j+7; B regs {keys 8j + gid, dims 16kk + 2quad..+1}, {.., +8}
    float sc[NKT][4];
#pragma unroll
    for (int j = 0; j < NKT; j++) {
      sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.f;
      const __nv_bfloat16* kr = Ks + (8 * j + gid) * LDK + 2 * quad;
#pragma unroll
      for (int kk = 0; kk < KQ; kk++) mma16816(sc[j], qa[kk], ld32(kr + 16 * kk), ld32(kr + 16 * kk + 8));
    }

    // mask + online softmax: this lane holds columns 8j + 2quad + {0, 1} of rows r0 (regs 0, 1) and r1 (2, 3)
    float mx0 = -CUDART_INF_F, mx1 = -CUDART_INF_F;
#pragma unroll
    for (int j = 0; j < NKT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int c = 8 * j + 2 * quad + (e & 1), rr = e < 2 ? r0 : r1, t = q0 + rr;
        const bool vis = k0 + c <= t && t < T && (!seg || kSeg[c] == qSeg[rr]);
        sc[j][e] = vis ? sc[j][e] * scale : -CUDART_INF_F;
        if (e < 2) mx0 = fmaxf(mx0, sc[j][e]);
        else mx1 = fmaxf(mx1, sc[j][e]);
      }
#pragma unroll
    for (int o2 = 1; o2 < 4; o2 <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, o2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, o2));
    }
    const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
    // a row with nothing visible so far keeps m = −inf: subtract 0 so exp gives 0, not NaN
    const float b0 = n0 == -CUDART_INF_F ? 0.f : n0, b1 = n1 == -CUDART_INF_F ? 0.f : n1;
    const float c0 = expf(m0 - b0), c1 = expf(m1 - b1);
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int j = 0; j < NKT; j++) {
      sc[j][0] = expf(sc[j][0] - b0);
      sc[j][1] = expf(sc[j][1] - b0);
      sc[j][2] = expf(sc[j][2] - b1);
      sc[j][3] = expf(sc[j][3] - b1);
      s0 += sc[j][0] + sc[j][1];
      s1 += sc[j][2] + sc[j][3];
    }
#pragma unroll
    for (int o2 = 1; o2 < 4; o2 <<= 1) {
      s0 += __shfl_xor_sync(0xffffffffu, s0, o2);
      s1 += __shfl_xor_sync(0xffffffffu, s1, o2);
    }
    l0 = l0 * c0 + s0;
    l1 = l1 * c1 + s1;
    m0 = n0;
    m1 = n1;
#pragma unroll
    for (int d = 0; d < NDT; d++) {
      o[d][0] *= c0;
      o[d][1] *= c0;
      o[d][2] *= c1;
      o[d][3] *= c1;
    }

    // O += P·V: k-step kk (keys 16kk..16kk+15) takes S tiles 2kk, 2kk+1 as its A fragment;
    // B regs {keys 16kk + 2quad..+1, dim 8d + gid}, {keys + 8, ..} by ldmatrix.trans from V
#pragma unroll
    for (int kk = 0; kk < kTile / 16; kk++) {
      const uint32_t pa[4] = {pack2(sc[2 * kk][0], sc[2 * kk][1]), pack2(sc[2 * kk][2], sc[2 * kk][3]),
                              pack2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]), pack2(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
      const __nv_bfloat16* vr = Vs + (16 * kk + (lane & 15)) * LDK;
#pragma unroll
      for (int d = 0; d < NDT; d++) {
        uint32_t b0, b1;
        ldB_trans(b0, b1, vr + 8 * d);
        mma16816(o[d], pa, b0, b1);
      }
    }
  }

  // l > 0 for rows < T: the diagonal key is always visible and its tile never skipped
  const int64_t hOff = (int64_t)h * DH + 2 * quad;
  if (t0 < T) {
    const float inv = 1.f / l0;
    float* orow = out + (row0 + t0) * qStride + hOff;
#pragma unroll
    for (int d = 0; d < NDT; d++) *reinterpret_cast<float2*>(orow + 8 * d) = make_float2(o[d][0] * inv, o[d][1] * inv);
    if (quad == 0) lse[((int64_t)b * Hq + h) * T + t0] = m0 + logf(l0);
  }
  if (t1 < T) {
    const float inv = 1.f / l1;
    float* orow = out + (row0 + t1) * qStride + hOff;
#pragma unroll
    for (int d = 0; d < NDT; d++) *reinterpret_cast<float2*>(orow + 8 * d) = make_float2(o[d][2] * inv, o[d][3] * inv);
    if (quad == 0) lse[((int64_t)b * Hq + h) * T + t1] = m1 + logf(l1);
  }
}

template <int DH>
cudaError_t launchFwdTc(float* out, float* lse, const float* q, const float* k, const float* v, const int* seg, int B, int T, int Hq,
                        int Hkv, float scale, cudaStream_t s) {
  static bool ready = false;
  const size_t smem = TcLayout<DH>::bytes;
  if (!ready) {
    cudaError_t e = cudaFuncSetAttribute(k_flash_fwd_tc<DH>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(k_flash_fwd_tc<DH>, cudaFuncAttributePreferredSharedMemoryCarveout, (int)cudaSharedmemCarveoutMaxShared);
    if (e != cudaSuccess) return e;
    ready = true;
  }
  dim3 grid((unsigned)((T + kTile - 1) / kTile), (unsigned)Hq, (unsigned)B);
  k_flash_fwd_tc<DH><<<grid, kWarps * 32, smem, s>>>(out, lse, q, k, v, seg, T, Hq, Hkv, scale);
  return cudaGetLastError();
}

}  // namespace

extern "C" cudaError_t m1_flash_attention_bf16(float* out, float* lse, const float* q, const float* k, const float* v, const int* seg,
                                               int B, int T, int Hq, int Hkv, int Dh, float scale, cudaStream_t s) {
  if ((int64_t)B * T * Hq == 0) return cudaSuccess;
  if (Hkv < 1 || Hq % Hkv != 0) return cudaErrorInvalidValue;
  if (Dh == 64) return launchFwdTc<64>(out, lse, q, k, v, seg, B, T, Hq, Hkv, scale, s);
  if (Dh == 128) return launchFwdTc<128>(out, lse, q, k, v, seg, B, T, Hq, Hkv, scale, s);
  return cudaErrorInvalidValue;
}
