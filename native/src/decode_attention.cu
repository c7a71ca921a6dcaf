// Split-K ("flash-decoding") paged attention for the decode step: one query token per sequence
// against its paged KV cache.
//
// Why: a warp per (sequence, q head) walking all keys in order is latency-bound (one dependent
// key at a time, few warps at small batch) and reads each kv head's K/V once per q head of its
// GQA group. Here the keys are cut into chunks and each block owns (sequence, kv head, chunk):
//   pass 1 (k_decode_partial): the block reads its chunk's K rows once for ALL q heads of the group
//     (16-byte vector loads, a team of lanes per row), keeps the scores in shared memory, takes
//     per-head softmax stats over the chunk, then reads V once (threads over the head dim, so a
//     team's loads are one contiguous row) and writes, per (sequence, q head, chunk), the
//     unnormalised output o = Σ exp(s − m) v with its max m and sum l = Σ exp(s − m);
//   pass 2 (k_decode_combine): out = Σ_c o_c e^{m_c − M} / Σ_c l_c e^{m_c − M}, M = max_c m_c.
// When every sequence fits one chunk, pass 1 normalises and writes `out` itself (no scratch).
//
// Scratch layout (floats): opart [n, Hq, nChunks, Dh], then ml [n, Hq, nChunks, 2] = (m, l).
// Chunks at or past a sequence's length are skipped by both passes (the combine reads only the
// ceil(L / chunk) chunks that hold keys), so they need no neutral values.
#include "decode_attention.h"

#include <cuda_bf16.h>
#include <math_constants.h>

#include <climits>
#include <cstdint>

#include "kernels.h"
#include "warp.cuh"

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxChunk = 256;  // keys per block: 256 bf16 rows of Dh 128 are 64 KiB of K and of V
constexpr int kMinChunk = 64;
// K rows per team per iteration: kRows independent 16-byte loads in flight per lane (and 2·kRows V rows
// per thread in P·V). H200, M1-3B batch 512 at context 4096 with graphs: 2 → 36.0, 4 → 31.3, 8 → 36.6 ms
// per step (8: 119 registers, fewer blocks per SM).
constexpr int kRows = 4;
constexpr int kHeadsPerPass = 4;  // q heads whose P·V accumulators a thread holds at once (group > 4: V re-read, from L1/L2)
constexpr size_t kSmemLimit = 48 * 1024;  // the default dynamic shared-memory limit (no opt-in attribute needed)

