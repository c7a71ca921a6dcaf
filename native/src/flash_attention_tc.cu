// Tiled causal GQA attention, forward and backward, on the tensor cores (bf16 operands, f32
// accumulation and f32 softmax): the path of m1_attention / m1_attention_bwd when the caller asks for
// bf16 products (the backend's "medium" f32 matmul precision, as autocast runs attention in bf16).
// Same semantics, shapes and outputs (out, lse; dq, dk, dv) as the kernels of flash_attention.cu,
// whose f32 SIMT kernels stay the default. The backward is described at its section below.
//
// FlashAttention-2 structure on mma.sync.m16n8k16 (bf16 in, f32 accumulate). K and V are first
// rounded to bf16 copies (one cast each per call: the blocks then stream half the bytes, since every
// query tile re-reads the key prefix). A block of 4 warps takes 128 queries of one (b, head); warp w
// owns query rows 32w..32w+31 as two m16 tiles, and in every fragment lane (gid = lane / 4, quad =
// lane % 4) holds rows gid and gid + 8 of each:
//   - Q is rounded to bf16 into shared memory once and read by ldmatrix per k-step;
//   - 64-key tiles of K and V [key][dim] are copied global → shared by cp.async into two stages, the
//     next tile's copy in flight while the current one is used; K's B operand comes by ldmatrix.x4 (two
//     k-steps), V's by ldmatrix.x4.trans (two dim tiles); every K and V fragment feeds both m16 tiles,
//     which halves the shared-memory reads per product against 16 rows per warp (the eighth session's
//     kernel, 8 warps × 16 rows, spent more cycles on ldmatrix than on mma: 64.8 → 56.5 ms of attention
//     forward per M1-3B training step on an H200);
//   - S = Q·Kᵀ lands in C fragments whose layout is the A layout of the next product: the softmax
//     (running max / sum per row, reduced over the 4 lanes of a quad) runs in registers on the raw
//     scores, each p one FFMA (s·scale·log2 e − max) and one ex2, and P goes straight into P·V as bf16
//     without touching shared memory; O is 32 × Dh per warp in registers;
//   - a warp whose 32 rows all precede a key tile (causal) skips its math for that tile.
// Shared memory at Dh = 128: 2 stages × (K + V) [64][136] bf16 + Q [128][136] = 102 KiB, two blocks per
// SM (≤ 255 registers a thread). Row strides are padded (+8 bf16) so ldmatrix rows hit different banks.
#include <cuda_bf16.h>
#include <math_constants.h>

#include <cstdint>
#include <cstdlib>

#include "async_copy.cuh"
#include "mma.cuh"
#include "flash_attention.h"
#include "kernels.h"
#include "runtime.h"
#include "warp.cuh"

namespace {

constexpr int kTile = 64;

/** ROWS rows of one head (row r of the tile at src + r·stride) → shared [ROWS][LD] by cp.async; rows ≥ valid are zeros */
template <int DH, int ROWS>
__device__ __forceinline__ void copyRowsAsync(__nv_bfloat16* dst, const __nv_bfloat16* src, int64_t stride, int valid) {
  constexpr int C8 = DH / 8, LD = DH + 8;
  for (int e = threadIdx.x; e < ROWS * C8; e += blockDim.x) {
    const int r = e / C8, c = (e % C8) * 8;
    const bool ok = r < valid;
    cpAsync16(dst + r * LD + c, ok ? src + r * stride + c : src, ok);
  }
}

/**
 * Block-wide: can any query row qi < nq of the tile at q0 see any key kj < nk of the tile at k0 (causal,
 * before T, same segment id)? Every thread of the block must call it: it ends in a barrier.
 */
__device__ __forceinline__ bool tileAnyVisible(int nq, int nk, int q0, int k0, int T, const int* qSeg, const int* kSeg) {
  bool any = false;
  for (int e = threadIdx.x; e < nq * nk; e += blockDim.x) {
    const int qi = e / nk, kj = e % nk;
    any |= k0 + kj <= q0 + qi && q0 + qi < T && kSeg[kj] == qSeg[qi];
  }
  return __syncthreads_or(any);
}

constexpr int kWarps = 4, kRowsW = 32, kRows = kWarps * kRowsW;  // 128-query tiles, 32 rows per warp

template <int DH>
struct TcLayout {
  static constexpr int LDK = DH + 8;
  static constexpr int tile = kTile * LDK;
  static constexpr int qtile = kRows * LDK;
  static constexpr size_t bytes = ((size_t)4 * tile + qtile) * sizeof(__nv_bfloat16);  // 2 stages × (K, V) + Q
};

template <int DH>
__global__ void __launch_bounds__(kWarps * 32, 2)
k_flash_fwd_tc(float* __restrict__ out, float* __restrict__ lse, const float* __restrict__ q, const __nv_bfloat16* __restrict__ kb,
                const __nv_bfloat16* __restrict__ vb, const int* __restrict__ seg, int T, int Hq, int Hkv, float scale) {
  using L = TcLayout<DH>;
  constexpr int LDK = L::LDK, NKT = kTile / 8, NDT = DH / 8, KQ = DH / 16, C8 = DH / 8;
  extern __shared__ float4 smem4[];
  __nv_bfloat16* Ks = reinterpret_cast<__nv_bfloat16*>(smem4);  // [2][kTile][LDK], then Vs the same, then Qs [kRows][LDK]
  __nv_bfloat16* Vs = Ks + 2 * L::tile;
  __nv_bfloat16* Qs = Vs + 2 * L::tile;
  __shared__ int qSeg[kRows], kSeg[2][kTile];

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, quad = lane & 3;
  const int nTilesQ = (T + kRows - 1) / kRows;
  const int q0 = (nTilesQ - 1 - (int)blockIdx.x / Hq) * kRows;  // longest query tiles of every head first
  const int h = (int)blockIdx.x % Hq, b = blockIdx.z, g = h / (Hq / Hkv);
  const int nq = min(kRows, T - q0);
  const int64_t row0 = (int64_t)b * T, qStride = (int64_t)Hq * DH, kStride = (int64_t)Hkv * DH;
  const int wr0 = warp * kRowsW;              // the warp's first row in the tile
  const int warpFirst = q0 + wr0, warpLast = warpFirst + kRowsW - 1;

  auto issue = [&](int it) {
    const int st = it & 1, k0 = it * kTile, nk = min(kTile, T - k0);
    const int64_t off = (row0 + k0) * kStride + (int64_t)g * DH;
    copyRowsAsync<DH, kTile>(Ks + st * L::tile, kb + off, kStride, nk);
    copyRowsAsync<DH, kTile>(Vs + st * L::tile, vb + off, kStride, nk);
    if (seg && threadIdx.x < kTile) kSeg[st][threadIdx.x] = threadIdx.x < nk ? seg[row0 + k0 + threadIdx.x] : 0;
  };

  const int lastQuery = q0 + nq - 1, nTiles = lastQuery / kTile + 1;
  issue(0);
  cpAsyncCommit();

  // Q rounded to bf16 into shared memory (rows past T are zeros); the loop's first barrier publishes it
  for (int e = threadIdx.x; e < kRows * C8; e += blockDim.x) {
    const int r = e / C8, c = (e % C8) * 8;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (r < nq) {
      const float4* src = reinterpret_cast<const float4*>(q + (row0 + q0 + r) * qStride + (int64_t)h * DH + c);
      const float4 a = src[0], c4 = src[1];
      v = make_uint4(pack2(a.x, a.y), pack2(a.z, a.w), pack2(c4.x, c4.y), pack2(c4.z, c4.w));
    }
    *reinterpret_cast<uint4*>(Qs + r * LDK + c) = v;
  }
  if (seg && threadIdx.x < kRows) qSeg[threadIdx.x] = threadIdx.x < nq ? seg[row0 + q0 + threadIdx.x] : 0;

  float o[2][NDT][4];
#pragma unroll
  for (int mi = 0; mi < 2; mi++)
#pragma unroll
    for (int d = 0; d < NDT; d++) o[mi][d][0] = o[mi][d][1] = o[mi][d][2] = o[mi][d][3] = 0.f;
  // running max (log2 units) and sum of rows {wr0 + 16mi + gid, + 8} as [mi][0 | 1]
  float m[2][2] = {{-CUDART_INF_F, -CUDART_INF_F}, {-CUDART_INF_F, -CUDART_INF_F}}, l[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
  const float scale2 = scale * 1.4426950408889634f;

  for (int it = 0; it < nTiles; it++) {
    if (it + 1 < nTiles) issue(it + 1);
    cpAsyncCommit();
    cpAsyncWaitOne();
    __syncthreads();
    const int st = it & 1, k0 = it * kTile;
    const __nv_bfloat16* Kt = Ks + st * L::tile;
    const __nv_bfloat16* Vt = Vs + st * L::tile;
    const int* ks = kSeg[st];
    bool work = k0 <= warpLast;
    if (seg) {
      const bool anyVisible = tileAnyVisible(kRows, kTile, q0, k0, T, qSeg, ks);
      work = work && anyVisible;
    }
    if (work) {
      // S = Q·Kᵀ for both m-tiles: each K fragment (ldmatrix.x4: two k-steps of 8 keys) feeds both
      float sc[2][NKT][4];
#pragma unroll
      for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int j = 0; j < NKT; j++) sc[mi][j][0] = sc[mi][j][1] = sc[mi][j][2] = sc[mi][j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < KQ; kk += 2) {
        uint32_t qa[2][2][4];
#pragma unroll
        for (int mi = 0; mi < 2; mi++) {
          ldA4<LDK>(qa[mi][0], Qs + (wr0 + 16 * mi) * LDK + 16 * kk, lane);
          ldA4<LDK>(qa[mi][1], Qs + (wr0 + 16 * mi) * LDK + 16 * (kk + 1), lane);
        }
#pragma unroll
        for (int j = 0; j < NKT; j++) {
          uint32_t b0, b1, b2, b3;
          ldB2steps<LDK>(b0, b1, b2, b3, Kt + 8 * j * LDK + 16 * kk, lane);
#pragma unroll
          for (int mi = 0; mi < 2; mi++) {
            mma16816(sc[mi][j], qa[mi][0], b0, b1);
            mma16816(sc[mi][j], qa[mi][1], b2, b3);
          }
        }
      }

      // mask (only tiles that reach past the warp's first query, or with segments / rows past T) + online softmax.
      // The scores stay unscaled: max over the raw scores (scale > 0 keeps the order), then each p is one FFMA
      // (s·scale2 − max) and one ex2 — the scale folded into the exponent's argument, as FlashAttention does
      const bool full = !seg && k0 + kTile - 1 <= warpFirst && warpLast < T;
#pragma unroll
      for (int mi = 0; mi < 2; mi++) {
        const int ra = wr0 + 16 * mi + gid, rb = ra + 8;
        float mx0 = -CUDART_INF_F, mx1 = -CUDART_INF_F;
        if (full) {
#pragma unroll
          for (int j = 0; j < NKT; j++) {
            mx0 = fmaxf(mx0, fmaxf(sc[mi][j][0], sc[mi][j][1]));
            mx1 = fmaxf(mx1, fmaxf(sc[mi][j][2], sc[mi][j][3]));
          }
        } else {
#pragma unroll
          for (int j = 0; j < NKT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
              const int c = 8 * j + 2 * quad + (e & 1), rr = e < 2 ? ra : rb, t = q0 + rr;
              const bool vis = k0 + c <= t && t < T && (!seg || ks[c] == qSeg[rr]);
              sc[mi][j][e] = vis ? sc[mi][j][e] : -CUDART_INF_F;
              if (e < 2) mx0 = fmaxf(mx0, sc[mi][j][e]);
              else mx1 = fmaxf(mx1, sc[mi][j][e]);
            }
        }
#pragma unroll
        for (int o2 = 1; o2 < 4; o2 <<= 1) {
          mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, o2));
          mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, o2));
        }
        const float n0 = fmaxf(m[mi][0], mx0 * scale2), n1 = fmaxf(m[mi][1], mx1 * scale2);
        const float b0 = n0 == -CUDART_INF_F ? 0.f : n0, b1 = n1 == -CUDART_INF_F ? 0.f : n1;
        const float c0 = ex2Fast(m[mi][0] - b0), c1 = ex2Fast(m[mi][1] - b1);
        float s0 = 0.f, s1 = 0.f;
#pragma unroll
        for (int j = 0; j < NKT; j++) {
          sc[mi][j][0] = ex2Fast(fmaf(sc[mi][j][0], scale2, -b0));
          sc[mi][j][1] = ex2Fast(fmaf(sc[mi][j][1], scale2, -b0));
          sc[mi][j][2] = ex2Fast(fmaf(sc[mi][j][2], scale2, -b1));
          sc[mi][j][3] = ex2Fast(fmaf(sc[mi][j][3], scale2, -b1));
          s0 += sc[mi][j][0] + sc[mi][j][1];
          s1 += sc[mi][j][2] + sc[mi][j][3];
        }
#pragma unroll
        for (int o2 = 1; o2 < 4; o2 <<= 1) {
          s0 += __shfl_xor_sync(0xffffffffu, s0, o2);
          s1 += __shfl_xor_sync(0xffffffffu, s1, o2);
        }
        l[mi][0] = l[mi][0] * c0 + s0;
        l[mi][1] = l[mi][1] * c1 + s1;
        m[mi][0] = n0;
        m[mi][1] = n1;
#pragma unroll
        for (int d = 0; d < NDT; d++) {
          o[mi][d][0] *= c0;
          o[mi][d][1] *= c0;
          o[mi][d][2] *= c1;
          o[mi][d][3] *= c1;
        }
      }

      // O += P·V: each V fragment (ldmatrix.x4.trans: two dim tiles of 16 keys) feeds both m-tiles
