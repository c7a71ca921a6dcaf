// Tiled causal GQA attention (FlashAttention-2 structure) with plain f32 FMA: the prefill and
// training path of m1_attention / m1_attention_bwd for head dims 64 and 128.
//
// Why f32 SIMT and not tensor cores: the CPU backend defines the op and the tests hold f32 results
// to ~1e-4 relative; tf32/bf16 mma would need looser, separately justified tolerances.
//
// Work split (every kernel: 256 threads as a 16 × 16 grid, ty = tid / 16, tx = tid % 16):
//  - score-like tiles S [64, N] (N = 64 or 32): thread owns rows 4ty..4ty+3 and columns tx + 16j.
//    They are A·Bᵀ products of two row-major smem tiles [rows][Dh + 4]; each thread reads float4s
//    along Dh. The +4 pad puts rows 4 apart (the two ty of a warp) and rows 1 apart (the 16 tx) on
//    different banks, so neither operand has bank conflicts and no tile is ever transposed on load.
//  - output-like tiles O [64, Dh]: thread owns rows 4ty..4ty+3 (the same rows as its scores, so
//    the softmax rescale stays in registers) and columns 4tx + 64jj + (0..3). The P / dS operand is
//    stored transposed ([key][query], stride 68) by its owners with one float4 per column.
//  - row statistics (max, sum) reduce over the 16 lanes that share ty: shuffles with xor < 16.
//
// Tiles: forward 64 queries × 64 keys; its P tile reuses the K buffer (K is dead once S is
// computed), so Dh = 128 needs 99 KiB of shared memory and two blocks fit on an SM (H100/H200:
// 228 KiB). The backward kernels hold two 64-row and two 32-row tiles plus a 32 × 68 P/dS tile
// (107.5 KiB at Dh = 128), again two blocks per SM; the 32-row side is the streamed one.
//
// Backward: D = rowsum(dO ∘ O) first; then dQ per query tile (streams key tiles) and dK/dV per key
// tile (streams the query tiles of every q head of its GQA group), each recomputing P from lse.
// Two passes instead of atomics keep the gradients deterministic and need no zeroed dq.
//
// Masks: a key tile past the query tile's last row is never visited. With segments, each tile
// first checks (one barrier-or) whether any of its (query, key) pairs is visible and skips the
// loads and math if not; inside a tile the mask is per element, so any segment layout is exact.
// Rows past T are zero-filled in smem and masked out, so they never feed NaN/garbage into sums.
#include "flash_attention.h"
#include <math_constants.h>