/** a 16-byte vector of cache elements, widened to f32 */
template <typename E>
struct Pack;
template <>
struct Pack<float> {
  static constexpr int kElems = 4;
  __device__ __forceinline__ static void load(const float* p, float (&f)[4]) {
    float4 v = __ldg(reinterpret_cast<const float4*>(p));
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
    uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {  // bf16 → f32 is exact: the bf16 bits are the f32's high half (little-endian: low half first)
      f[2 * k] = __uint_as_float(w[k] << 16);
      f[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    }
  }
};


/** threads of a block that share one V row in pass 1's P·V: a row is Dh / elems 16-byte vectors */
__host__ __device__ inline int pvTeams(int Dh, int elems) { return kThreads / (Dh / elems); }

/** dynamic shared memory of k_decode_partial; the carve-up in the kernel follows this order */
inline size_t partialSmemBytes(int chunk, int group, int Dh, int elems) {
  int hp = group < kHeadsPerPass ? group : kHeadsPerPass;
  return (size_t)chunk * sizeof(int64_t)                             // rowOff: cache element offset of each key row
         + (size_t)group * Dh * sizeof(float)                        // qs: the group's queries
         + (size_t)group * chunk * sizeof(float)                     // sc: scores, then exp(s − m)
         + (size_t)pvTeams(Dh, elems) * hp * Dh * sizeof(float)      // red: per-team P·V partials
         + (size_t)2 * group * sizeof(float);                        // stat: m and l per head
}

/**
 * Pass 1; grid (n · nChunks, Hkv), block kThreads. Dh is a multiple of 8 and ≤ 256, so a row is a
 * whole number of 16-byte vectors (bf16: Dh/8 ≤ 32, f32: Dh/4 ≤ 64) and every row starts 16-byte aligned.
 */
template <typename E>
__global__ void __launch_bounds__(kThreads, 4)
    k_decode_partial(float* __restrict__ out, float* __restrict__ opart, float* __restrict__ ml, const float* __restrict__ q,
                     const E* __restrict__ kc, const E* __restrict__ vc, const int* __restrict__ bt, int maxBlocks,
                     const int* __restrict__ seqLens, int Hq, int Hkv, int Dh, int bsz, float scale, int chunk, int nChunks) {
  constexpr int EPV = Pack<E>::kElems;
  constexpr int KVJ = (256 / EPV + 31) / 32;  // 16-byte vectors of one K row per lane in the score pass (f32 Dh > 128: 2)
  const int i = blockIdx.x / nChunks, c = blockIdx.x % nChunks, g = blockIdx.y;
  const int group = Hq / Hkv, h0 = g * group;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const bool direct = nChunks == 1;
  const int L = seqLens[i], t0 = c * chunk;
  if (t0 >= L) {
    // no keys here (block-uniform exit, before any barrier); the combine pass never reads this
    // chunk, but a lone chunk is the output itself: seqLen 0 gives zeros
    if (direct)
      for (int e = tid; e < group * Dh; e += kThreads) out[((int64_t)i * Hq + h0) * Dh + e] = 0.f;
    return;
  }
  const int nTok = min(chunk, L - t0);
  const int V = Dh / EPV;
  const int hp = min(kHeadsPerPass, group);

  extern __shared__ float4 smemRaw[];
  int64_t* rowOff = reinterpret_cast<int64_t*>(smemRaw);
  float* qs = reinterpret_cast<float*>(rowOff + chunk);
  float* sc = qs + group * Dh;
  float* red = sc + (size_t)group * chunk;
  float* stat = red + (size_t)pvTeams(Dh, EPV) * hp * Dh;

  // ---- the chunk's row offsets through the block table, and the group's queries
  for (int t = tid; t < nTok; t += kThreads) {
    int s = t0 + t;
    int blk = bt[(int64_t)i * maxBlocks + s / bsz];
    rowOff[t] = (((int64_t)blk * bsz + s % bsz) * Hkv + g) * Dh;
  }
  const float* qg = q + ((int64_t)i * Hq + h0) * Dh;
  for (int e = tid; e < group * Dh; e += kThreads) qs[e] = qg[e];
  __syncthreads();

  // ---- scores: a team of T lanes per K row (T = V rounded up to a power of two, at most 32);
  // each row is read once and dotted with every q head of the group
  {
    int T = 1;
    while (T < V && T < 32) T <<= 1;
    const int rpw = 32 / T, sub = lane / T, tl = lane % T;
    // `base` is warp-uniform, so every lane runs the same shuffles
    for (int base = warp * rpw * kRows; base < nTok; base += kWarps * rpw * kRows) {
      float kf[kRows][KVJ][EPV];
#pragma unroll
      for (int r = 0; r < kRows; r++) {
        const int tok = base + r * rpw + sub;
#pragma unroll
        for (int j = 0; j < KVJ; j++) {
          const int v = tl + 32 * j;
          if (tok < nTok && v < V) {
            Pack<E>::load(kc + rowOff[tok] + v * EPV, kf[r][j]);
          } else {
#pragma unroll
            for (int e = 0; e < EPV; e++) kf[r][j][e] = 0.f;
          }
        }
      }
      for (int h = 0; h < group; h++) {
        float part[kRows];
#pragma unroll
        for (int r = 0; r < kRows; r++) part[r] = 0.f;
#pragma unroll
        for (int j = 0; j < KVJ; j++) {
          const int v = tl + 32 * j;
          if (v < V) {
            const float4* q4 = reinterpret_cast<const float4*>(qs + h * Dh + v * EPV);
#pragma unroll
            for (int u = 0; u < EPV / 4; u++) {
              float4 qq = q4[u];
#pragma unroll
              for (int r = 0; r < kRows; r++)
                part[r] += kf[r][j][4 * u] * qq.x + kf[r][j][4 * u + 1] * qq.y + kf[r][j][4 * u + 2] * qq.z + kf[r][j][4 * u + 3] * qq.w;
            }
          }
        }
        for (int o = T >> 1; o > 0; o >>= 1) {
#pragma unroll
          for (int r = 0; r < kRows; r++) part[r] += __shfl_xor_sync(0xffffffffu, part[r], o);
        }
        if (tl == 0) {
#pragma unroll
          for (int r = 0; r < kRows; r++) {
            const int tok = base + r * rpw + sub;
            if (tok < nTok) sc[h * chunk + tok] = scale * part[r];
          }
        }
      }
    }
  }
  __syncthreads();

  // ---- per-head softmax stats over the chunk (a warp per head); sc becomes exp(s − m).
  // nTok ≥ 1, so m is finite and l ≥ 1.
  for (int h = warp; h < group; h += kWarps) {
    float* row = sc + h * chunk;
    float m = -CUDART_INF_F;
    for (int t = lane; t < nTok; t += 32) m = fmaxf(m, row[t]);
    m = warpMax(m);
    float l = 0.f;
    for (int t = lane; t < nTok; t += 32) {
      float p = expf(row[t] - m);
      row[t] = p;
      l += p;
    }
    l = warpSum(l);
    if (lane == 0) {
      stat[h] = m;
      stat[group + h] = l;
    }
  }
  __syncthreads();

  // ---- P·V: a team of V threads per V row (thread vv holds elements [vv·EPV, vv·EPV + EPV) of the
  // head dim), teams over the chunk's tokens, kHeadsPerPass heads per pass; team partials are summed
  // in a fixed order through shared memory (deterministic)
  const int teams = pvTeams(Dh, EPV), team = tid / V, vv = tid % V;
  for (int hb = 0; hb < group; hb += kHeadsPerPass) {
    const int nh = min(kHeadsPerPass, group - hb);
    if (team < teams) {
      float acc[kHeadsPerPass][EPV];
#pragma unroll
      for (int hh = 0; hh < kHeadsPerPass; hh++) {
#pragma unroll
        for (int e = 0; e < EPV; e++) acc[hh][e] = 0.f;
      }
#pragma unroll(2 * kRows)  // V rows in flight per thread
      for (int t = team; t < nTok; t += teams) {
        float vf[EPV];
        Pack<E>::load(vc + rowOff[t] + vv * EPV, vf);
#pragma unroll
        for (int hh = 0; hh < kHeadsPerPass; hh++) {
          if (hh < nh) {
            const float p = sc[(hb + hh) * chunk + t];
#pragma unroll
            for (int e = 0; e < EPV; e++) acc[hh][e] += p * vf[e];
          }
        }
      }
#pragma unroll
      for (int hh = 0; hh < kHeadsPerPass; hh++) {
        if (hh < nh) {
#pragma unroll
          for (int e = 0; e < EPV; e++) red[((size_t)team * hp + hh) * Dh + vv * EPV + e] = acc[hh][e];
        }
      }
    }
    __syncthreads();
    for (int e = tid; e < nh * Dh; e += kThreads) {
      const int hh = e / Dh, d = e % Dh, h = h0 + hb + hh;
      float s = 0.f;
      for (int tm = 0; tm < teams; tm++) s += red[((size_t)tm * hp + hh) * Dh + d];
      if (direct) out[((int64_t)i * Hq + h) * Dh + d] = s / stat[group + hb + hh];
      else opart[(((int64_t)i * Hq + h) * nChunks + c) * Dh + d] = s;
    }
    __syncthreads();  // red is rewritten by the next pass
  }
  if (!direct && tid < group) {
    const int64_t pi = ((int64_t)i * Hq + h0 + tid) * nChunks + c;
    ml[2 * pi] = stat[tid];
    ml[2 * pi + 1] = stat[group + tid];
  }
}

/** pass 2: a warp per (sequence, q head), lanes over the head dim (Dh ≤ 256: 8 per lane) */
__global__ void k_decode_combine(float* __restrict__ out, const float* __restrict__ opart, const float* __restrict__ ml,
                                 const int* __restrict__ seqLens, int n, int Hq, int Dh, int chunk, int nChunks) {
  const int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= (int64_t)n * Hq) return;
  const int L = seqLens[w / Hq];
  int nc = L > 0 ? (L + chunk - 1) / chunk : 0;  // chunks that hold keys; all have m finite and l ≥ 1
  if (nc > nChunks) nc = nChunks;
  const float* mw = ml + w * nChunks * 2;
  const float* ow = opart + w * nChunks * Dh;
  float M = -CUDART_INF_F;
  for (int k = 0; k < nc; k++) M = fmaxf(M, mw[2 * k]);
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, l = 0.f;
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

int smCount() {
  static int count = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
      (void)cudaGetLastError();
      v = 132;
    }
    return v;
  }();
  return count;
}