#pragma unroll
      for (int kk = 0; kk < kTile / 16; kk++) {
        uint32_t pa[2][4];
#pragma unroll
        for (int mi = 0; mi < 2; mi++) cToA(pa[mi], sc[mi][2 * kk], sc[mi][2 * kk + 1]);
#pragma unroll
        for (int d = 0; d < NDT; d += 2) {
          uint32_t b0, b1, b2, b3;
          ldB_trans2tiles<LDK>(b0, b1, b2, b3, Vt + 16 * kk * LDK + 8 * d, lane);
#pragma unroll
          for (int mi = 0; mi < 2; mi++) {
            mma16816(o[mi][d], pa[mi], b0, b1);
            mma16816(o[mi][d + 1], pa[mi], b2, b3);
          }
        }
      }
    }
    __syncthreads();
  }

  const int64_t hOff = (int64_t)h * DH + 2 * quad;
#pragma unroll
  for (int mi = 0; mi < 2; mi++)
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const int t = q0 + wr0 + 16 * mi + gid + 8 * i;
      if (t >= T) continue;
      const float inv = 1.f / l[mi][i];
      float* orow = out + (row0 + t) * qStride + hOff;
#pragma unroll
      for (int d = 0; d < NDT; d++) *reinterpret_cast<float2*>(orow + 8 * d) = make_float2(o[mi][d][2 * i] * inv, o[mi][d][2 * i + 1] * inv);
      if (quad == 0) lse[((int64_t)b * Hq + h) * T + t] = m[mi][i] * 0.6931471805599453f + logf(l[mi][i]);
    }
}

template <int DH>
cudaError_t launchFwdTc(float* out, float* lse, const float* q, const __nv_bfloat16* kb, const __nv_bfloat16* vb, const int* seg,
                        int B, int T, int Hq, int Hkv, float scale, cudaStream_t s) {
  static bool ready = false;
  const size_t smem = TcLayout<DH>::bytes;
  cudaError_t e = m1AllowSmem(k_flash_fwd_tc<DH>, smem, ready);
  if (e != cudaSuccess) return e;
  dim3 grid((unsigned)((T + kRows - 1) / kRows * Hq), 1u, (unsigned)B);  // blockIdx.x = tile rank · Hq + head
  k_flash_fwd_tc<DH><<<grid, kWarps * 32, smem, s>>>(out, lse, q, kb, vb, seg, T, Hq, Hkv, scale);
  return cudaGetLastError();
}