namespace {

constexpr int kThreads = 256;
constexpr int kLdP = 68;  // row stride of the transposed P / dS tiles (64 query columns + pad)

__device__ __forceinline__ float4 ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ void st4(float* p, float4 x) { *reinterpret_cast<float4*>(p) = x; }

/** reduce over the 16 lanes sharing ty (lanes differ only in their low 4 bits) */
__device__ __forceinline__ float max16(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float sum16(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/**
 * ROWS rows of one head, src row r at src + r·stride ([rows][DH] slice of a [.., H, DH] tensor), into
 * smem dst [ROWS][DH + 4]; rows ≥ valid are zeros. A warp reads 128 contiguous floats per step.
 */
template <int DH, int ROWS>
__device__ __forceinline__ void loadTile(float* dst, const float* src, int64_t stride, int valid) {
  constexpr int C4 = DH / 4;
#pragma unroll 4
  for (int e = threadIdx.x; e < ROWS * C4; e += kThreads) {
    int r = e / C4, c = (e % C4) * 4;
    float4 x = r < valid ? ld4(src + r * stride + c) : make_float4(0.f, 0.f, 0.f, 0.f);
    st4(dst + r * (DH + 4) + c, x);
  }
}

/** acc[i][j] += Σ_{k<K} A[4ty+i][k] · B[tx+16j][k]; A and B row-major with row stride ld */
template <int K, int NC>
__device__ __forceinline__ void gemmNT(float (&acc)[4][NC], const float* A, const float* B, int ld, int ty, int tx) {
  const float* a0 = A + 4 * ty * ld;
  const float* b0 = B + tx * ld;
#pragma unroll 2
  for (int k = 0; k < K; k += 4) {
    float4 a[4], b[NC];
#pragma unroll
    for (int i = 0; i < 4; i++) a[i] = ld4(a0 + i * ld + k);
#pragma unroll
    for (int j = 0; j < NC; j++) b[j] = ld4(b0 + 16 * j * ld + k);
#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
      for (int j = 0; j < NC; j++) {
        float s = acc[i][j];
        s = fmaf(a[i].x, b[j].x, s);
        s = fmaf(a[i].y, b[j].y, s);
        s = fmaf(a[i].z, b[j].z, s);
        s = fmaf(a[i].w, b[j].w, s);
        acc[i][j] = s;
      }
    }
  }
}

/** acc[i][4jj+j] += Σ_{k<K} At[k][4ty+i] · Bk[k][4tx+64jj+j]; the contraction index is the row of both */
template <int K, int NJ>
__device__ __forceinline__ void gemmTN(float (&acc)[4][4 * NJ], const float* At, int lda, const float* Bk, int ldb, int ty, int tx) {
  const float* a0 = At + 4 * ty;
  const float* b0 = Bk + 4 * tx;
#pragma unroll 4
  for (int k = 0; k < K; k++) {
    float4 a = ld4(a0 + k * lda);
    float av[4] = {a.x, a.y, a.z, a.w};
    float4 b[NJ];
#pragma unroll
    for (int jj = 0; jj < NJ; jj++) b[jj] = ld4(b0 + k * ldb + 64 * jj);
#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
      for (int jj = 0; jj < NJ; jj++) {
        acc[i][4 * jj + 0] = fmaf(av[i], b[jj].x, acc[i][4 * jj + 0]);
        acc[i][4 * jj + 1] = fmaf(av[i], b[jj].y, acc[i][4 * jj + 1]);
        acc[i][4 * jj + 2] = fmaf(av[i], b[jj].z, acc[i][4 * jj + 2]);
        acc[i][4 * jj + 3] = fmaf(av[i], b[jj].w, acc[i][4 * jj + 3]);
      }
    }
  }
}

/** column j of a 4 × NC register tile (rows 4ty..4ty+3) into the transposed tile P[tx+16j][4ty..] */
template <int NC>
__device__ __forceinline__ void storeTransposed(float* P, const float (&x)[4][NC], int ty, int tx) {
#pragma unroll
  for (int j = 0; j < NC; j++) st4(P + (tx + 16 * j) * kLdP + 4 * ty, make_float4(x[0][j], x[1][j], x[2][j], x[3][j]));
}

template <int NJ>
__device__ __forceinline__ void storeRow(float* dst, const float (&x)[4 * NJ], float mul, int tx) {
#pragma unroll
  for (int jj = 0; jj < NJ; jj++) {
    st4(dst + 4 * tx + 64 * jj, make_float4(x[4 * jj] * mul, x[4 * jj + 1] * mul, x[4 * jj + 2] * mul, x[4 * jj + 3] * mul));
  }
}

// ------------------------------------------------------------------------------------------------
// forward: block = (query tile of 64, q head h, row b)

template <int DH>
constexpr size_t fwdSmemBytes() { return (size_t)3 * 64 * (DH + 4) * sizeof(float); }

template <int DH>
__global__ void __launch_bounds__(kThreads, 2)
k_flash_fwd(float* __restrict__ out, float* __restrict__ lse, const float* __restrict__ q, const float* __restrict__ k,
            const float* __restrict__ v, const int* __restrict__ seg, int T, int Hq, int Hkv, float scale) {
  constexpr int BR = 64, BC = 64, LD = DH + 4, NJ = DH / 64, NC = BC / 16;
  static_assert(BC * kLdP <= BC * LD, "P must fit in the K buffer it reuses");
  extern __shared__ float4 smem4[];
  float* Qs = reinterpret_cast<float*>(smem4);  // [BR][LD]
  float* Ks = Qs + BR * LD;                      // [BC][LD]
  float* Vs = Ks + BC * LD;                      // [BC][LD]
  float* Pt = Ks;                                // [BC][kLdP] once S is computed
  __shared__ int qSeg[BR], kSeg[BC];

  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BR;  // the last (longest) query tiles are scheduled first
  const int h = blockIdx.y, b = blockIdx.z, g = h / (Hq / Hkv);
  const int nq = min(BR, T - q0);
  const int64_t row0 = (int64_t)b * T, qStride = (int64_t)Hq * DH, kStride = (int64_t)Hkv * DH;

  loadTile<DH, BR>(Qs, q + (row0 + q0) * qStride + (int64_t)h * DH, qStride, nq);
  if (seg && threadIdx.x < BR) qSeg[threadIdx.x] = threadIdx.x < nq ? seg[row0 + q0 + threadIdx.x] : 0;

  float m[4], l[4], o[4][4 * NJ];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    m[i] = -CUDART_INF_F;
    l[i] = 0.f;
#pragma unroll
    for (int d = 0; d < 4 * NJ; d++) o[i][d] = 0.f;
  }