/** how a launch is cut; the scratch query and the launcher must agree, so both come from here */
struct Plan {
  bool split = false;  // false: the one-warp-per-head kernel (m1_paged_decode)
  int chunk = 0, nChunks = 0;
  size_t smem = 0, scratch = 0;
};

Plan plan(int n, int Hq, int Hkv, int Dh, int bf16, int maxSeqLen) {
  Plan p;
  if (n <= 0 || Hq <= 0 || Hkv <= 0 || Hkv > 65535 || Hq % Hkv != 0 || Dh <= 0 || Dh % 8 != 0 || Dh > 256) return p;
  const int group = Hq / Hkv, elems = bf16 ? 8 : 4;
  int chunk = kMaxChunk;
  while (chunk > kMinChunk && partialSmemBytes(chunk, group, Dh, elems) > kSmemLimit) chunk /= 2;
  if (partialSmemBytes(chunk, group, Dh, elems) > kSmemLimit) return p;  // huge GQA groups: the fallback
  p.split = true;
  if (maxSeqLen <= 0) return p;  // nChunks 0: all outputs are zeros
  // a small batch gives few (sequence, kv head) pairs: cut the keys finer so the GPU fills up
  auto blocks = [&](int ch) { return (int64_t)n * Hkv * ((maxSeqLen + ch - 1) / ch); };
  while (chunk > kMinChunk && blocks(chunk) < 2LL * smCount()) chunk /= 2;
  const int64_t nChunks = (maxSeqLen + chunk - 1) / chunk;
  if ((int64_t)n * nChunks > INT_MAX) return Plan{};
  p.chunk = chunk;
  p.nChunks = (int)nChunks;
  p.smem = partialSmemBytes(chunk, group, Dh, elems);
  p.scratch = nChunks > 1 ? (size_t)n * Hq * nChunks * (Dh + 2) * sizeof(float) : 0;
  return p;
}

template <typename E>
cudaError_t launchSplit(const Plan& p, float* out, float* scratch, const float* q, const void* kc, const void* vc, const int* bt,
                        int maxBlocks, const int* seqLens, int n, int Hq, int Hkv, int Dh, int bsz, float scale, cudaStream_t s) {
  const bool direct = p.nChunks == 1;
  float* opart = direct ? nullptr : scratch;
  float* ml = direct ? nullptr : scratch + (size_t)n * Hq * p.nChunks * Dh;
  dim3 grid((unsigned)(n * p.nChunks), (unsigned)Hkv);
  k_decode_partial<E><<<grid, kThreads, p.smem, s>>>(out, opart, ml, q, (const E*)kc, (const E*)vc, bt, maxBlocks, seqLens, Hq, Hkv,
                                                     Dh, bsz, scale, p.chunk, p.nChunks);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess || direct) return e;
  const int64_t threads = (int64_t)n * Hq * 32;
  k_decode_combine<<<(unsigned)((threads + 127) / 128), 128, 0, s>>>(out, opart, ml, seqLens, n, Hq, Dh, p.chunk, p.nChunks);
  return cudaGetLastError();
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