// ------------------------------------------------------------------------------------------------
// backward on the tensor cores
//
// FlashAttention-2: P = exp(scale·S − lse) is recomputed from the forward's lse and D = rowsum(dO∘O) taken
// from Dbuf (m1_flash_attention_rowdot). One kernel (k_flash_bwd_dkdv_tc) with blocks of 4 warps per
// 64-key tile, warp w owning 16 keys, lanes holding rows gid and gid + 8 as in the forward. A block streams
// 32-query tiles of Q and dO for every q head of the GQA group and does 5 products per tile:
//   Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ (K, V fragments from shared memory); Pᵀ, dSᵀ = Pᵀ∘(dPᵀ − D) in f32;
//   dV += Pᵀ·dO, dK += dSᵀ·Q (dO and Q by ldmatrix.trans), kept in registers for the whole loop;
//   dQ_tile (32 queries × Dh) = dS·K: each warp stores its dSᵀ rows (its 16 keys × 32 queries, the same
//   bf16 pairs that feed dK) to a shared [64 keys][40] tile, a barrier, then warp w computes the 32
//   queries × dims [w·Dh/4, (w+1)·Dh/4) over the 64 keys: dS as the A operand by ldmatrix.x4.trans of
//   the dSᵀ tile, K as the B operand by ldmatrix.x4.trans of the block's [key][dim] K tile. The partial
//   (× scale) goes to the f32 dq with red.global.add.v4.f32: lane pairs swap halves by one shuffle so
//   each lane holds 4 adjacent dims of one row (16-byte reductions, half the instructions of float2 ones).
// dq is zeroed first (cudaMemsetAsync on the stream) and receives one partial per (q head, query, key
// tile) from the blocks of different key tiles: atomics, because those blocks run concurrently and no
// block owns a query row. The f32 sums therefore land in a nondeterministic order: dq differs from run to
// run in its last bits (dk and dv stay deterministic). The price is Dh f32 reductions per (q head, query,
// 64-key tile) that the query can see (skipped with the block's tile when no pair of it is visible; a query
// tile's rows past T are not written). The streamed tiles go global → shared by cp.async into two stages,
// as the forward's K and V.
// The former two-kernel scheme (dQ per query tile, dK / dV per key tile: 7 products, no atomics) is in git
// history; measured slower: 49.0 vs 39.5 ms of attention backward per M1-3B training step at seq 8192 on an H200.

constexpr int kBwdWarps = 4, kBwdRows = 16 * kBwdWarps, kBwdTile = 32, kBwdThreads = kBwdWarps * 32;

template <int DH>
struct BwdLayout {
  static constexpr int LD = DH + 8;                 // padded bf16 row stride (16-byte aligned rows)
  static constexpr int tile = kBwdTile * LD;        // a streamed [32][LD] tile
  static constexpr int fixed = kBwdRows * LD;       // the block's own [64][LD] K or V
  static constexpr size_t dkdvBytes = ((size_t)2 * fixed + 4 * tile) * sizeof(__nv_bfloat16);  // K, V + 2 stages × (Q, dO)
  static constexpr int LDS = kBwdTile + 8;          // dSᵀ [64 keys][LDS] (80-byte rows: conflict-free)
  static constexpr size_t fusedBytes = dkdvBytes + (size_t)kBwdRows * LDS * sizeof(__nv_bfloat16);
};

/**
 * The A operand (16 m × 16 k) of an m16n8k16 product from a row-major [k][m] bf16 tile (A stored
 * transposed), by one ldmatrix.x4.trans. `tile` points at (row k0, column m0). Matrices 0–3 are
 * (m 0–7, k 0–7), (m 8–15, k 0–7), (m 0–7, k 8–15), (m 8–15, k 8–15): lane l gives the address of stored
 * row k0 + (l & 7) + 8·(l / 16), column m0 + 8·((l / 8) & 1), and receives {m gid; k 2quad, +1} of each.
 */
template <int LD>
__device__ __forceinline__ void ldA_trans(uint32_t* a, const __nv_bfloat16* tile, int lane) {
  const uint32_t addr = (uint32_t)__cvta_generic_to_shared(tile + ((lane & 7) + 8 * (lane >> 4)) * LD + 8 * ((lane >> 3) & 1));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(addr));
}

/**
 * *p += v (4 floats, p 16-byte aligned) as one fire-and-forget global reduction (sm_90; the compute_80 PTX that
 * binding.gyp also embeds gets four scalar ones, which compile to RED as their results are unused)
 */
__device__ __forceinline__ void redAdd4(float* p, float4 v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v4.f32 [%0], {%1,%2,%3,%4};\n" ::"l"(p), "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w) : "memory");
#else
  atomicAdd(p, v.x);
  atomicAdd(p + 1, v.y);
  atomicAdd(p + 2, v.z);
  atomicAdd(p + 3, v.w);
#endif
}

/** A fragment (rows p0, p1 = p0 + 8; k columns col..col+1 and col+8..col+9) from row-major bf16 rows */
__device__ __forceinline__ void ldA(uint32_t* a, const __nv_bfloat16* p0, const __nv_bfloat16* p1, int col) {
  a[0] = ld32(p0 + col);
  a[1] = ld32(p1 + col);
  a[2] = ld32(p0 + col + 8);
  a[3] = ld32(p1 + col + 8);
}

/**
 * dK, dV for 64 keys of kv head g, row b: streams the query tiles at or after the key tile for every q head of the group,
 * and dQ += dS·K for every streamed query tile, reduced into dq (zeroed beforehand) by atomics.
 */
