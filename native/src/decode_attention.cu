// Split-K ("flash-decoding") paged attention for the decode step: one query token per sequence
// against its paged KV cache.
//
// Why: a warp per (sequence, q head) walking all keys in order is latency-bound (one dependent key at a
// time, few warps at small batch) and reads each kv head's K/V once per q head of its GQA group. Here a
// block owns (sequence, kv head, chunk of keys, the q heads of the group — in blocks of 4 or 16). Pass 1 has
// two kernels: k_decode_partial_tc (below) on the tensor cores for bf16 caches at head dim 64 or 128 — the
// models' case, at ~4 TB/s on an H200 for long contexts (M1-3B batch 512, context 4096: 2.08 ms per layer for
// 8.6 GB of K and V) — and k_decode_partial on the CUDA cores for everything else (f32 caches, other head dims):
//   pass 1 (k_decode_partial): the chunk's keys are walked in tiles of TR rows; K and V rows of the next
//     tile are copied global → shared by cp.async (16-byte vectors, two stages) while the current tile is
//     used, so a block keeps a whole tile of loads in flight instead of a few per thread. Per tile:
//       scores: a team of T lanes per K row, each lane holding up to two 16-byte vectors of the row and the
//         same dims of the block's q heads in registers (pre-scaled), summed over the team by shuffles;
//       online softmax per head (a warp per head): running max m and sum l, the tile's exp(s − m) in
//         shared memory and the factor exp(m_old − m) by which the accumulators are rescaled;
//       P·V: a team of V threads per V row (thread vv: elements [vv·EPV, vv·EPV + EPV) of the head dim),
//         teams over the tile's rows, every head's accumulator in registers across tiles.
//     At the end the team partials are summed in a fixed order through shared memory (deterministic), and
//     the block writes, per (sequence, q head, chunk), the unnormalised o = Σ exp(s − m) v with m and l —
//     or, when a sequence is one chunk, the normalised output itself.
//   pass 2 (k_decode_combine): out = Σ_c o_c e^{m_c − M} / Σ_c l_c e^{m_c − M}, M = max_c m_c.
// The number of chunks per sequence, nChunks, is fixed per launch (from the batch: enough blocks to fill
// the GPU twice), but each sequence's chunk length comes from its own length on the device,
// chunkLen = ceil(ceil(L / nChunks) / TR) · TR, so a graph recorded once splits every later context evenly.
//
// Scratch layout (floats): opart [n, Hq, nChunks, Dh], then ml [n, Hq, nChunks, 2] = (m, l).
// Chunks at or past a sequence's length are skipped by both passes (the combine reads only the
// ceil(L / chunkLen) chunks that hold keys), so they need no neutral values.
#include "decode_attention.h"

#include <cuda_bf16.h>
#include <math_constants.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <type_traits>

#include "async_copy.cuh"
#include "flash_attention.h"
#include "kernels.h"
#include "mma.cuh"
#include "runtime.h"
#include "pdl.cuh"
#include "warp.cuh"

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kHeads = 4;                  // q heads per block (larger GQA groups: blockIdx.z over head blocks)
constexpr int kMaxTile = 64;               // K / V rows per stage
constexpr size_t kSmemCap = 72 * 1024;     // dynamic shared memory a block may take (opt-in above 48 KiB)