  const int lastQuery = q0 + nq - 1;  // key tiles after it are fully masked
  for (int k0 = 0; k0 <= lastQuery; k0 += BC) {
    const int nk = min(BC, T - k0);
    __syncthreads();  // the previous tile's P·V is done with Pt/Vs (and Qs/qSeg are visible)
    if (seg) {
      if (threadIdx.x < BC) kSeg[threadIdx.x] = threadIdx.x < nk ? seg[row0 + k0 + threadIdx.x] : 0;
      __syncthreads();
      bool any = false;
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < NC; j++) {
          const int t = q0 + 4 * ty + i;
          any |= k0 + tx + 16 * j <= t && t < T && kSeg[tx + 16 * j] == qSeg[4 * ty + i];
        }
      if (!__syncthreads_or(any)) continue;  // uniform: every thread gets the same answer
    }
    loadTile<DH, BC>(Ks, k + (row0 + k0) * kStride + (int64_t)g * DH, kStride, nk);
    loadTile<DH, BC>(Vs, v + (row0 + k0) * kStride + (int64_t)g * DH, kStride, nk);
    __syncthreads();

    float s[4][NC];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < NC; j++) s[i][j] = 0.f;
    gemmNT<DH, NC>(s, Qs, Ks, LD, ty, tx);

#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int r = 4 * ty + i, t = q0 + r;
      float mx = -CUDART_INF_F;
#pragma unroll
      for (int j = 0; j < NC; j++) {
        const int c = tx + 16 * j;
        // t < T also masks the zero-filled rows past T; k0 + c ≤ t < T keeps keys in range
        bool vis = k0 + c <= t && t < T && (!seg || kSeg[c] == qSeg[r]);
        s[i][j] = vis ? s[i][j] * scale : -CUDART_INF_F;
        mx = fmaxf(mx, s[i][j]);
      }
      mx = max16(mx);
      const float mNew = fmaxf(m[i], mx);
      // a row with nothing visible so far keeps m = −inf: subtract 0 so exp gives 0, not NaN
      const float base = mNew == -CUDART_INF_F ? 0.f : mNew;
      const float corr = expf(m[i] - base);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < NC; j++) {
        s[i][j] = expf(s[i][j] - base);
        sum += s[i][j];
      }
      l[i] = l[i] * corr + sum16(sum);
      m[i] = mNew;
#pragma unroll
      for (int d = 0; d < 4 * NJ; d++) o[i][d] *= corr;
    }
    __syncthreads();  // every warp has finished reading Ks: Pt overwrites it
    storeTransposed<NC>(Pt, s, ty, tx);
    __syncthreads();
    gemmTN<BC, NJ>(o, Pt, kLdP, Vs, LD, ty, tx);
  }