template <int DH>
__global__ void __launch_bounds__(kBwdThreads, 2)
k_flash_bwd_dkdv_tc(float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv, const __nv_bfloat16* __restrict__ qb,
                    const __nv_bfloat16* __restrict__ kb, const __nv_bfloat16* __restrict__ vb, const __nv_bfloat16* __restrict__ dob,
                    const float* __restrict__ lse, const float* __restrict__ Dbuf, const int* __restrict__ seg, int T, int Hq, int Hkv,
                    float scale) {
  using L = BwdLayout<DH>;
  constexpr int LD = L::LD, KQ = DH / 16, NDT = DH / 8, NQT = kBwdTile / 8;
  extern __shared__ float4 smem4[];
  __nv_bfloat16* Ks = reinterpret_cast<__nv_bfloat16*>(smem4);  // [kBwdRows][LD]
  __nv_bfloat16* Vs = Ks + L::fixed;                             // [kBwdRows][LD]
  __nv_bfloat16* Qs = Vs + L::fixed;                             // [2][kBwdTile][LD]
  __nv_bfloat16* Os = Qs + 2 * L::tile;                          // dO, [2][kBwdTile][LD]
  __nv_bfloat16* dsT = Os + 2 * L::tile;                         // dSᵀ [kBwdRows][LDS]
  constexpr int LDS = L::LDS;
  __shared__ float qL[2][kBwdTile], qD[2][kBwdTile];
  __shared__ int kSeg[kBwdRows], qSeg[2][kBwdTile];
  const float scale2 = scale * 1.4426950408889634f;  // P = exp2(scale2·S − lse·log2(e))

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, quad = lane & 3;
  // tile 0 sees every query: the longest blocks start first. blockIdx.x = tile·Hkv + g, the kv heads fastest, so the
  // longest tiles of every head start in the first wave (with the heads in blockIdx.y the last heads' long tiles would
  // start late and run alone at the end)
  const int k0 = (int)blockIdx.x / Hkv * kBwdRows;
  const int g = (int)blockIdx.x % Hkv, b = blockIdx.z, group = Hq / Hkv;
  const int nk = min(kBwdRows, T - k0);
  const int64_t row0 = (int64_t)b * T, qStride = (int64_t)Hq * DH, kStride = (int64_t)Hkv * DH;
  const int c0 = warp * 16 + gid, c1 = c0 + 8;  // this lane's key rows in the tile
  const int warpFirst = k0 + warp * 16;
  const int nQt = (T - k0 + kBwdTile - 1) / kBwdTile, nIt = group * nQt;

  auto issue = [&](int it) {
    const int st = it & 1, h = g * group + it / nQt, q0 = k0 + (it % nQt) * kBwdTile, nq = min(kBwdTile, T - q0);
    const int64_t off = (row0 + q0) * qStride + (int64_t)h * DH;
    copyRowsAsync<DH, kBwdTile>(Qs + st * L::tile, qb + off, qStride, nq);
    copyRowsAsync<DH, kBwdTile>(Os + st * L::tile, dob + off, qStride, nq);
    if (threadIdx.x < kBwdTile) {
      const bool ok = (int)threadIdx.x < nq;
      const int64_t sr = ((int64_t)b * Hq + h) * T + q0 + threadIdx.x;
      qL[st][threadIdx.x] = ok ? lse[sr] * 1.4426950408889634f : 0.f;  // log2 units (P by exp2 below)
      qD[st][threadIdx.x] = ok ? Dbuf[sr] : 0.f;
      if (seg) qSeg[st][threadIdx.x] = ok ? seg[row0 + q0 + threadIdx.x] : 0;
    }
  };
  // the block's K and V ride in the first copy group with the first query tile
  const int64_t kOff = (row0 + k0) * kStride + (int64_t)g * DH;
  copyRowsAsync<DH, kBwdRows>(Ks, kb + kOff, kStride, nk);
  copyRowsAsync<DH, kBwdRows>(Vs, vb + kOff, kStride, nk);
  if (seg && threadIdx.x < kBwdRows) kSeg[threadIdx.x] = (int)threadIdx.x < nk ? seg[row0 + k0 + threadIdx.x] : 0;
  issue(0);
  cpAsyncCommit();

  float dka[NDT][4], dva[NDT][4];
#pragma unroll
  for (int d = 0; d < NDT; d++) dka[d][0] = dka[d][1] = dka[d][2] = dka[d][3] = dva[d][0] = dva[d][1] = dva[d][2] = dva[d][3] = 0.f;
  const __nv_bfloat16* kr0 = Ks + c0 * LD + 2 * quad;
  const __nv_bfloat16* kr1 = Ks + c1 * LD + 2 * quad;
  const __nv_bfloat16* vr0 = Vs + c0 * LD + 2 * quad;
  const __nv_bfloat16* vr1 = Vs + c1 * LD + 2 * quad;

  for (int it = 0; it < nIt; it++) {
    if (it + 1 < nIt) issue(it + 1);
    cpAsyncCommit();
    cpAsyncWaitOne();
    __syncthreads();
    const int st = it & 1, q0 = k0 + (it % nQt) * kBwdTile;
    const __nv_bfloat16* Qt = Qs + st * L::tile;
    const __nv_bfloat16* Ot = Os + st * L::tile;
    const float* ql = qL[st];
    const float* qd = qD[st];
    const int* qs = qSeg[st];
    // block-uniform: some (query, key) pair of the tiles is visible (tileAnyVisible is reached by every thread)
    const bool blockWork = !seg || tileAnyVisible(kBwdTile, kBwdRows, q0, k0, T, qs, kSeg);
    // warp-uniform: a query of the tile can see a key of the warp
    const bool work = blockWork && q0 + kBwdTile - 1 >= warpFirst && warpFirst < T;
    if (work) {
      // Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ: rows = the warp's 16 keys, n-tile j = queries 8j..8j+7
      float s[NQT][4], dp[NQT][4];
#pragma unroll
      for (int j = 0; j < NQT; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < KQ; kk += 2) {  // two k-steps at a time: Q's and dO's B operands by ldmatrix.x4
        uint32_t ka[4], va[4], ka2[4], va2[4];
        ldA(ka, kr0, kr1, 16 * kk);
        ldA(va, vr0, vr1, 16 * kk);
        ldA(ka2, kr0, kr1, 16 * kk + 16);
        ldA(va2, vr0, vr1, 16 * kk + 16);
#pragma unroll
        for (int j = 0; j < NQT; j++) {
          uint32_t b0, b1, b2, b3;
          ldB2steps<LD>(b0, b1, b2, b3, Qt + 8 * j * LD + 16 * kk, lane);
          mma16816(s[j], ka, b0, b1);
          mma16816(s[j], ka2, b2, b3);
          ldB2steps<LD>(b0, b1, b2, b3, Ot + 8 * j * LD + 16 * kk, lane);
          mma16816(dp[j], va, b0, b1);
          mma16816(dp[j], va2, b2, b3);
        }
      }
      // Pᵀ and dSᵀ = Pᵀ∘(dPᵀ − D) (unscaled); this lane: keys c0 (regs 0, 1) and c1 (2, 3), queries 8j + 2quad + {0, 1}
#pragma unroll
      for (int j = 0; j < NQT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int qi = 8 * j + 2 * quad + (e & 1), kc = e < 2 ? c0 : c1, t = q0 + qi;
          const bool vis = k0 + kc <= t && t < T && (!seg || kSeg[kc] == qs[qi]);
          const float p = vis ? ex2Fast(fmaf(s[j][e], scale2, -ql[qi])) : 0.f;
          s[j][e] = p;
          dp[j][e] = p * (dp[j][e] - qd[qi]);
        }
      // dV += Pᵀ·dO, dK += dSᵀ·Q: k-step kk = queries 16kk..16kk+15
#pragma unroll
      for (int kk = 0; kk < kBwdTile / 16; kk++) {
        uint32_t pa[4], sa[4];
        cToA(pa, s[2 * kk], s[2 * kk + 1]);
        cToA(sa, dp[2 * kk], dp[2 * kk + 1]);
        // dSᵀ rows c0 (sa[0], sa[2]) and c1 = c0 + 8 (sa[1], sa[3]), queries 16kk + 2quad..+1 and +8: 32-bit stores
        __nv_bfloat16* d0 = dsT + c0 * LDS + 16 * kk + 2 * quad;
        *reinterpret_cast<uint32_t*>(d0) = sa[0];
        *reinterpret_cast<uint32_t*>(d0 + 8 * LDS) = sa[1];
        *reinterpret_cast<uint32_t*>(d0 + 8) = sa[2];
        *reinterpret_cast<uint32_t*>(d0 + 8 * LDS + 8) = sa[3];
        mmaRowsTrans<DH>(dva, pa, Ot + 16 * kk * LD, lane);
        mmaRowsTrans<DH>(dka, sa, Qt + 16 * kk * LD, lane);
      }
    }
    if (blockWork) {  // block-uniform
      __syncthreads();  // every working warp's dSᵀ rows are in dsT
      // dQ (32 queries × Dh) = dS·K over the 64 keys: warp w takes all 32 queries (m-blocks 0, 1) × dims
      // [w·Dh/4, (w+1)·Dh/4) (NDQ n-tiles); k-step ks = keys 16ks..16ks+15, the rows warp ks wrote.
      constexpr int NDQ = DH / 32;
      float dqa[2][NDQ][4];
#pragma unroll
      for (int mb = 0; mb < 2; mb++)
#pragma unroll
        for (int j = 0; j < NDQ; j++) dqa[mb][j][0] = dqa[mb][j][1] = dqa[mb][j][2] = dqa[mb][j][3] = 0.f;
      const __nv_bfloat16* kCols = Ks + warp * (DH / 4);
#pragma unroll
      for (int ks = 0; ks < kBwdRows / 16; ks++) {
        const int kf = k0 + 16 * ks;
        if (q0 + kBwdTile - 1 < kf || kf >= T) continue;  // warp ks had no work (its dSᵀ rows are stale): block-uniform
        uint32_t a0[4], a1[4];
        ldA_trans<LDS>(a0, dsT + 16 * ks * LDS, lane);       // queries 0..15
        ldA_trans<LDS>(a1, dsT + 16 * ks * LDS + 16, lane);  // queries 16..31
#pragma unroll
        for (int p = 0; p < NDQ / 2; p++) {
          uint32_t b0, b1, b2, b3;
          ldB_trans2tiles<LD>(b0, b1, b2, b3, kCols + 16 * ks * LD + 16 * p, lane);
          mma16816(dqa[0][2 * p], a0, b0, b1);
          mma16816(dqa[0][2 * p + 1], a0, b2, b3);
          mma16816(dqa[1][2 * p], a1, b0, b1);
          mma16816(dqa[1][2 * p + 1], a1, b2, b3);
        }
      }
      // × scale into dq: lanes quad, quad ^ 1 swap halves so that the even one holds row gid, dims 2quad..2quad+3
      // and the odd one row gid + 8, dims 2(quad − 1)..2quad + 1; one 16-byte reduction each per n-tile
      const int h = g * group + it / nQt;
      const bool odd = quad & 1;
      const int64_t colOff = (int64_t)h * DH + warp * (DH / 4) + 2 * (quad & 2);
#pragma unroll
      for (int mb = 0; mb < 2; mb++) {
        const int t = q0 + 16 * mb + gid + (odd ? 8 : 0);
        float* row = dq + (row0 + min(t, T - 1)) * qStride + colOff;
#pragma unroll
        for (int j = 0; j < NDQ; j++) {
          const float* c = dqa[mb][j];
          const float x = __shfl_xor_sync(0xffffffffu, odd ? c[0] : c[2], 1);
          const float y = __shfl_xor_sync(0xffffffffu, odd ? c[1] : c[3], 1);
          const float4 v = odd ? make_float4(x * scale, y * scale, c[2] * scale, c[3] * scale)
                               : make_float4(c[0] * scale, c[1] * scale, x * scale, y * scale);
          if (t < T) redAdd4(row + 8 * j, v);
        }
      }
    }
    __syncthreads();  // every warp is done with this stage (and dsT) before the next issue() overwrites it
  }

  const int cs[2] = {c0, c1};
#pragma unroll
  for (int i = 0; i < 2; i++) {
    if (cs[i] >= nk) continue;
    const int64_t o = (row0 + k0 + cs[i]) * kStride + (int64_t)g * DH + 2 * quad;
#pragma unroll
    for (int d = 0; d < NDT; d++) {
      *reinterpret_cast<float2*>(dk + o + 8 * d) = make_float2(dka[d][2 * i] * scale, dka[d][2 * i + 1] * scale);
      *reinterpret_cast<float2*>(dv + o + 8 * d) = make_float2(dva[d][2 * i], dva[d][2 * i + 1]);
    }
  }
}