/** a 16-byte vector of cache elements, widened to f32 */
template <typename E>
struct Pack;
template <>
struct Pack<float> {
  static constexpr int kElems = 4;
  __device__ __forceinline__ static void load(const float* p, float (&f)[4]) {
    float4 v = *reinterpret_cast<const float4*>(p);
    f[0] = v.x;
    f[1] = v.y;
    f[2] = v.z;
    f[3] = v.w;
  }
};
template <>
struct Pack<__nv_bfloat16> {
  static constexpr int kElems = 8;
  __device__ __forceinline__ static void load(const __nv_bfloat16* p, float (&f)[8]) {
    uint4 u = *reinterpret_cast<const uint4*>(p);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {  // bf16 → f32 is exact: the bf16 bits are the f32's high half (little-endian: low half first)
      f[2 * k] = __uint_as_float(w[k] << 16);
      f[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    }
  }
};

/** lanes per K row in the score pass: the smallest power of two ≥ V / 2 (V = 16-byte vectors per row), so a lane holds ≤ 2 */
__host__ __device__ inline int scoreTeam(int V) {
  int T = 1;
  while (2 * T < V && T < 32) T <<= 1;
  return T;
}
/** threads per V row in P·V: one per 16-byte vector; teams = kThreads / V */
__host__ __device__ inline int pvTeams(int V) { return kThreads / V; }

/** the carve-up of k_decode_partial's dynamic shared memory (the kernel follows this order) */
struct Smem {
  size_t stageBytes, stages, sc, stat, total;
};
__host__ __device__ inline Smem smemLayout(int TR, int Dh, int esz) {
  Smem m;
  m.stageBytes = (size_t)2 * TR * Dh * esz;  // K rows then V rows
  const size_t red = (size_t)pvTeams(Dh * esz / 16) * kHeads * Dh * sizeof(float);  // team partials, after the loop
  m.stages = 2 * m.stageBytes > red ? 2 * m.stageBytes : red;
  m.sc = (size_t)kHeads * TR * sizeof(float);  // the tile's scores, then exp(s − m)
  m.stat = (size_t)3 * kHeads * sizeof(float);  // running m, running l, this tile's rescale factor
  m.total = m.stages + m.sc + m.stat;
  return m;
}

/** this sequence's keys per chunk: ⌈⌈L / nChunks⌉ / TR⌉ · TR (≥ TR) */
__host__ __device__ inline int chunkLength(int L, int nChunks, int TR) {
  const int per = (L + nChunks - 1) / nChunks, len = (per + TR - 1) / TR * TR;
  return len > TR ? len : TR;
}

/**
 * Pass 1; grid (n · nChunks, Hkv, ⌈group / kHeads⌉), block kThreads. Dh is a multiple of 8 and ≤ 256, so a
 * row is a whole number of 16-byte vectors (bf16: Dh/8 ≤ 32, f32: Dh/4 ≤ 64) and every row starts 16-byte
 * aligned (the launcher checks the cache pointers).
 */
template <typename E>
__global__ void __launch_bounds__(kThreads, 3) k_decode_partial(float* __restrict__ out, float* __restrict__ opart, float* __restrict__ ml,
                                                             const float* __restrict__ q, const E* __restrict__ kc, const E* __restrict__ vc,
                                                             const int* __restrict__ bt, int maxBlocks, const int* __restrict__ seqLens,
                                                             int Hq, int Hkv, int Dh, int bsz, float scale, int TR, int nChunks) {
  pdlStart();  // launched by pdlLaunch (pdl.cuh)
  constexpr int EPV = Pack<E>::kElems;
  const int i = blockIdx.x / nChunks, c = blockIdx.x % nChunks, g = blockIdx.y;
  const int group = Hq / Hkv, hFirst = blockIdx.z * kHeads, h0 = g * group + hFirst;
  const int hc = min(kHeads, group - hFirst);  // q heads of this block
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const bool direct = nChunks == 1;
  const int L = seqLens[i], chunk = chunkLength(L, nChunks, TR), t0 = c * chunk;
  if (t0 >= L) {
    // no keys here (block-uniform exit, before any barrier); the combine pass never reads this
    // chunk, but a lone chunk is the output itself: seqLen 0 gives zeros
    if (direct)
      for (int e = tid; e < hc * Dh; e += kThreads) out[((int64_t)i * Hq + h0) * Dh + e] = 0.f;
    return;
  }
  const int nTok = min(chunk, L - t0), nTiles = (nTok + TR - 1) / TR;
  const int V = Dh / EPV;

  extern __shared__ float4 smemRaw[];
  const Smem lay = smemLayout(TR, Dh, (int)sizeof(E));
  unsigned char* base = reinterpret_cast<unsigned char*>(smemRaw);
  float* sc = reinterpret_cast<float*>(base + lay.stages);
  float* mRun = sc + kHeads * TR;
  float* lRun = mRun + kHeads;
  float* alpha = lRun + kHeads;
  auto stageK = [&](int st) { return reinterpret_cast<E*>(base + st * lay.stageBytes); };

  // rows [r0, r0 + rows) of the chunk → stage st: K rows, then V rows, [row][Dh]
  auto issue = [&](int tile, int st) {
    E* Ks = stageK(st);
    E* Vs = Ks + (size_t)TR * Dh;
    const int r0 = tile * TR, rows = min(TR, nTok - r0);
    for (int e = tid; e < rows * V; e += kThreads) {
      const int r = e / V, v = e - r * V, s = t0 + r0 + r;
      const int blk = bt[(int64_t)i * maxBlocks + s / bsz];
      const int64_t off = (((int64_t)blk * bsz + s % bsz) * Hkv + g) * Dh + v * EPV;
      cpAsync16(Ks + r * Dh + v * EPV, kc + off, true);
      cpAsync16(Vs + r * Dh + v * EPV, vc + off, true);
    }
    cpAsyncCommit();
  };
  issue(0, 0);

  // the score pass's lane layout, and this lane's dims of the block's q heads (pre-scaled)
  const int T = scoreTeam(V), rpw = 32 / T, sub = lane / T, tl = lane % T;
  float qr[kHeads][2][EPV];
#pragma unroll
  for (int h = 0; h < kHeads; h++) {
#pragma unroll
    for (int j = 0; j < 2; j++) {
      const int v = tl + T * j;
#pragma unroll
      for (int e = 0; e < EPV; e++) qr[h][j][e] = 0.f;
      if (h < hc && v < V) {
        const float* qp = q + ((int64_t)i * Hq + h0 + h) * Dh + v * EPV;
#pragma unroll
        for (int e = 0; e < EPV; e++) qr[h][j][e] = scale * qp[e];
      }
    }
  }
  if (tid < kHeads) {
    mRun[tid] = -CUDART_INF_F;
    lRun[tid] = 0.f;
  }
  const int teams = pvTeams(V), team = tid / V, vv = tid - team * V;
  float acc[kHeads][EPV];
#pragma unroll
  for (int h = 0; h < kHeads; h++) {
#pragma unroll
    for (int e = 0; e < EPV; e++) acc[h][e] = 0.f;
  }

  for (int tile = 0; tile < nTiles; tile++) {
    const int st = tile & 1, rows = min(TR, nTok - tile * TR);
    __syncthreads();  // every thread is done with the previous tile (its stage is refilled next)
    if (tile + 1 < nTiles) {
      issue(tile + 1, st ^ 1);
      cpAsyncWaitOne();
    } else {
      cpAsyncWaitAll();
    }
    __syncthreads();  // this tile's rows, copied by all threads, are visible
    const E* Ks = stageK(st);
    const E* Vs = Ks + (size_t)TR * Dh;

    // ---- scores: team of T lanes per K row, rows rpw per warp per iteration (warp-uniform loop bounds)
    for (int r0 = warp * rpw; r0 < rows; r0 += kWarps * rpw) {
      const int r = r0 + sub;
      float kf[2][EPV];
#pragma unroll
      for (int j = 0; j < 2; j++) {
        const int v = tl + T * j;
        if (r < rows && v < V) {
          Pack<E>::load(Ks + r * Dh + v * EPV, kf[j]);
        } else {
#pragma unroll
          for (int e = 0; e < EPV; e++) kf[j][e] = 0.f;
        }
      }
#pragma unroll
      for (int h = 0; h < kHeads; h++) {
        if (h < hc) {  // block-uniform
          float part = 0.f;
#pragma unroll
          for (int j = 0; j < 2; j++) {
#pragma unroll
            for (int e = 0; e < EPV; e++) part += kf[j][e] * qr[h][j][e];
          }
          for (int o = T >> 1; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
          if (tl == 0 && r < rows) sc[h * TR + r] = part;
        }
      }
    }
    __syncthreads();

    // ---- online softmax per head (a warp per head): sc becomes exp(s − m_new); rows ≥ 1, so m is finite
    for (int h = warp; h < hc; h += kWarps) {
      float* row = sc + h * TR;
      float m = -CUDART_INF_F;
      for (int t = lane; t < rows; t += 32) m = fmaxf(m, row[t]);
      m = fmaxf(warpMax(m), mRun[h]);
      float l = 0.f;
      for (int t = lane; t < rows; t += 32) {
        const float p = expf(row[t] - m);
        row[t] = p;
        l += p;
      }
      l = warpSum(l);
      if (lane == 0) {
        const float a = expf(mRun[h] - m);  // the first tile: exp(−∞) = 0
        alpha[h] = a;
        lRun[h] = lRun[h] * a + l;
        mRun[h] = m;
      }
    }
    __syncthreads();

    // ---- P·V into the running accumulators
    if (team < teams) {
#pragma unroll
      for (int h = 0; h < kHeads; h++) {
        if (h < hc) {
          const float a = alpha[h];
#pragma unroll
          for (int e = 0; e < EPV; e++) acc[h][e] *= a;
        }
      }
#pragma unroll 4
      for (int t = team; t < rows; t += teams) {
        float vf[EPV];
        Pack<E>::load(Vs + t * Dh + vv * EPV, vf);
#pragma unroll
        for (int h = 0; h < kHeads; h++) {
          if (h < hc) {
            const float p = sc[h * TR + t];
#pragma unroll
            for (int e = 0; e < EPV; e++) acc[h][e] += p * vf[e];
          }
        }
      }
    }
  }
  __syncthreads();  // the stages are free: the team partials go there

  float* red = reinterpret_cast<float*>(base);
  if (team < teams) {
#pragma unroll
    for (int h = 0; h < kHeads; h++) {
      if (h < hc) {
#pragma unroll
        for (int e = 0; e < EPV; e++) red[((size_t)team * kHeads + h) * Dh + vv * EPV + e] = acc[h][e];
      }
    }
  }
  __syncthreads();
  for (int e = tid; e < hc * Dh; e += kThreads) {
    const int hh = e / Dh, d = e - hh * Dh, h = h0 + hh;
    float s = 0.f;
    for (int tm = 0; tm < teams; tm++) s += red[((size_t)tm * kHeads + hh) * Dh + d];
    if (direct) out[((int64_t)i * Hq + h) * Dh + d] = s / lRun[hh];
    else opart[(((int64_t)i * Hq + h) * nChunks + c) * Dh + d] = s;
  }
  if (!direct && tid < hc) {
    const int64_t pi = ((int64_t)i * Hq + h0 + tid) * nChunks + c;
    ml[2 * pi] = mRun[tid];
    ml[2 * pi + 1] = lRun[tid];
  }
}

// ------------------------------------------------------------------------------------------------
// pass 1 on the tensor cores (bf16 caches, Dh 64 or 128): the path for the models' shapes
//
// The CUDA-core pass 1 above spends ~5 instructions per cached element (unpacking, FMAs per head, shuffles,
// barriers) and is instruction-bound at about a third of the memory bandwidth. Here each warp is an
// independent flash-decoding split of the block's chunk: warp w takes the 16-key tiles w, w + 4, w + 8, …,
// copies each tile's K and V rows global → shared itself (cp.async, two stages per warp, no block barrier in
// the loop) and runs, with the rows of the mma = the q heads of the block (up to 16; rows past the group are
// zeros) and f32 accumulation:
//   S = Q·Kᵀ (Q from shared memory by ldmatrix, K by ldmatrix as the col-major B operand),
//   online softmax in base 2 on the C fragments (row max / sum over the 4 lanes of a quad),
//   O += P·V (P straight from the C fragments as the A operand, V by ldmatrix.trans).
// Q and P are split into bf16 hi + lo parts (x ≈ hi + lo to 2⁻¹⁶ relative), each product done for both, so the
// result keeps f32-level accuracy against the exact bf16 K and V (the tensor cores are far from busy here).
// At the end the 4 warps' (m, l, O) are merged through shared memory in a fixed order.
constexpr int kTcWarps = 4, kTcRows = 16, kTcHeads = 16;

template <int DH>
struct TcSmem {
  static constexpr int LD = DH + 8;                            // bf16 row stride (16-byte aligned rows, conflict-free ldmatrix)
  static constexpr int stage = 2 * kTcRows * LD;               // one warp stage: K rows then V rows
  static constexpr size_t q = (size_t)2 * kTcHeads * LD * 2;   // Q hi, Q lo [16][LD]
  static constexpr size_t warps = (size_t)kTcWarps * 2 * stage * 2;  // two stages per warp
  static constexpr size_t merge = (size_t)kTcWarps * kTcHeads * (DH + 2) * sizeof(float);  // O, m, l per warp (after the loop)
  static constexpr size_t total = q + (warps > merge ? warps : merge);
};

template <int DH>
__global__ void __launch_bounds__(kTcWarps * 32, 2)
    k_decode_partial_tc(float* __restrict__ out, float* __restrict__ opart, float* __restrict__ ml, const float* __restrict__ q,
                        const __nv_bfloat16* __restrict__ kc, const __nv_bfloat16* __restrict__ vc, const int* __restrict__ bt,
                        int maxBlocks, const int* __restrict__ seqLens, int Hq, int Hkv, int bsz, float scale, int nChunks) {
  pdlStart();  // launched by pdlLaunch (pdl.cuh)
  using S = TcSmem<DH>;
  constexpr int LD = S::LD, NT = DH / 8, V = DH / 8;  // n-tiles of O; 16-byte vectors per row
  const int i = blockIdx.x / nChunks, c = blockIdx.x % nChunks, g = blockIdx.y;
  const int group = Hq / Hkv, hFirst = blockIdx.z * kTcHeads, h0 = g * group + hFirst;
  const int hc = min(kTcHeads, group - hFirst);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gid = lane >> 2, quad = lane & 3;
  const bool direct = nChunks == 1;
  const int L = seqLens[i], chunk = chunkLength(L, nChunks, kTcWarps * kTcRows), t0 = c * chunk;
  if (t0 >= L) {
    if (direct)
      for (int e = tid; e < hc * DH; e += blockDim.x) out[((int64_t)i * Hq + h0) * DH + e] = 0.f;
    return;
  }
  const int nTok = min(chunk, L - t0);

  extern __shared__ float4 smemRaw[];
  __nv_bfloat16* qHi = reinterpret_cast<__nv_bfloat16*>(smemRaw);
  __nv_bfloat16* qLo = qHi + kTcHeads * LD;
  unsigned char* rest = reinterpret_cast<unsigned char*>(smemRaw) + S::q;
  __nv_bfloat16* myStages = reinterpret_cast<__nv_bfloat16*>(rest) + (size_t)warp * 2 * S::stage;

  // Q · scale · log2(e), split into bf16 hi + lo; rows past the block's heads are zeros
  const float qs = scale * 1.4426950408889634f;
  for (int e = tid; e < kTcHeads * DH; e += blockDim.x) {
    const int r = e / DH, d = e - r * DH;
    const float x = r < hc ? qs * q[((int64_t)i * Hq + h0 + r) * DH + d] : 0.f;
    const __nv_bfloat16 hi = __float2bfloat16_rn(x);
    qHi[r * LD + d] = hi;
    qLo[r * LD + d] = __float2bfloat16_rn(x - __bfloat162float(hi));
  }

  // this warp's tiles: keys [16·(4·it + warp), +16) of the chunk
  const int nWarpTiles = (nTok + kTcRows - 1) / kTcRows;
  const int myTiles = nWarpTiles > warp ? (nWarpTiles - warp + kTcWarps - 1) / kTcWarps : 0;
  // lane r < 16 looks up the cache offset of row r of a tile (a block-table read); the copy lanes get it by shuffles
  auto rowOffset = [&](int it) -> int64_t {
    const int r = (kTcWarps * it + warp) * kTcRows + (lane & 15);
    if (it >= myTiles || r >= nTok) return -1;
    const int s = t0 + r;
    const int blk = bt[(int64_t)i * maxBlocks + s / bsz];
    return (((int64_t)blk * bsz + s % bsz) * Hkv + g) * DH;
  };
  // lane l copies vector l % 16 of rows l / 16, l / 16 + 2, …; rows past the chunk are zero-filled
  auto issue = [&](int st, int64_t off) {
    __nv_bfloat16* Ks = myStages + st * S::stage;
    __nv_bfloat16* Vs = Ks + kTcRows * LD;
#pragma unroll
    for (int k = 0; k < kTcRows / 2; k++) {
      const int r = (lane >> 4) + 2 * k;
#pragma unroll
      for (int vv = 0; vv < V / 16 + (V % 16 != 0); vv++) {
        const int v = (lane & 15) + 16 * vv;
        const int64_t o = __shfl_sync(0xffffffffu, off, r);
        if (v < V) {
          const bool ok = o >= 0;
          cpAsync16(Ks + r * LD + 8 * v, ok ? kc + o + 8 * v : kc, ok);
          cpAsync16(Vs + r * LD + 8 * v, ok ? vc + o + 8 * v : vc, ok);
        }
      }
    }
    cpAsyncCommit();
  };

  float o[NT][4];
#pragma unroll
  for (int d = 0; d < NT; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  float mRow[2] = {-CUDART_INF_F, -CUDART_INF_F}, lRow[2] = {0.f, 0.f};  // rows gid, gid + 8 (base 2; l: this lane's part)

  int64_t offNext = rowOffset(0);
  if (myTiles > 0) issue(0, offNext);
  offNext = rowOffset(1);
  __syncthreads();  // Q is in shared memory
  for (int it = 0; it < myTiles; it++) {
    const int st = it & 1;
    __syncwarp();  // every lane is done with the stage the next copy refills
    if (it + 1 < myTiles) {
      issue(st ^ 1, offNext);
      offNext = rowOffset(it + 2);
      cpAsyncWaitOne();
    } else {
      cpAsyncWaitAll();
    }
    __syncwarp();  // the tile's rows, copied by all lanes, are visible to the warp
    const __nv_bfloat16* Ks = myStages + st * S::stage;
    const __nv_bfloat16* Vs = Ks + kTcRows * LD;
    const int valid = nTok - (kTcWarps * it + warp) * kTcRows;  // keys of this tile (≥ 1; ≥ 16: full)

    // S = Q·Kᵀ: n-tile j = keys 8j..8j+7 of the tile
    float sc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
    for (int k2 = 0; k2 < DH / 32; k2++) {  // two k-steps (32 dims) per ldmatrix of K
      uint32_t b[2][4];
#pragma unroll
      for (int j = 0; j < 2; j++) ldB2steps<LD>(b[j][0], b[j][1], b[j][2], b[j][3], Ks + 8 * j * LD + 32 * k2, lane);
#pragma unroll
      for (int h = 0; h < 2; h++) {
        uint32_t aHi[4], aLo[4];
        ldA4<LD>(aHi, qHi + 32 * k2 + 16 * h, lane);
        ldA4<LD>(aLo, qLo + 32 * k2 + 16 * h, lane);
#pragma unroll
        for (int j = 0; j < 2; j++) {
          mma16816(sc[j], aHi, b[j][2 * h], b[j][2 * h + 1]);
          mma16816(sc[j], aLo, b[j][2 * h], b[j][2 * h + 1]);
        }
      }
    }
    // keys past the chunk: −∞
    if (valid < kTcRows) {
#pragma unroll
      for (int j = 0; j < 2; j++) {
        const int k0 = 8 * j + 2 * quad;
        if (k0 >= valid) sc[j][0] = sc[j][2] = -CUDART_INF_F;
        if (k0 + 1 >= valid) sc[j][1] = sc[j][3] = -CUDART_INF_F;
      }
    }
    // online softmax per row (rows gid: elements 0, 1; gid + 8: 2, 3), max over the quad
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
      float mx = fmaxf(fmaxf(sc[0][2 * rr], sc[0][2 * rr + 1]), fmaxf(sc[1][2 * rr], sc[1][2 * rr + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float mNew = fmaxf(mRow[rr], mx);  // finite: the tile has a key
      const float alpha = exp2f(mRow[rr] - mNew);
      mRow[rr] = mNew;
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < 2; j++) {
        sc[j][2 * rr] = exp2f(sc[j][2 * rr] - mNew);
        sc[j][2 * rr + 1] = exp2f(sc[j][2 * rr + 1] - mNew);
        sum += sc[j][2 * rr] + sc[j][2 * rr + 1];
      }
      lRow[rr] = lRow[rr] * alpha + sum;
#pragma unroll
      for (int d = 0; d < NT; d++) {
        o[d][2 * rr] *= alpha;
        o[d][2 * rr + 1] *= alpha;
      }
    }
    // O += P·V with P = hi + lo
    uint32_t pHi[4], pLo[4];
    cToA(pHi, sc[0], sc[1]);
    {
      // the rounding residue of each P element, P − bf16(P), in the same fragment order
      const __nv_bfloat162* hp = reinterpret_cast<const __nv_bfloat162*>(pHi);
      const float2 a0 = __bfloat1622float2(hp[0]), a1 = __bfloat1622float2(hp[1]), a2 = __bfloat1622float2(hp[2]),
                   a3 = __bfloat1622float2(hp[3]);
      const float r0[4] = {sc[0][0] - a0.x, sc[0][1] - a0.y, sc[0][2] - a1.x, sc[0][3] - a1.y};
      const float r1[4] = {sc[1][0] - a2.x, sc[1][1] - a2.y, sc[1][2] - a3.x, sc[1][3] - a3.y};
      cToA(pLo, r0, r1);
    }
    mmaRowsTrans<DH>(o, pHi, Vs, lane);
    mmaRowsTrans<DH>(o, pLo, Vs, lane);
  }

  // merge the warps: each writes its rows' O (unnormalised, relative to its m), m and l (summed over the quad)
  __syncthreads();  // every warp is done with its stages: the merge area overlays them
  float* mO = reinterpret_cast<float*>(rest);  // [warp][row][DH]
  float* mM = mO + (size_t)kTcWarps * kTcHeads * DH;  // [warp][row]
  float* mL = mM + kTcWarps * kTcHeads;
#pragma unroll
  for (int rr = 0; rr < 2; rr++) {
    float l = lRow[rr];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int row = gid + 8 * rr;
    if (row < hc) {
      if (quad == 0) {
        mM[warp * kTcHeads + row] = mRow[rr];
        mL[warp * kTcHeads + row] = l;
      }
#pragma unroll
      for (int d = 0; d < NT; d++) {
        float* dst = mO + ((size_t)warp * kTcHeads + row) * DH + 8 * d + 2 * quad;
        dst[0] = o[d][2 * rr];
        dst[1] = o[d][2 * rr + 1];
      }
    }
  }
  __syncthreads();
  constexpr float kLn2 = 0.6931471805599453f;
  for (int e = tid; e < hc * DH; e += blockDim.x) {
    const int hh = e / DH, d = e - hh * DH, h = h0 + hh;
    float M = -CUDART_INF_F;
#pragma unroll
    for (int w = 0; w < kTcWarps; w++) M = fmaxf(M, mM[w * kTcHeads + hh]);
    float s = 0.f, l = 0.f;
#pragma unroll
    for (int w = 0; w < kTcWarps; w++) {
      const float f = exp2f(mM[w * kTcHeads + hh] - M);  // a warp without keys: m = −∞, f = 0
      s += f * mO[((size_t)w * kTcHeads + hh) * DH + d];
      l += f * mL[w * kTcHeads + hh];
    }
    if (direct) {
      out[((int64_t)i * Hq + h) * DH + d] = s / l;
    } else {
      const int64_t pi = ((int64_t)i * Hq + h) * nChunks + c;
      opart[pi * DH + d] = s;
      if (d == 0) {  // the combine pass works in natural units: m·ln 2
        ml[2 * pi] = M * kLn2;
        ml[2 * pi + 1] = l;
      }
    }
  }
}

/** pass 2: a warp per (sequence, q head), lanes over the head dim (Dh ≤ 256: 8 per lane) */
__global__ void k_decode_combine(float* __restrict__ out, const float* __restrict__ opart, const float* __restrict__ ml,
                                 const int* __restrict__ seqLens, int n, int Hq, int Dh, int TR, int nChunks) {
  pdlStart();  // launched by pdlLaunch (pdl.cuh)
  const int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= (int64_t)n * Hq) return;
  const int L = seqLens[w / Hq];
  const int chunk = chunkLength(L, nChunks, TR);
  const int nc = min(nChunks, (L + chunk - 1) / chunk);  // chunks that hold keys; all have m finite and l ≥ 1
  const float* mw = ml + w * nChunks * 2;
  const float* ow = opart + w * nChunks * Dh;
  float M = -CUDART_INF_F;
  for (int k = 0; k < nc; k++) M = fmaxf(M, mw[2 * k]);
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, l = 0.f;
#pragma unroll 4
  for (int k = 0; k < nc; k++) {
    const float wk = expf(mw[2 * k] - M);
    l += wk * mw[2 * k + 1];
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const int d = lane + 32 * j;
      if (d < Dh) acc[j] += wk * ow[(int64_t)k * Dh + d];
    }
  }
#pragma unroll
  for (int j = 0; j < 8; j++) {
    const int d = lane + 32 * j;
    if (d < Dh) out[w * Dh + d] = nc > 0 ? acc[j] / l : 0.f;
  }
}


/** how a launch is cut; the scratch query and the launcher must agree, so both come from here */
struct Plan {
  bool split = false;  // false: the one-warp-per-head kernel (m1_paged_decode)
  int tc = 0;          // the tensor-core pass 1 for this head dim (64 or 128), or 0: the CUDA-core one
  int tile = 0, nChunks = 0, headBlocks = 0;
  size_t smem = 0, scratch = 0;
};

Plan plan(int n, int Hq, int Hkv, int Dh, int bf16, int maxSeqLen) {
  Plan p;
  if (n <= 0 || Hq <= 0 || Hkv <= 0 || Hkv > 65535 || Hq % Hkv != 0 || Dh <= 0 || Dh % 8 != 0 || Dh > 256) return p;
  const int group = Hq / Hkv, esz = bf16 ? 2 : 4;
  p.split = true;
  if (bf16 && (Dh == 64 || Dh == 128)) {
    p.tc = Dh;
    p.tile = kTcWarps * kTcRows;
    p.headBlocks = (group + kTcHeads - 1) / kTcHeads;
    p.smem = Dh == 64 ? TcSmem<64>::total : TcSmem<128>::total;
  } else {
    int tile = kMaxTile;
    while (tile > 8 && smemLayout(tile, Dh, esz).total > kSmemCap) tile /= 2;
    p.tile = tile;
    p.headBlocks = (group + kHeads - 1) / kHeads;
    p.smem = smemLayout(tile, Dh, esz).total;
  }
  if (p.headBlocks > 65535) return Plan{};
  if (maxSeqLen <= 0) return p;  // nChunks 0: all outputs are zeros
  // chunks per sequence: enough blocks for two full waves (blocks per SM from the shared memory), and no
  // more than the longest sequence has tiles
  const int64_t perSm = std::max<int64_t>(1, std::min<int64_t>(2048 / kThreads, (int64_t)(227 * 1024) / (int64_t)(p.smem + 1024)));
  const int64_t want = 2 * m1SmCount() * perSm, pairs = (int64_t)n * Hkv * p.headBlocks;
  int64_t nChunks = std::min<int64_t>((want + pairs - 1) / pairs, (maxSeqLen + p.tile - 1) / p.tile);
  nChunks = std::max<int64_t>(1, nChunks);
  if ((int64_t)n * nChunks > INT_MAX) return Plan{};
  p.nChunks = (int)nChunks;
  p.scratch = nChunks > 1 ? (size_t)n * Hq * nChunks * (Dh + 2) * sizeof(float) : 0;
  return p;
}

template <typename E>
cudaError_t launchSplit(const Plan& p, float* out, float* scratch, const float* q, const void* kc, const void* vc, const int* bt,
                        int maxBlocks, const int* seqLens, int n, int Hq, int Hkv, int Dh, int bsz, float scale, cudaStream_t s) {
  const bool direct = p.nChunks == 1;
  float* opart = direct ? nullptr : scratch;
  float* ml = direct ? nullptr : scratch + (size_t)n * Hq * p.nChunks * Dh;
  const dim3 grid((unsigned)(n * p.nChunks), (unsigned)Hkv, (unsigned)p.headBlocks);
  cudaError_t e = cudaSuccess;
  if constexpr (std::is_same_v<E, __nv_bfloat16>) {
    if (p.tc) {
      static bool ready64 = false, ready128 = false;  // shared memory above 48 KiB, once per kernel
      const auto* k = (const __nv_bfloat16*)kc;
      const auto* v = (const __nv_bfloat16*)vc;
      if (p.tc == 64) {
        e = m1AllowSmem(k_decode_partial_tc<64>, p.smem, ready64);
        if (e == cudaSuccess)
          e = pdlLaunch(k_decode_partial_tc<64>, grid, kTcWarps * 32, p.smem, s, out, opart, ml, q, k, v, bt, maxBlocks, seqLens, Hq, Hkv, bsz,
                        scale, p.nChunks);
      } else {
        e = m1AllowSmem(k_decode_partial_tc<128>, p.smem, ready128);
        if (e == cudaSuccess)
          e = pdlLaunch(k_decode_partial_tc<128>, grid, kTcWarps * 32, p.smem, s, out, opart, ml, q, k, v, bt, maxBlocks, seqLens, Hq, Hkv,
                        bsz, scale, p.nChunks);
      }
    }
  }
  if (!p.tc) {
    static bool ready = false;  // per cache type: shared memory above 48 KiB and the carveout for several blocks per SM
    e = m1AllowSmem(k_decode_partial<E>, kSmemCap, ready);
    if (e == cudaSuccess)
      e = pdlLaunch(k_decode_partial<E>, grid, kThreads, p.smem, s, out, opart, ml, q, (const E*)kc, (const E*)vc, bt, maxBlocks, seqLens, Hq,
                    Hkv, Dh, bsz, scale, p.tile, p.nChunks);
  }
  if (e == cudaSuccess) e = cudaGetLastError();
  if (e != cudaSuccess || direct) return e;
  const int64_t threads = (int64_t)n * Hq * 32;
  e = pdlLaunch(k_decode_combine, (unsigned)((threads + 127) / 128), 128, 0, s, out, opart, ml, seqLens, n, Hq, Dh, p.tile, p.nChunks);
  return e != cudaSuccess ? e : cudaGetLastError();
}

}  // namespace

extern "C" {

size_t m1_decode_attention_scratch_bytes(int n, int Hq, int Hkv, int Dh, int bf16, int maxSeqLen) {
  return plan(n, Hq, Hkv, Dh, bf16, maxSeqLen).scratch;
}

cudaError_t m1_decode_attention(float* out, void* scratch, const float* q, const void* kc, const void* vc, int bf16, const int* bt,
                                int maxBlocks, const int* seqLens, int maxSeqLen, int n, int Hq, int Hkv, int Dh, int bsz, float scale,
                                cudaStream_t s) {
  if ((int64_t)n * Hq == 0) return cudaSuccess;
  const Plan p = plan(n, Hq, Hkv, Dh, bf16, maxSeqLen);
  const bool aligned = (((uintptr_t)kc | (uintptr_t)vc) & 15) == 0;  // the 16-byte vector loads
  if (!p.split || !aligned) return m1_paged_decode(out, q, kc, vc, bf16, bt, maxBlocks, seqLens, n, Hq, Hkv, Dh, bsz, scale, s);
  if (p.nChunks == 0) return cudaMemsetAsync(out, 0, (size_t)n * Hq * Dh * sizeof(float), s);
  if (p.scratch > 0 && !scratch) return cudaErrorInvalidValue;
  if (bf16)
    return launchSplit<__nv_bfloat16>(p, out, (float*)scratch, q, kc, vc, bt, maxBlocks, seqLens, n, Hq, Hkv, Dh, bsz, scale, s);
  return launchSplit<float>(p, out, (float*)scratch, q, kc, vc, bt, maxBlocks, seqLens, n, Hq, Hkv, Dh, bsz, scale, s);
}

}  // extern "C"