#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int t = q0 + 4 * ty + i;
    if (t < T) {
      // l ≥ exp(0) > 0: the diagonal key t is always visible and its tile never skipped
      storeRow<NJ>(out + (row0 + t) * qStride + (int64_t)h * DH, o[i], 1.f / l[i], tx);
      if (tx == 0) lse[((int64_t)b * Hq + h) * T + t] = m[i] + logf(l[i]);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// backward

/** D[b, h, t] = dO_t · O_t for every (b, t, h): one warp per row, stored like lse [B, Hq, T] */
__global__ void k_flash_bwd_rowdot(float* __restrict__ Dbuf, const float* __restrict__ dout, const float* __restrict__ out,
                                   int64_t rows, int T, int Hq, int Dh) {
  const int lane = threadIdx.x & 31;
  for (int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5; w < rows; w += ((int64_t)gridDim.x * blockDim.x) >> 5) {
    const float* a = dout + w * Dh;
    const float* o = out + w * Dh;
    float sum = 0.f;
    for (int d = lane; d < Dh; d += 32) sum = fmaf(a[d], o[d], sum);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0) {
      const int64_t h = w % Hq, bt = w / Hq, t = bt % T, b = bt / T;
      Dbuf[(b * Hq + h) * T + t] = sum;
    }
  }
}

template <int DH>
constexpr size_t bwdSmemBytes() { return (size_t)(2 * 64 + 2 * 32) * (DH + 4) * sizeof(float) + (size_t)32 * kLdP * sizeof(float); }

/** dQ for a tile of 64 queries of head h, row b: streams the visible key tiles (32 keys each) */
template <int DH>
__global__ void __launch_bounds__(kThreads, 2)
k_flash_bwd_dq(float* __restrict__ dq, const float* __restrict__ dout, const float* __restrict__ q, const float* __restrict__ k,
               const float* __restrict__ v, const float* __restrict__ lse, const float* __restrict__ Dbuf, const int* __restrict__ seg,
               int T, int Hq, int Hkv, float scale) {
  constexpr int BR = 64, BC = 32, LD = DH + 4, NJ = DH / 64, NC = BC / 16;
  extern __shared__ float4 smem4[];
  float* Qs = reinterpret_cast<float*>(smem4);  // [BR][LD]
  float* dOs = Qs + BR * LD;                     // [BR][LD]
  float* Ks = dOs + BR * LD;                     // [BC][LD]
  float* Vs = Ks + BC * LD;                      // [BC][LD]
  float* dSt = Vs + BC * LD;                     // [BC][kLdP]: dS transposed (key, query)
  __shared__ int qSeg[BR], kSeg[BC];

  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BR;
  const int h = blockIdx.y, b = blockIdx.z, g = h / (Hq / Hkv);
  const int nq = min(BR, T - q0);
  const int64_t row0 = (int64_t)b * T, qStride = (int64_t)Hq * DH, kStride = (int64_t)Hkv * DH;
  const int64_t qOff = (row0 + q0) * qStride + (int64_t)h * DH;
  const int64_t statRow = ((int64_t)b * Hq + h) * T;

  loadTile<DH, BR>(Qs, q + qOff, qStride, nq);
  loadTile<DH, BR>(dOs, dout + qOff, qStride, nq);
  if (seg && threadIdx.x < BR) qSeg[threadIdx.x] = threadIdx.x < nq ? seg[row0 + q0 + threadIdx.x] : 0;
  float rowLse[4], rowD[4];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int t = q0 + 4 * ty + i;
    rowLse[i] = t < T ? lse[statRow + t] : 0.f;
    rowD[i] = t < T ? Dbuf[statRow + t] : 0.f;
  }
  float acc[4][4 * NJ];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int d = 0; d < 4 * NJ; d++) acc[i][d] = 0.f;

  const int lastQuery = q0 + nq - 1;
  for (int k0 = 0; k0 <= lastQuery; k0 += BC) {
    const int nk = min(BC, T - k0);
    __syncthreads();  // the previous tile's dS·K is done with dSt/Ks
    if (seg) {
      if (threadIdx.x < BC) kSeg[threadIdx.x] = threadIdx.x < nk ? seg[row0 + k0 + threadIdx.x] : 0;
      __syncthreads();
      bool any = false;
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < NC; j++) {
          const int t = q0 + 4 * ty + i;
          any |= k0 + tx + 16 * j <= t && t < T && kSeg[tx + 16 * j] == qSeg[4 * ty + i];
        }
      if (!__syncthreads_or(any)) continue;
    }
    loadTile<DH, BC>(Ks, k + (row0 + k0) * kStride + (int64_t)g * DH, kStride, nk);
    loadTile<DH, BC>(Vs, v + (row0 + k0) * kStride + (int64_t)g * DH, kStride, nk);
    __syncthreads();

    float s[4][NC], dp[4][NC];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < NC; j++) s[i][j] = dp[i][j] = 0.f;
    gemmNT<DH, NC>(s, Qs, Ks, LD, ty, tx);
    gemmNT<DH, NC>(dp, dOs, Vs, LD, ty, tx);
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int r = 4 * ty + i, t = q0 + r;
#pragma unroll
      for (int j = 0; j < NC; j++) {
        const int c = tx + 16 * j;
        bool vis = k0 + c <= t && t < T && (!seg || kSeg[c] == qSeg[r]);
        float p = vis ? expf(s[i][j] * scale - rowLse[i]) : 0.f;
        s[i][j] = p * (dp[i][j] - rowD[i]);  // dS without the scale (applied once at the end)
      }
    }
    storeTransposed<NC>(dSt, s, ty, tx);
    __syncthreads();
    gemmTN<BC, NJ>(acc, dSt, kLdP, Ks, LD, ty, tx);  // dQ[r][d] += Σ_c dS[r][c] K[c][d]
  }