template <int DH>
cudaError_t launchBwdTc(float* dq, float* dk, float* dv, const __nv_bfloat16* qb, const __nv_bfloat16* kb, const __nv_bfloat16* vb,
                        const __nv_bfloat16* dob, const float* lse, const float* Dbuf, const int* seg, int B, int T, int Hq, int Hkv,
                        float scale, cudaStream_t s) {
  using L = BwdLayout<DH>;
  const unsigned tiles = (unsigned)((T + kBwdRows - 1) / kBwdRows);
  static bool ready = false;
  cudaError_t e = m1AllowSmem(k_flash_bwd_dkdv_tc<DH>, L::fusedBytes, ready);
  // dq receives the blocks' partial sums by atomics: zeroed first, on the same stream
  if (e == cudaSuccess) e = cudaMemsetAsync(dq, 0, sizeof(float) * (size_t)B * T * Hq * DH, s);
  if (e != cudaSuccess) return e;
  const dim3 grid(tiles * (unsigned)Hkv, 1u, (unsigned)B);  // blockIdx.x = key tile · Hkv + kv head
  k_flash_bwd_dkdv_tc<DH><<<grid, kBwdThreads, L::fusedBytes, s>>>(dq, dk, dv, qb, kb, vb, dob, lse, Dbuf, seg, T, Hq, Hkv, scale);
  return cudaGetLastError();
}

// ------------------------------------------------------------------------------------------------
// forward on Hopper's warpgroup MMA (wgmma), head dim 128: the path of m1_flash_attention_bf16 on sm_90
//
// The same FlashAttention-2 algorithm, with both products as wgmma.mma_async (m64n128k16, bf16 in, f32
// accumulate) issued by a warpgroup (4 warps) at once, instead of mma.sync tiles of 16 × 8 per warp:
//   - a block of 2 warpgroups (256 threads) takes 128 queries of one (b, head); warpgroup w owns rows
//     64w..64w+63, warp i of it rows 16i..16i+15, and a lane holds rows gid and gid + 8 of its warp's 16 in
//     the accumulator layout (per 8-column block j: (row gid, cols 8j + 2·quad, +1), (row gid + 8, same));
//   - S = Q·Kᵀ for a 128-key tile: 8 wgmma k-steps over the head dim, both operands from shared memory;
//   - the online softmax runs on S in registers as in k_flash_fwd_tc (raw scores, one FFMA + one ex2 per p);
//   - O += P·V: P goes from the S registers straight into the A operand of the register form of wgmma (the
//     accumulator layout of 16 keys is the A layout of a k-step), V as the shared-memory B operand;
//   - wgmma reads shared memory through descriptors of the canonical K-major layout with the 128-byte
//     swizzle: a tile is stored as blocks of [128 rows][64 bf16] (128-byte rows, 1024-byte aligned), the 16-byte
//     chunk c of row r at r·128 + ((c ⊕ (r mod 8)) · 16). A k-step of 16 elements advances the start address
//     by 32 bytes inside the block. Both operands of both products must be K-major (the reduction index
//     contiguous): Q [query][dim] and K [key][dim] are; for P·V the reduction runs over keys, so V is first
//     rounded into a transposed bf16 copy Vᵀ [b][kv head][dim][key] (k_cast_transpose_v, keys padded to a
//     multiple of 128 with zeros), whose [dim][key] tiles are K-major;
//   - iteration j issues Q·Kᵀ of tile j, then P·V of tile j − 1, and waits for Q·Kᵀ only: the softmax of tile j runs
//     while P·V is on the tensor cores (FlashAttention-3's overlap inside a warpgroup); O is rescaled after it (not
//     where no row max of the warp moved: the factor is then exactly 1);
//   - 128-key tiles of K and Vᵀ come global → shared by cp.async into two stages each, K one tile ahead of V (K of
//     tile j + 1 and V of tile j in flight during iteration j); the stages are handed over by mbarriers (landed:
//     cp.async.mbarrier.arrive; read: an arrive after the wgmma wait), not block barriers, so the two warpgroups
//     need not run in step; a thread's fence.proxy.async after the wait makes the copies visible to wgmma;
//   - the warpgroups take turns at issuing their products (ping-pong, named barriers 1 and 2): one's softmax runs
//     while the other's products are on the tensor cores.
// Shared memory: Q 32 KiB + 2 stages × (K 32 KiB + Vᵀ 32 KiB) = 160 KiB, one block per SM, 2 warpgroups, 254 registers.
// Same semantics, outputs and numerics as k_flash_fwd_tc (q, k, v, P rounded to bf16; f32 softmax and sums).

constexpr int kWgRows = 128, kWgKeys = 128, kWgDh = 128, kWgThreads = 256;
constexpr uint32_t kSwBlock = 128 * 128;                          // one [128 rows][64 bf16] swizzled block: 16 KiB
constexpr size_t kWgSmem = (size_t)(2 + 2 * 4) * kSwBlock + 1024;  // Q (2 blocks) + 2 stages × (K, Vᵀ: 2 blocks each) + alignment

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define M1_WGMMA 1
#endif

#ifdef M1_WGMMA
/** byte offset of 16-byte chunk c (0–7) of row r in a 128-byte-swizzled block */
__device__ __forceinline__ uint32_t swz128(int r, int c) { return (uint32_t)(r * 128 + ((c ^ (r & 7)) << 4)); }

/**
 * One thread's 8 chunks of a 128-row tile: chunk u = 16 bytes from src + u · stride (global, bytes) to shared dst + u · 2048
 * by cp.async (L2 only); bytes[u] 0 writes zeros. One asm block, the global address stepped inside it: written as 8 calls,
 * the compiler kept all 8 addresses of every stage in registers across the loop, which spilled.
 */
__device__ __forceinline__ void cpRounds(uint32_t dst, const void* src, int64_t stride, const int (&bytes)[8]) {
  asm volatile(
      "{\n.reg .b64 a;\nmov.b64 a, %1;\n"
      "cp.async.cg.shared.global [%0], [a], 16, %3;\nadd.s64 a, a, %2;\n"
      "cp.async.cg.shared.global [%0+2048], [a], 16, %4;\nadd.s64 a, a, %2;\n"
      "cp.async.cg.shared.global [%0+4096], [a], 16, %5;\nadd.s64 a, a, %2;\n"
      "cp.async.cg.shared.global [%0+6144], [a], 16, %6;\nadd.s64 a, a, %2;\n"
      "cp.async.cg.shared.global [%0+8192], [a], 16, %7;\nadd.s64 a, a, %2;\n"
      "cp.async.cg.shared.global [%0+10240], [a], 16, %8;\nadd.s64 a, a, %2;\n"
      "cp.async.cg.shared.global [%0+12288], [a], 16, %9;\nadd.s64 a, a, %2;\n"
      "cp.async.cg.shared.global [%0+14336], [a], 16, %10;\n}\n" ::"r"(dst),
      "l"(src), "l"(stride), "r"(bytes[0]), "r"(bytes[1]), "r"(bytes[2]), "r"(bytes[3]), "r"(bytes[4]), "r"(bytes[5]), "r"(bytes[6]),
      "r"(bytes[7]));
}

/** mbarrier (shared memory, CTA scope): init with an arrival count, arrive, arrive when this thread's cp.async copies land, wait */
__device__ __forceinline__ void mbarInit(uint32_t bar, int count) { asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count)); }
__device__ __forceinline__ void mbarArrive(uint32_t bar) { asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory"); }
__device__ __forceinline__ void mbarArriveCopies(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
/** until the phase of parity `parity` has completed */
__device__ __forceinline__ void mbarWait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT:\nmbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n@!done bra WAIT;\n}\n" ::"r"(bar), "r"(parity)
      : "memory");
}
/** 4 bytes global → shared by cp.async (through L1, the only mode below 16 bytes); `valid` false writes zeros */
__device__ __forceinline__ void cpAsync4To(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0));
}

/**
 * A wgmma shared-memory descriptor: K-major, 128-byte swizzle (bits 62–63: 1), 8-row core-matrix groups 1024 bytes apart
 * (stride byte offset, bits 32–45: 1024 / 16), leading byte offset 1 (unused with this swizzle), start address / 16 in
 * bits 0–13. Built in an asm block right where it is used: computed in C++, the compiler hoisted the 48 descriptors of
 * the loop (64-bit each) into registers, which spilled.
 */
__device__ __forceinline__ uint64_t wgDesc(uint32_t saddr) {
  uint64_t d;
  asm volatile("{\n.reg .b32 lo;\nbfe.u32 lo, %1, 4, 14;\nor.b32 lo, lo, 0x10000;\nmov.b64 %0, {lo, %2};\n}\n" : "=l"(d) : "r"(saddr), "n"(0x40000040));
  return d;
}

__device__ __forceinline__ void wgFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgCommit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgWaitAll() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
/** keeps the compiler from moving any use of the accumulators across this point (after a wait, before a fence) */
__device__ __forceinline__ void wgPin(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; i++) asm volatile("" : "+f"(d[i])::"memory");
}

#define M1_WG_D64                                                                                                        \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, " \
  "%25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "   \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define M1_WG_OUT64(d)                                                                                                     \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]),     \
      "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),     \
      "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),     \
      "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),     \
      "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]),     \
      "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),     \
      "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

/** d (+)= A·B, m64n128k16, A and B from shared memory (descriptors); accumulate = 0 overwrites d */
__device__ __forceinline__ void wgmmaSS(float (&d)[64], uint64_t a, uint64_t b, int accumulate) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " M1_WG_D64 ", %64, %65, p, 1, 1, 0, 0;\n}\n"
               : M1_WG_OUT64(d)
               : "l"(a), "l"(b), "r"(accumulate));
}
/** d += A·B, m64n128k16, A from registers (4 bf16 pairs a lane, the mma.sync A layout per warp), B from shared memory */
__device__ __forceinline__ void wgmmaRS(float (&d)[64], const uint32_t (&a)[4], uint64_t b) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " M1_WG_D64 ", {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
               : M1_WG_OUT64(d)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}
#undef M1_WG_OUT64
#undef M1_WG_D64
#endif

/** V [B, T, Hkv, 128] f32 → Vᵀ [B, Hkv, 128, Tp] bf16 (keys T … Tp − 1 zero), through a [32 keys][128 dims] shared tile */
__global__ void k_cast_transpose_v(__nv_bfloat16* __restrict__ vt, const float* __restrict__ v, int T, int Tp, int Hkv) {
  __shared__ float tile[32][kWgDh + 1];
  const int t0 = blockIdx.x * 32, hk = blockIdx.y, b = blockIdx.z;
  for (int e = threadIdx.x; e < 32 * kWgDh; e += blockDim.x) {
    const int r = e / kWgDh, d = e % kWgDh, t = t0 + r;
    tile[r][d] = t < T ? v[(((int64_t)b * T + t) * Hkv + hk) * kWgDh + d] : 0.f;
  }
  __syncthreads();
  __nv_bfloat16* dst = vt + ((int64_t)b * Hkv + hk) * kWgDh * Tp + t0;
  for (int e = threadIdx.x; e < 32 * kWgDh; e += blockDim.x) {
    const int d = e / 32, r = e % 32;
    dst[(int64_t)d * Tp + r] = __float2bfloat16_rn(tile[r][d]);
  }
}