#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int t = q0 + 4 * ty + i;
    if (t < T) storeRow<NJ>(dq + (row0 + t) * qStride + (int64_t)h * DH, acc[i], scale, tx);
  }
}

/**
 * dK, dV for a tile of 64 keys of kv head g, row b: streams the query tiles (32 queries) at or after
 * the key tile, for every q head of the group, so each key row is written once (no atomics).
 */
template <int DH>
__global__ void __launch_bounds__(kThreads, 2)
k_flash_bwd_dkdv(float* __restrict__ dk, float* __restrict__ dv, const float* __restrict__ dout, const float* __restrict__ q,
                 const float* __restrict__ k, const float* __restrict__ v, const float* __restrict__ lse,
                 const float* __restrict__ Dbuf, const int* __restrict__ seg, int T, int Hq, int Hkv, float scale) {
  constexpr int BC = 64, BR = 32, LD = DH + 4, NJ = DH / 64, NC = BR / 16;
  extern __shared__ float4 smem4[];
  float* Ks = reinterpret_cast<float*>(smem4);  // [BC][LD]
  float* Vs = Ks + BC * LD;                      // [BC][LD]
  float* Qs = Vs + BC * LD;                      // [BR][LD]
  float* dOs = Qs + BR * LD;                     // [BR][LD]
  float* Pk = dOs + BR * LD;                     // [BR][kLdP]: P, then dS, as (query, key)
  __shared__ int kSeg[BC], qSeg[BR];
  __shared__ float qLse[BR], qD[BR];

  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int k0 = blockIdx.x * BC;  // tile 0 sees every query: the longest blocks start first
  const int g = blockIdx.y, b = blockIdx.z, group = Hq / Hkv;
  const int nk = min(BC, T - k0);
  const int64_t row0 = (int64_t)b * T, qStride = (int64_t)Hq * DH, kStride = (int64_t)Hkv * DH;
  const int64_t kOff = (row0 + k0) * kStride + (int64_t)g * DH;

  loadTile<DH, BC>(Ks, k + kOff, kStride, nk);
  loadTile<DH, BC>(Vs, v + kOff, kStride, nk);
  if (seg && threadIdx.x < BC) kSeg[threadIdx.x] = threadIdx.x < nk ? seg[row0 + k0 + threadIdx.x] : 0;

  float dka[4][4 * NJ], dva[4][4 * NJ];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int d = 0; d < 4 * NJ; d++) dka[i][d] = dva[i][d] = 0.f;

  for (int h = g * group; h < (g + 1) * group; h++) {
    const int64_t statRow = ((int64_t)b * Hq + h) * T;
    for (int q0 = k0; q0 < T; q0 += BR) {  // queries before k0 see none of these keys
      const int nq = min(BR, T - q0);
      __syncthreads();  // the previous tile's dS·Q is done with Pk/Qs/dOs (and Ks/Vs/kSeg are visible)
      if (seg) {
        if (threadIdx.x < BR) qSeg[threadIdx.x] = threadIdx.x < nq ? seg[row0 + q0 + threadIdx.x] : 0;
        __syncthreads();
        bool any = false;
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
          for (int j = 0; j < NC; j++) {
            const int t = q0 + tx + 16 * j;
            any |= k0 + 4 * ty + i <= t && t < T && kSeg[4 * ty + i] == qSeg[tx + 16 * j];
          }
        if (!__syncthreads_or(any)) continue;
      }
      const int64_t qOff = (row0 + q0) * qStride + (int64_t)h * DH;
      loadTile<DH, BR>(Qs, q + qOff, qStride, nq);
      loadTile<DH, BR>(dOs, dout + qOff, qStride, nq);
      if (threadIdx.x < BR) {
        qLse[threadIdx.x] = threadIdx.x < nq ? lse[statRow + q0 + threadIdx.x] : 0.f;
        qD[threadIdx.x] = threadIdx.x < nq ? Dbuf[statRow + q0 + threadIdx.x] : 0.f;
      }
      __syncthreads();

      // transposed scores: s[i][j] = K[4ty+i] · Q[tx+16j] (key rows, query columns)
      float s[4][NC], dp[4][NC];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < NC; j++) s[i][j] = dp[i][j] = 0.f;
      gemmNT<DH, NC>(s, Ks, Qs, LD, ty, tx);
      gemmNT<DH, NC>(dp, Vs, dOs, LD, ty, tx);
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int c = 4 * ty + i;
#pragma unroll
        for (int j = 0; j < NC; j++) {
          const int r = tx + 16 * j, t = q0 + r;
          // k0 + c ≤ t < T also masks keys past T
          bool vis = k0 + c <= t && t < T && (!seg || kSeg[c] == qSeg[r]);
          float p = vis ? expf(s[i][j] * scale - qLse[r]) : 0.f;
          s[i][j] = p;
          dp[i][j] = p * (dp[i][j] - qD[r]);  // dS without the scale
        }
      }
      storeTransposed<NC>(Pk, s, ty, tx);
      __syncthreads();
      gemmTN<BR, NJ>(dva, Pk, kLdP, dOs, LD, ty, tx);  // dV[c][d] += Σ_r P[r][c] dO[r][d]
      __syncthreads();
      storeTransposed<NC>(Pk, dp, ty, tx);
      __syncthreads();
      gemmTN<BR, NJ>(dka, Pk, kLdP, Qs, LD, ty, tx);  // dK[c][d] += Σ_r dS[r][c] Q[r][d]
    }
  }

#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int c = 4 * ty + i;
    if (c < nk) {
      const int64_t o = (row0 + k0 + c) * kStride + (int64_t)g * DH;
      storeRow<NJ>(dk + o, dka[i], scale, tx);
      storeRow<NJ>(dv + o, dva[i], 1.f, tx);
    }
  }
}

template <int DH>
cudaError_t launchFwd(float* out, float* lse, const float* q, const float* k, const float* v, const int* seg, int B, int T, int Hq,
                      int Hkv, float scale, cudaStream_t s) {
  static bool ready = false;
  const size_t smem = fwdSmemBytes<DH>();
  cudaError_t e = m1AllowSmem(k_flash_fwd<DH>, smem, ready);
  if (e != cudaSuccess) return e;
  dim3 grid((unsigned)((T + 63) / 64), (unsigned)Hq, (unsigned)B);
  k_flash_fwd<DH><<<grid, kThreads, smem, s>>>(out, lse, q, k, v, seg, T, Hq, Hkv, scale);
  return cudaGetLastError();
}

template <int DH>
cudaError_t launchBwd(float* dq, float* dk, float* dv, float* Dbuf, const float* dout, const float* q, const float* k, const float* v,
                      const float* out, const float* lse, const int* seg, int B, int T, int Hq, int Hkv, float scale, cudaStream_t s) {
  static bool readyDq = false, readyDkdv = false;
  const size_t smem = bwdSmemBytes<DH>();
  cudaError_t e = m1AllowSmem(k_flash_bwd_dq<DH>, smem, readyDq);
  if (e == cudaSuccess) e = m1AllowSmem(k_flash_bwd_dkdv<DH>, smem, readyDkdv);
  if (e != cudaSuccess) return e;
  e = m1_flash_attention_rowdot(Dbuf, dout, out, B, T, Hq, DH, s);
  if (e != cudaSuccess) return e;
  const unsigned tiles = (unsigned)((T + 63) / 64);
  k_flash_bwd_dq<DH><<<dim3(tiles, (unsigned)Hq, (unsigned)B), kThreads, smem, s>>>(dq, dout, q, k, v, lse, Dbuf, seg, T, Hq, Hkv,
                                                                                    scale);
  k_flash_bwd_dkdv<DH><<<dim3(tiles, (unsigned)Hkv, (unsigned)B), kThreads, smem, s>>>(dk, dv, dout, q, k, v, lse, Dbuf, seg, T, Hq,
                                                                                       Hkv, scale);
  return cudaGetLastError();
}

}  // namespace