__global__ void __launch_bounds__(kWgThreads, 1)
k_flash_fwd_wgmma(float* __restrict__ out, float* __restrict__ lse, const float* __restrict__ q, const __nv_bfloat16* __restrict__ kb,
                  const __nv_bfloat16* __restrict__ vt, const int* __restrict__ seg, int T, int Tp, int Hq, int Hkv, float scale) {
#ifdef M1_WGMMA
  extern __shared__ __align__(16) uint8_t wgSmem[];
  __shared__ int qSeg[kWgRows], kSeg[2][kWgKeys];
  const uint32_t kSeg0 = (uint32_t)__cvta_generic_to_shared(&kSeg[0][0]);
  const uint32_t raw = (uint32_t)__cvta_generic_to_shared(wgSmem);
  const uint32_t base = (raw + 1023u) & ~1023u;  // the swizzle pattern repeats every 1024 bytes: blocks start on it
  uint8_t* const gbase = wgSmem + (base - raw);
  const uint32_t sQ = base;
  const auto sK = [&](int st) { return base + (uint32_t)(2 + 4 * st) * kSwBlock; };
  const auto sV = [&](int st) { return base + (uint32_t)(4 + 4 * st) * kSwBlock; };

  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, gid = lane >> 2, quad = lane & 3;
  const int nTilesQ = (T + kWgRows - 1) / kWgRows;
  const int q0 = (nTilesQ - 1 - (int)blockIdx.x / Hq) * kWgRows;  // longest query tiles of every head first
  const int h = (int)blockIdx.x % Hq, b = blockIdx.z, g = h / (Hq / Hkv);
  const int nq = min(kWgRows, T - q0);
  const int64_t row0 = (int64_t)b * T, qStride = (int64_t)Hq * kWgDh, kStride = (int64_t)Hkv * kWgDh;
  const int wgFirst = q0 + 64 * wg, wgLast = wgFirst + 63;
  const __nv_bfloat16* vth = vt + ((int64_t)b * Hkv + g) * kWgDh * Tp;

  const int nTilesK = (q0 + nq - 1) / kWgKeys + 1;  // key tiles up to the tile's last query
  // Each tile is 128 rows × 16 chunks of 16 bytes, copied by the 256 threads in 8 rounds: thread tid takes chunk tid % 16
  // of rows tid / 16 + 16u, u = 0 … 7 (a warp's round: two whole rows, coalesced). Rows 16 apart share the swizzle phase
  // (row mod 8), so round u is the same shared offset + u · 2048 bytes and the same global address + 16 rows.
  const int r0 = tid >> 4, ch = tid & 15;
  const uint32_t sOff = (uint32_t)(ch >> 3) * kSwBlock + swz128(r0, ch & 7);  // chunk ch in block ch / 8 (dims or keys 64·(ch / 8) …)
  // The stages are handed over by mbarriers instead of block-wide barriers, so that the two warpgroups need not run in
  // step: fullK[st] / fullV[st] (bars 0–1 / 2–3) complete when all 256 threads' copies of the stage's tile have landed
  // (cp.async.mbarrier.arrive), emptyK[st] / emptyV[st] (bars 4–5 / 6–7) when all 256 threads are done reading it (after
  // their wgmma waits). Tile t of a stage is phase t / 2 of its barriers: parity (t / 2) & 1.
  __shared__ __align__(8) uint64_t bars[8];
  const uint32_t bar0 = (uint32_t)__cvta_generic_to_shared(bars);
  const auto bar = [&](int i) { return bar0 + 8u * (uint32_t)i; };
  if (tid == 0)
    for (int i = 0; i < 8; i++) mbarInit(bar(i), kWgThreads);
  __syncthreads();
  // K tile kt (and its segment ids) into K stage kt & 1, once both warpgroups are done with tile kt − 2 there
  const auto loadK = [&](int kt) {
    const int st = kt & 1, k0 = kt * kWgKeys, nk = min(kWgKeys, T - k0);
    if (kt >= 2) mbarWait(bar(4 + st), ((kt - 2) >> 1) & 1);
    int bytes[8];
#pragma unroll
    for (int u = 0; u < 8; u++) bytes[u] = r0 + 16 * u < nk ? 16 : 0;  // key rows past T: zeros (their source is not read)
    cpRounds(sK(st) + sOff, kb + (row0 + k0 + r0) * kStride + (int64_t)g * kWgDh + ch * 8, 32 * kStride, bytes);
    if (seg && tid < kWgKeys) cpAsync4To(kSeg0 + 4u * (uint32_t)(st * kWgKeys + tid), seg + row0 + k0 + min(tid, nk - 1), tid < nk);
    mbarArriveCopies(bar(st));
  };
  // V tile j (rows of Vᵀ: dims, 8 keys a chunk) into V stage j & 1, once P·V of tile j − 2 is done
  const auto loadV = [&](int j) {
    const int st = j & 1;
    if (j >= 2) mbarWait(bar(6 + st), ((j - 2) >> 1) & 1);
    const int bytes[8] = {16, 16, 16, 16, 16, 16, 16, 16};
    cpRounds(sV(st) + sOff, vth + (int64_t)r0 * Tp + j * kWgKeys + ch * 8, 32 * (int64_t)Tp, bytes);
    mbarArriveCopies(bar(2 + st));
  };

  loadK(0);
  // Q rounded to bf16 into its two swizzled blocks (rows past T are zeros), in the same 8 rounds
#pragma unroll
  for (int u = 0; u < 8; u++) {
    const int r = r0 + 16 * u;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (r < nq) {
      const float4* src = reinterpret_cast<const float4*>(q + (row0 + q0 + r) * qStride + (int64_t)h * kWgDh + ch * 8);
      const float4 a = src[0], c4 = src[1];
      v = make_uint4(pack2(a.x, a.y), pack2(a.z, a.w), pack2(c4.x, c4.y), pack2(c4.z, c4.w));
    }
    *reinterpret_cast<uint4*>(gbase + sOff + 2048u * u) = v;
  }
  if (seg && tid < kWgRows) qSeg[tid] = tid < nq ? seg[row0 + q0 + tid] : 0;
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // Q's stores → visible to wgmma (the async proxy)
  __syncthreads();

  float o[64], s[64];
#pragma unroll
  for (int i = 0; i < 64; i++) o[i] = s[i] = 0.f;
  uint32_t pa[8][4];
  // running max (log2 units) and sum of the lane's rows wr and wr + 8 of the warpgroup
  float m0 = -CUDART_INF_F, m1 = -CUDART_INF_F, l0 = 0.f, l1 = 0.f;
  const float scale2 = scale * 1.4426950408889634f;
  const int ra = 64 * wg + 16 * warp + gid, rb = ra + 8;  // the lane's rows in the block's tile

  // s (f32, the p of tile j − 1 after its softmax) → the A fragments of P·V: key k-step kk = 8-key blocks 2kk, 2kk + 1
  const auto packP = [&]() {
#pragma unroll
    for (int kk = 0; kk < 8; kk++) {
      pa[kk][0] = pack2(s[8 * kk], s[8 * kk + 1]);          // row gid, keys 16kk + 2quad, +1
      pa[kk][1] = pack2(s[8 * kk + 2], s[8 * kk + 3]);      // row gid + 8
      pa[kk][2] = pack2(s[8 * kk + 4], s[8 * kk + 5]);      // row gid, keys + 8
      pa[kk][3] = pack2(s[8 * kk + 6], s[8 * kk + 7]);      // row gid + 8, keys + 8
    }
  };
  const auto issuePV = [&](int j) {  // O += P·V of tile j: k-step kk reads keys 16kk … 16kk + 15 of the Vᵀ rows (dims)
#pragma unroll
    for (int kk = 0; kk < kWgKeys / 16; kk++) wgmmaRS(o, pa[kk], wgDesc(sV(j & 1) + (uint32_t)(kk >> 2) * kSwBlock + (kk & 3) * 32));
    wgCommit();
  };

  const auto issueS = [&](int j) {  // S = Q·Kᵀ of tile j (the first k-step overwrites s)
#pragma unroll
    for (int kk = 0; kk < kWgDh / 16; kk++)
      wgmmaSS(s, wgDesc(sQ + (uint32_t)(kk >> 2) * kSwBlock + (uint32_t)(64 * wg) * 128 + (kk & 3) * 32),
              wgDesc(sK(j & 1) + (uint32_t)(kk >> 2) * kSwBlock + (kk & 3) * 32), kk > 0);
    wgCommit();
  };
  // mask + online softmax of tile j on s in place (s becomes p, f32); returns O's rescale for rows gid, gid + 8
  const auto softmax = [&](int j) {
    const int k0 = j * kWgKeys;
    const int* ks = kSeg[j & 1];
    const bool full = !seg && k0 + kWgKeys - 1 <= wgFirst && wgLast < T;
    float mx0 = -CUDART_INF_F, mx1 = -CUDART_INF_F;
    if (full) {
#pragma unroll
      for (int i = 0; i < 16; i++) {
        mx0 = fmaxf(mx0, fmaxf(s[4 * i], s[4 * i + 1]));
        mx1 = fmaxf(mx1, fmaxf(s[4 * i + 2], s[4 * i + 3]));
      }
    } else {
#pragma unroll
      for (int i = 0; i < 16; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int c = 8 * i + 2 * quad + (e & 1), rr = e < 2 ? ra : rb, t = q0 + rr;
          const bool vis = k0 + c <= t && t < T && (!seg || ks[c] == qSeg[rr]);
          s[4 * i + e] = vis ? s[4 * i + e] : -CUDART_INF_F;
          if (e < 2) mx0 = fmaxf(mx0, s[4 * i + e]);
          else mx1 = fmaxf(mx1, s[4 * i + e]);
        }
    }
#pragma unroll
    for (int o2 = 1; o2 < 4; o2 <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, o2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, o2));
    }
    // a row with no visible key so far keeps m = −inf: its p and its rescale are 0 (ex2 of −inf), l stays 0
    const float n0 = fmaxf(m0, mx0 * scale2), n1 = fmaxf(m1, mx1 * scale2);
    const float b0 = n0 == -CUDART_INF_F ? 0.f : n0, b1 = n1 == -CUDART_INF_F ? 0.f : n1;
    const float2 c = make_float2(ex2Fast(m0 - b0), ex2Fast(m1 - b1));
    float s0 = 0.f, s1 = 0.f;
#pragma unroll
    for (int i = 0; i < 16; i++) {
      s[4 * i] = ex2Fast(fmaf(s[4 * i], scale2, -b0));
      s[4 * i + 1] = ex2Fast(fmaf(s[4 * i + 1], scale2, -b0));
      s[4 * i + 2] = ex2Fast(fmaf(s[4 * i + 2], scale2, -b1));
      s[4 * i + 3] = ex2Fast(fmaf(s[4 * i + 3], scale2, -b1));
      s0 += s[4 * i] + s[4 * i + 1];
      s1 += s[4 * i + 2] + s[4 * i + 3];
    }
#pragma unroll
    for (int o2 = 1; o2 < 4; o2 <<= 1) {
      s0 += __shfl_xor_sync(0xffffffffu, s0, o2);
      s1 += __shfl_xor_sync(0xffffffffu, s1, o2);
    }
    l0 = l0 * c.x + s0;
    l1 = l1 * c.y + s1;
    m0 = n0;
    m1 = n1;
    return c;
  };

  // Iteration j: Q·Kᵀ of tile j is issued, then P·V of tile j − 1; the softmax of tile j runs while P·V is on the
  // tensor cores (FlashAttention-3's overlap inside a warpgroup), and O is rescaled once P·V is done. Every key
  // tile up to the block's last query is computed by both warpgroups, fully masked ones included (with segments;
  // they leave O, m and l as they are): a branch around the wgmma instructions makes ptxas serialize them all.
  const auto landed = [&](int i, int t) {  // tile t of stage barrier i has landed; its bytes visible to wgmma
    mbarWait(bar(i + (t & 1)), (t >> 1) & 1);
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  };
  if (nTilesK > 1) loadK(1);
  loadV(0);
  // Ping-pong (FlashAttention-3): the warpgroups take turns at issuing their products — named barrier 1 + w is
  // warpgroup w's turn, passed on by the other after its issue — so one's softmax runs while the other's products are
  // on the tensor cores (same call, alternating: 1.065 / 1.224 ms against 1.168 / 1.346 without; tensor pipe 48 → 51 %).
  // Both take nTilesK + 1 turns (tile 0's Q·Kᵀ, one per loop iteration, the last P·V); warpgroup 1 opens warpgroup 0's
  // first turn and does not pass on its own last one (no waiter is left for it).
  int turn = 0;
  const auto turnWait = [&]() { asm volatile("bar.sync %0, 256;\n" ::"r"(1 + wg) : "memory"); };
  const auto turnPass = [&]() {
    if (!(wg == 1 && turn == nTilesK)) asm volatile("bar.arrive %0, 256;\n" ::"r"(2 - wg) : "memory");
    turn++;
  };
  if (wg == 1) asm volatile("bar.arrive 1, 256;\n" ::: "memory");
  landed(0, 0);
  turnWait();
  wgFence();
  issueS(0);
  turnPass();
  wgWaitAll();
  wgPin(s);
  if (!seg) mbarArrive(bar(4));  // K tile 0 read (with segments: after the softmax, which reads its segment ids)
  softmax(0);                    // O is still zero: no rescale
  if (seg) mbarArrive(bar(4));
  for (int j = 1; j < nTilesK; j++) {
    if (j + 1 < nTilesK) loadK(j + 1);
    loadV(j);
    landed(0, j);      // K tile j
    landed(2, j - 1);  // V tile j − 1
    packP();
    wgPin(s);
    wgPin(o);
    turnWait();
    wgFence();
    issueS(j);
    issuePV(j - 1);
    turnPass();
    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");  // Q·Kᵀ done; P·V may still run
    wgPin(s);
    if (!seg) mbarArrive(bar(4 + (j & 1)));  // K tile j read (with segments: after the softmax)
    const float2 c = softmax(j);
    if (seg) mbarArrive(bar(4 + (j & 1)));
    wgWaitAll();
    wgPin(o);
    mbarArrive(bar(6 + ((j - 1) & 1)));  // V tile j − 1 read
    // the rescale is exactly 1 where a row's max did not move (most tiles after the first few): skipped when it is 1
    // for every row of the warp
    if (__any_sync(0xffffffffu, c.x != 1.f || c.y != 1.f)) {
#pragma unroll
      for (int i = 0; i < 16; i++) {
        o[4 * i] *= c.x;
        o[4 * i + 1] *= c.x;
        o[4 * i + 2] *= c.y;
        o[4 * i + 3] *= c.y;
      }
    }
  }
  // P·V of the last tile
  landed(2, nTilesK - 1);
  packP();
  wgPin(o);
  turnWait();
  wgFence();
  issuePV(nTilesK - 1);
  turnPass();
  wgWaitAll();
  wgPin(o);

  const int64_t hOff = (int64_t)h * kWgDh + 2 * quad;
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int t = q0 + (i ? rb : ra);
    if (t >= T) continue;
    const float li = i ? l1 : l0, inv = 1.f / li;
    float* orow = out + (row0 + t) * qStride + hOff;