extern "C" {

int m1_flash_attention_handles(int B, int Hq, int Dh, const void* const* vec4Ptrs, int nPtrs) {
  if (Dh != 64 && Dh != 128) return 0;
  if (B < 1 || B > 65535 || Hq < 1 || Hq > 65535) return 0;
  // the backward tiles are the largest (107.5 KiB + 640 B static at Dh = 128): GPUs with less
  // shared memory per block (sm_86/89: 99 KiB) keep the untiled kernels
  static int optin = -1;
  if (optin < 0) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
      optin = 0;
    }
  }
  const size_t need = (Dh == 64 ? bwdSmemBytes<64>() : bwdSmemBytes<128>()) + 1024;
  if ((size_t)optin < need) return 0;
  for (int i = 0; i < nPtrs; i++) {
    if (reinterpret_cast<uintptr_t>(vec4Ptrs[i]) % 16 != 0) return 0;
  }
  return 1;
}

cudaError_t m1_flash_attention_rowdot(float* Dbuf, const float* dout, const float* out, int B, int T, int Hq, int Dh, cudaStream_t s) {
  const int64_t rows = (int64_t)B * T * Hq;
  if (rows == 0) return cudaSuccess;
  int64_t blocks = (rows * 32 + kThreads - 1) / kThreads;
  if (blocks > 65535LL * 32) blocks = 65535LL * 32;  // the loop strides over the rest
  k_flash_bwd_rowdot<<<(unsigned)blocks, kThreads, 0, s>>>(Dbuf, dout, out, rows, T, Hq, Dh);
  return cudaGetLastError();
}

cudaError_t m1_flash_attention(float* out, float* lse, const float* q, const float* k, const float* v, const int* seg, int B, int T,
                               int Hq, int Hkv, int Dh, float scale, cudaStream_t s) {
  if ((int64_t)B * T * Hq == 0) return cudaSuccess;
  if (Hkv < 1 || Hq % Hkv != 0) return cudaErrorInvalidValue;
  if (Dh == 64) return launchFwd<64>(out, lse, q, k, v, seg, B, T, Hq, Hkv, scale, s);
  if (Dh == 128) return launchFwd<128>(out, lse, q, k, v, seg, B, T, Hq, Hkv, scale, s);
  return cudaErrorInvalidValue;
}

cudaError_t m1_flash_attention_bwd(float* dq, float* dk, float* dv, float* Dbuf, const float* dout, const float* q, const float* k,
                                   const float* v, const float* out, const float* lse, const int* seg, int B, int T, int Hq, int Hkv,
                                   int Dh, float scale, cudaStream_t s) {
  if ((int64_t)B * T * Hq == 0) return cudaSuccess;
  if (Hkv < 1 || Hq % Hkv != 0) return cudaErrorInvalidValue;
  if (Dh == 64) return launchBwd<64>(dq, dk, dv, Dbuf, dout, q, k, v, out, lse, seg, B, T, Hq, Hkv, scale, s);
  if (Dh == 128) return launchBwd<128>(dq, dk, dv, Dbuf, dout, q, k, v, out, lse, seg, B, T, Hq, Hkv, scale, s);
  return cudaErrorInvalidValue;
}

}  // extern "C"