#pragma unroll
    for (int j = 0; j < 16; j++) *reinterpret_cast<float2*>(orow + 8 * j) = make_float2(o[4 * j + 2 * i] * inv, o[4 * j + 2 * i + 1] * inv);
    if (quad == 0) lse[((int64_t)b * Hq + h) * T + t] = (i ? m1 : m0) * 0.6931471805599453f + logf(li);
  }
#endif
}

/** the wgmma forward runs on compute capability 9.x (its code is built for sm_90a only) */
bool wgmmaForwardAvailable() {
  // compute capability 9.x (Hopper), and not switched off by M1_ATTN_WGMMA=0 (read once, like the capability)
  static const bool on = [] {
    const char* sw = std::getenv("M1_ATTN_WGMMA");  // 0: the mma.sync kernel (A/Bs, diagnosis)
    return m1ComputeMajor() == 9 && !(sw && sw[0] == '0');
  }();
  return on;
}

cudaError_t launchFwdWgmma(float* out, float* lse, const float* q, const __nv_bfloat16* kb, const __nv_bfloat16* vt, const int* seg, int B,
                           int T, int Tp, int Hq, int Hkv, float scale, cudaStream_t s) {
  static bool ready = false;
  cudaError_t e = m1AllowSmem(k_flash_fwd_wgmma, kWgSmem, ready);
  if (e != cudaSuccess) return e;
  dim3 grid((unsigned)((T + kWgRows - 1) / kWgRows * Hq), 1u, (unsigned)B);  // blockIdx.x = tile rank · Hq + head
  k_flash_fwd_wgmma<<<grid, kWgThreads, kWgSmem, s>>>(out, lse, q, kb, vt, seg, T, Tp, Hq, Hkv, scale);
  return cudaGetLastError();
}

}  // namespace

extern "C" cudaError_t m1_flash_attention_bf16(float* out, float* lse, const float* q, const float* k, const float* v, const int* seg,
                                               int B, int T, int Hq, int Hkv, int Dh, float scale, cudaStream_t s) {
  if ((int64_t)B * T * Hq == 0) return cudaSuccess;
  if (Hkv < 1 || Hq % Hkv != 0 || (Dh != 64 && Dh != 128)) return cudaErrorInvalidValue;
  // bf16 copies of K and V from the caching allocator; freed at once: reuse is ordered on the one stream
  const int64_t n = (int64_t)B * T * Hkv * Dh;
  auto* kb = static_cast<__nv_bfloat16*>(m1Alloc(sizeof(__nv_bfloat16) * n));
  // Hopper: V as a transposed bf16 copy (keys padded to the 128-key tiles), the product on wgmma; else V as is in bf16
  const bool wg = Dh == 128 && B <= 65535 && wgmmaForwardAvailable();
  const int Tp = (T + kWgKeys - 1) / kWgKeys * kWgKeys;
  auto* vb = static_cast<__nv_bfloat16*>(m1Alloc(sizeof(__nv_bfloat16) * (wg ? (size_t)B * Hkv * kWgDh * Tp : (size_t)n)));
  cudaError_t e = m1_cast_f32_bf16(kb, k, n, s);
  if (e == cudaSuccess) {
    if (wg) {
      k_cast_transpose_v<<<dim3((unsigned)(Tp / 32), (unsigned)Hkv, (unsigned)B), 256, 0, s>>>(vb, v, T, Tp, Hkv);
      e = cudaGetLastError();
    } else {
      e = m1_cast_f32_bf16(vb, v, n, s);
    }
  }
  if (e == cudaSuccess) {
    e = wg ? launchFwdWgmma(out, lse, q, kb, vb, seg, B, T, Tp, Hq, Hkv, scale, s)
       : Dh == 64 ? launchFwdTc<64>(out, lse, q, kb, vb, seg, B, T, Hq, Hkv, scale, s)
                  : launchFwdTc<128>(out, lse, q, kb, vb, seg, B, T, Hq, Hkv, scale, s);
  }
  m1Free(kb);
  m1Free(vb);
  return e;
}

extern "C" cudaError_t m1_flash_attention_bwd_bf16(float* dq, float* dk, float* dv, float* Dbuf, const float* dout, const float* q,
                                                   const float* k, const float* v, const float* out, const float* lse, const int* seg,
                                                   int B, int T, int Hq, int Hkv, int Dh, float scale, cudaStream_t s) {
  if ((int64_t)B * T * Hq == 0) return cudaSuccess;
  if (Hkv < 1 || Hq % Hkv != 0 || (Dh != 64 && Dh != 128)) return cudaErrorInvalidValue;
  cudaError_t e = m1_flash_attention_rowdot(Dbuf, dout, out, B, T, Hq, Dh, s);
  if (e != cudaSuccess) return e;
  // bf16 copies of q, k, v, dout from the caching allocator; freed at once (stream-ordered reuse)
  const int64_t nq = (int64_t)B * T * Hq * Dh, nk = (int64_t)B * T * Hkv * Dh;
  auto* qb = static_cast<__nv_bfloat16*>(m1Alloc(sizeof(__nv_bfloat16) * nq));
  auto* dob = static_cast<__nv_bfloat16*>(m1Alloc(sizeof(__nv_bfloat16) * nq));
  auto* kb = static_cast<__nv_bfloat16*>(m1Alloc(sizeof(__nv_bfloat16) * nk));
  auto* vb = static_cast<__nv_bfloat16*>(m1Alloc(sizeof(__nv_bfloat16) * nk));
  e = m1_cast_f32_bf16(qb, q, nq, s);
  if (e == cudaSuccess) e = m1_cast_f32_bf16(dob, dout, nq, s);
  if (e == cudaSuccess) e = m1_cast_f32_bf16(kb, k, nk, s);
  if (e == cudaSuccess) e = m1_cast_f32_bf16(vb, v, nk, s);
  if (e == cudaSuccess) {
    e = Dh == 64 ? launchBwdTc<64>(dq, dk, dv, qb, kb, vb, dob, lse, Dbuf, seg, B, T, Hq, Hkv, scale, s)
                 : launchBwdTc<128>(dq, dk, dv, qb, kb, vb, dob, lse, Dbuf, seg, B, T, Hq, Hkv, scale, s);
  }
  for (void* p : {(void*)qb, (void*)dob, (void*)kb, (void*)vb}) m1Free(p);
  return e;
}
