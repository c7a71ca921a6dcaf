// Token sampling on the device, equal to the host definition (RowSampler.sample in
// src/backend/cpu/sampling.ts) for the same uniforms. Per output row, with m = the row's max:
//   w_j = exp((x_j − m) · invT), invT = 1/T, all in f64 as on the host;
//   no filter (top-k off, top-p 1, min-p 0): the first id, in id order, whose running sum of w exceeds
//     u · Σw (the last id when rounding leaves none);
//   filters: the candidates w ≥ cut (cut = minP, raised to (1 − topP)/V · Σw for top-p without top-k)
//     sorted by (w descending, id ascending), cut to top-k, then to the top-p prefix (its mass measured
//     over the top-k survivors), then the first whose running sum exceeds u · (their sum).
//   greedy rows: the first maximum. logprob: x_id − m − log Σ exp(x_j − m), f64, stored as f32.
//
// Two kernels, one block per output row each:
//   k_sample_stats (512 threads): max and first argmax, Σ exp(x − m) for the logprob, Σ w. Greedy rows
//     and unfiltered rows finish here: the inverse CDF in id order is a descent over contiguous
//     segments (16 per level, one per warp, read coalesced by the warp): segment sums, a serial
//     prefix over the 16 sums finds the segment holding u · Σw, and the next level splits that segment
//     (V = 128256: 8032 → 512 → 32 ids), until one warp scans the last ≤ 32 ids with shuffles.
//   k_sample_sorted (512 threads, `cap` entries of shared memory, 12 bytes each): filtered rows.
//     The candidates are collected into shared memory (a warp-aggregated atomic slot counter), sorted
//     by a bitonic network on (bits of w descending, id ascending), and thread 0 runs the host's
//     prefix loops over the sorted list in the host's order. Candidate sets:
//       top-k (k ≤ cap): the top-k of the whole vocabulary is what the host uses (its prefix that passes
//         min-p, and the sum of the k largest weights for top-p), so a radix select on the f32 logits
//         (11/11/10-bit digits, stopping once ≤ cap logits lie at or above the digit prefix) gives a
//         logit x_lo with ≥ k logits at or above it, and the candidates are w ≥ w(x_lo) (w is
//         monotone in x; a 1e-12 relative margin covers a non-monotone last bit of exp);
//       top-k off: w ≥ cut itself when that fits; when it does not and top-p < 1, the ~7/8·cap largest
//         (radix select again, then w ≥ max(w(x_lo), cut)), accepted if the nucleus ends inside them.
//     Anything else (more candidates than cap, massive ties at the threshold, a nucleus past the
//     collected prefix, non-finite rows) is declined: ids[i] = −1, and the caller runs the host
//     definition for that row, so the result is the definition's whatever the kernel supports.
//
// Exactness. Every decision uses the same f64 operations as the host on the same f32 inputs (x − m,
// · invT, 1/T, (1 − topP)/V · Σ, topP · z, u · total: no multiply-add pairs that could be contracted),
// and the serial loops over the sorted candidates add in the host's order. Two things differ in the
// last bits: CUDA's exp (≤ 1 ulp from V8's) and the order of the vocabulary-wide sums (Σw in a tree,
// the unfiltered inverse CDF's prefix in segments). A token can differ only when u·total, topP·z or a
// cut lies within ~1e-15 (relative) of a running sum or weight: with 53-bit uniforms, about V·1e-16 per
// row.
#include "sampling.h"

#include <math_constants.h>

#include <climits>
#include <cstdint>

#include "warp.cuh"

namespace {

constexpr int kStatThreads = 512;
constexpr int kStatWarps = kStatThreads / 32;
constexpr int kSortThreads = 512;  // two blocks per SM (registers ≤ 64, 2 × 96 KiB of shared memory)
constexpr int kMaxCap = 8192;  // 96 KiB of keys + ids
constexpr int kMinCap = 1024;  // the radix histogram (2048 × 4 bytes) lives in the same buffer
// when top-p's candidates overflow, how many of the largest to take (slack for ties at the threshold)
constexpr int kNucleusSlackDiv = 8;
// the w ≥ τ test after a radix threshold on x must keep every x at or above x_lo, even if exp were
// non-monotone in its last bit
constexpr double kThresholdMargin = 1e-12;
// prescreen: exp(a) < τ is certain when a < log τ − this (exp / log are accurate to ~1e-16 relative)
constexpr double kPrescreen = 1e-6;

struct RowPlan {
  double sum;     // Σ w (f64)
  double logSum;  // log Σ exp(x − m)
  float m;
  int state;  // 0 done by k_sample_stats, 1 for k_sample_sorted, −1 declined
};

struct RowParams {
  int row;
  double T, topP, minP, u;
  int topK;
};

__device__ __forceinline__ RowParams loadParams(const double* params, int64_t i) {
  const double* p = params + i * kSampleParams;
  RowParams r;
  r.row = (int)p[0];
  r.T = p[1];
  r.topP = p[2];
  r.topK = (int)p[3];
  r.minP = p[4];
  r.u = p[5];
  return r;
}

/** the host's weight: Math.exp((row[i] − m) · invT) with row[i], m f32 values held in f64 */
__device__ __forceinline__ double weightOf(float x, float m, double invT) { return exp(((double)x - (double)m) * invT); }

__device__ __forceinline__ int64_t roundUp32(int64_t v) { return (v + 31) / 32 * 32; }

/** f32 → uint32 whose unsigned order is the float order (−inf < … < −0 < +0 < … < +inf) */
__device__ __forceinline__ unsigned orderKey(float f) {
  unsigned u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float keyToFloat(unsigned k) { return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k); }
constexpr unsigned kKeyNegInf = 0x007fffffu;  // orderKey(−inf): the smallest key that is not a NaN

/** a double's bits: for w ≥ 0 the unsigned order is the numeric order */
__device__ __forceinline__ unsigned long long wKey(double w) { return (unsigned long long)__double_as_longlong(w); }
__device__ __forceinline__ double keyW(unsigned long long k) { return __longlong_as_double((long long)k); }

// ---------------------------------------------------------------------------------------------
// kernel 1: row statistics; greedy and unfiltered rows

__global__ void __launch_bounds__(kStatThreads) k_sample_stats(int* ids, float* logprobs, RowPlan* plan, const float* x,
                                                                const double* params, int64_t V) {
  __shared__ float shMax[kStatWarps];
  __shared__ int shArg[kStatWarps];
  __shared__ double shSeg[kStatWarps];
  __shared__ double shS1[kStatWarps];
  __shared__ double shTotal, shLogSum, shRun;
  __shared__ long long shLo, shHi;
  __shared__ int shResult;

  const int64_t i = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const RowParams p = loadParams(params, i);
  const float* xr = x + (int64_t)p.row * V;

  // max and its first index (NaN never wins, as in the host's comparisons)
  float best = -CUDART_INF_F;
  int bi = INT_MAX;
  for (int64_t j = tid; j < V; j += kStatThreads) {
    float v = xr[j];
    if (v > best) { best = v; bi = (int)j; }
  }
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, best, o);
    int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
  }
  if (lane == 0) { shMax[warp] = best; shArg[warp] = bi; }
  __syncthreads();
  if (tid == 0) {
    for (int w = 1; w < kStatWarps; w++)
      if (shMax[w] > best || (shMax[w] == best && shArg[w] < bi)) { best = shMax[w]; bi = shArg[w]; }
    shMax[0] = best;
    shArg[0] = bi;
  }
  __syncthreads();
  const float m = shMax[0];
  // argmax(row) on the host starts from row[0]: an all −inf row, or a NaN at 0, gives 0
  const int arg = (shArg[0] == INT_MAX || xr[0] != xr[0]) ? 0 : shArg[0];

  const bool greedy = p.T == 0.0;
  const double invT = greedy ? 1.0 : 1.0 / p.T;
  const bool s1IsSum = !greedy && invT == 1.0;  // then exp(x − m) is w itself

  // Σ w per contiguous warp segment (level 0 of the descent) and Σ exp(x − m) for the logprob
  const int64_t seg0 = roundUp32((V + kStatWarps - 1) / kStatWarps);
  {
    const int64_t a = warp * seg0, b = a + seg0 < V ? a + seg0 : V;
    double s = 0.0, s1 = 0.0;
    for (int64_t j = a + lane; j < b; j += 32) {
      const double d = (double)xr[j] - (double)m;
      if (!greedy) s += exp(d * invT);
      if (!s1IsSum) s1 += exp(d);
    }
    s = warpSum(s);
    s1 = warpSum(s1);
    if (lane == 0) { shSeg[warp] = s; shS1[warp] = s1; }
  }
  __syncthreads();
  if (tid == 0) {
    double total = 0.0, s1 = 0.0;
    for (int w = 0; w < kStatWarps; w++) { total += shSeg[w]; s1 += shS1[w]; }
    shTotal = total;
    shLogSum = log(s1IsSum ? total : s1);
    shResult = -1;
  }
  __syncthreads();
  const double total = shTotal, logSum = shLogSum;

  if (greedy) {
    if (tid == 0) {
      ids[i] = arg;
      logprobs[i] = (float)((double)xr[arg] - (double)m - logSum);
      plan[i].state = 0;
    }
    return;
  }
  // the host throws on a row without a finite max, and NaN weights take its rounding fallback: both the
  // host's business
  if (!(isfinite(m) && isfinite(total) && total > 0.0)) {
    if (tid == 0) { ids[i] = -1; plan[i].state = -1; }
    return;
  }
  const bool topKOn = p.topK > 0 && p.topK < V;
  if (topKOn || p.topP < 1.0 || p.minP > 0.0) {
    if (tid == 0) {
      ids[i] = -1;
      plan[i] = RowPlan{total, logSum, m, 1};
    }
    return;
  }

  // unfiltered: descend to the id where the running sum in id order first exceeds u · Σw
  const double target = p.u * total;
  int64_t lo = 0, hi = V, segLen = seg0;
  double running = 0.0;
  for (;;) {
    if (tid == 0) {
      double c = running;
      int pick = -1, last = -1;
      for (int w = 0; w < kStatWarps && lo + w * segLen < hi; w++) {
        if (shSeg[w] > 0.0) last = w;
        const double next = c + shSeg[w];
        if (next > target) { pick = w; break; }
        c = next;
      }
      if (pick < 0 && lo == 0 && hi == V) {
        shResult = (int)(V - 1);  // the host's rounding fallback: the last id of the order
      } else {
        if (pick < 0) {
          // this level's sums, added in another order than the level above, fall a hair short of the
          // target: the crossing is at the end of the segment, take its last segment with mass
          pick = last < 0 ? 0 : last;
          c = running;
          for (int w = 0; w < pick; w++) c += shSeg[w];
        }
        shLo = lo + pick * segLen;
        shHi = shLo + segLen < hi ? shLo + segLen : hi;
        shRun = c;
      }
    }
    __syncthreads();
    if (shResult >= 0) break;
    lo = shLo;
    hi = shHi;
    running = shRun;
    if (hi - lo <= 32) break;
    segLen = roundUp32((hi - lo + kStatWarps - 1) / kStatWarps);
    const int64_t a = lo + warp * segLen, b = a + segLen < hi ? a + segLen : hi;
    double s = 0.0;
#pragma unroll 1  // V/16 ids at most (unrolled, the exps spill registers)
    for (int64_t j = a + lane; j < b; j += 32) s += weightOf(xr[j], m, invT);
    s = warpSum(s);
    if (lane == 0) shSeg[warp] = s;  // thread 0 read the previous sums before the sync above
    __syncthreads();
  }
  if (warp != 0) return;
  int id = shResult;
  if (id < 0) {
    // the last ≤ 32 ids: an inclusive warp scan of their weights on top of the running sum
    const int64_t j = lo + lane;
    const bool in = j < hi;
    const double w = in ? weightOf(xr[j], m, invT) : 0.0;
    double incl = w;
    for (int o = 1; o < 32; o <<= 1) {
      const double t = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += t;
    }
    const unsigned hit = __ballot_sync(0xffffffffu, in && running + incl > target);
    if (hit) {
      id = (int)(lo + __ffs(hit) - 1);
    } else {
      const unsigned mass = __ballot_sync(0xffffffffu, in && w > 0.0);
      id = mass ? (int)(lo + 31 - __clz(mass)) : (int)(hi - 1);
    }
  }
  if (lane == 0) {
    ids[i] = id;
    logprobs[i] = (float)((double)xr[id] - (double)m - logSum);
    plan[i].state = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// kernel 2: filtered rows through a sorted candidate list in shared memory

struct SortShared {
  unsigned count;
  unsigned bin, above, binCount;
};

/** add the ids j with w_j ≥ tau to keys/idv (up to cap of them); returns how many there are */
__device__ unsigned collect(unsigned long long* keys, int* idv, unsigned cap, const float* xr, int64_t V, float m, double invT,
                            double tau, SortShared& sh) {
  const int tid = threadIdx.x, lane = tid & 31;
  if (tid == 0) sh.count = 0;
  __syncthreads();
  const double la = tau > 0.0 ? log(tau) - kPrescreen : -CUDART_INF;
  for (int64_t j0 = 0; j0 < V; j0 += kSortThreads) {
    const int64_t j = j0 + tid;
    bool take = false;
    double w = 0.0;
    if (j < V) {
      const double a = ((double)xr[j] - (double)m) * invT;
      if (a >= la) {
        w = exp(a);
        take = w >= tau;
      }
    }
    const unsigned ball = __ballot_sync(0xffffffffu, take);
    if (ball) {
      const int leader = __ffs(ball) - 1;
      unsigned base = 0;
      if (lane == leader) base = atomicAdd(&sh.count, (unsigned)__popc(ball));
      base = __shfl_sync(0xffffffffu, base, leader);
      if (take) {
        const unsigned slot = base + __popc(ball & ((1u << lane) - 1u));
        if (slot < cap) {
          keys[slot] = wKey(w);
          idv[slot] = (int)j;
        }
      }
    }
  }
  __syncthreads();
  return sh.count;
}

/**
 * Radix select on the logits' order keys, most significant digit first: the digit prefix of the
 * kSel-th largest logit, stopping as soon as at most cap logits lie at or above the prefix. x_lo = the
 * smallest logit with that prefix (≥ kSel logits are ≥ x_lo). false: more than cap logits tie at the
 * kSel-th largest value.
 */
__device__ bool radixThreshold(unsigned* hist, const float* xr, int64_t V, unsigned kSel, unsigned cap, SortShared& sh, float* xlo) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  unsigned prefix = 0, mask = 0, kRem = kSel, above = 0;
  unsigned long long countGe = (unsigned long long)V;
  for (int pass = 0; pass < 3; pass++) {
    // digits of 11, 11 and 10 bits, most significant first
    const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0, nb = pass == 2 ? 1024 : 2048;
    for (int t = tid; t < nb; t += kSortThreads) hist[t] = 0;
    __syncthreads();
    for (int64_t j0 = 0; j0 < V; j0 += kSortThreads) {
      const int64_t j = j0 + tid;
      unsigned key = 0;
      bool in = false;
      if (j < V) {
        key = orderKey(xr[j]);
        in = (key & mask) == prefix;
      }
      const unsigned act = __ballot_sync(0xffffffffu, in);
      if (in) {
        // one atomic per distinct digit in the warp: the logits crowd into a few top-level bins
        const unsigned digit = (key >> shift) & (unsigned)(nb - 1);
        const unsigned peers = __match_any_sync(act, digit);
        if (lane == __ffs(peers) - 1) atomicAdd(&hist[digit], (unsigned)__popc(peers));
      }
    }
    __syncthreads();
    if (warp == 0) {
      // lane l owns bins [nb − (l+1)·per, nb − l·per), counted from the top; skewed reads avoid bank conflicts
      const int per = nb / 32, top = nb - 1 - lane * per;
      unsigned s = 0;
      for (int b = 0; b < per; b++) s += hist[top - (b + lane) % per];
      unsigned incl = s;
      for (int o = 1; o < 32; o <<= 1) {
        const unsigned t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
      }
      const unsigned hit = __ballot_sync(0xffffffffu, incl >= kRem);
      // (hit is never 0: the bins count the logits with the prefix so far, at least kRem of them; if it
      // were, a marker declines the row)
      if (hit == 0 && lane == 0) sh.binCount = 0xffffffffu;
      if (lane == __ffs(hit) - 1) {
        unsigned acc = incl - s;
        for (int b = 0; b < per; b++) {
          const unsigned c = hist[top - b];
          if (acc + c >= kRem) {
            sh.bin = (unsigned)(top - b);
            sh.above = acc;
            sh.binCount = c;
            break;
          }
          acc += c;
        }
      }
    }
    __syncthreads();
    if (sh.binCount == 0xffffffffu) return false;  // the same for every thread
    prefix |= sh.bin << shift;
    mask |= (unsigned)(nb - 1) << shift;
    above += sh.above;
    kRem -= sh.above;
    countGe = (unsigned long long)above + sh.binCount;
    __syncthreads();  // sh is rewritten by the next pass
    if (countGe <= cap) break;
  }
  if (countGe > cap) return false;
  *xlo = keyToFloat(prefix > kKeyNegInf ? prefix : kKeyNegInf);
  return true;
}

/** the weight threshold for the logits ≥ x_lo, lowered by the margin */
__device__ __forceinline__ double thresholdOf(float xlo, float m, double invT) { return weightOf(xlo, m, invT) * (1.0 - kThresholdMargin); }

__global__ void __launch_bounds__(kSortThreads, 2) k_sample_sorted(int* ids, float* logprobs, const RowPlan* plan, const float* x,
                                                                 const double* params, int64_t V, int capArg) {
  extern __shared__ unsigned long long smem[];
  __shared__ SortShared sh;
  const int64_t i = blockIdx.x;
  const RowPlan pl = plan[i];
  if (pl.state != 1) return;
  const unsigned cap = (unsigned)capArg;
  unsigned long long* keys = smem;
  int* idv = reinterpret_cast<int*>(smem + cap);
  unsigned* hist = reinterpret_cast<unsigned*>(smem);  // used before the candidates are collected
  const int tid = threadIdx.x;
  const RowParams p = loadParams(params, i);
  const float* xr = x + (int64_t)p.row * V;
  const float m = pl.m;
  const double invT = 1.0 / p.T;
  const bool topKOn = p.topK > 0 && p.topK < V;

  enum { kDirect, kTopK, kNucleus } mode;
  unsigned n;
  float xlo;
  if (topKOn) {
    if ((unsigned)p.topK > cap || !radixThreshold(hist, xr, V, (unsigned)p.topK, cap, sh, &xlo)) return;
    __syncthreads();
    n = collect(keys, idv, cap, xr, V, m, invT, thresholdOf(xlo, m, invT), sh);
    if (n > cap) return;
    mode = kTopK;
  } else {
    double cut = p.minP;
    if (p.topP < 1.0) cut = fmax(cut, ((1.0 - p.topP) / (double)V) * pl.sum);
    n = collect(keys, idv, cap, xr, V, m, invT, cut, sh);
    mode = kDirect;
    if (n > cap) {
      if (!(p.topP < 1.0)) return;
      if (!radixThreshold(hist, xr, V, cap - cap / kNucleusSlackDiv, cap, sh, &xlo)) return;
      __syncthreads();
      n = collect(keys, idv, cap, xr, V, m, invT, fmax(thresholdOf(xlo, m, invT), cut), sh);
      if (n > cap) return;
      mode = kNucleus;
    }
  }

  // bitonic sort of the candidates, padded to a power of two, into (w descending, id ascending)
  unsigned P = 1;
  while (P < n) P <<= 1;
  for (unsigned t = n + tid; t < P; t += kSortThreads) {
    keys[t] = 0ull;  // w = +0 with the largest id: after every candidate
    idv[t] = INT_MAX;
  }
  __syncthreads();
  for (unsigned k = 2; k <= P; k <<= 1) {
    for (unsigned j = k >> 1; j > 0; j >>= 1) {
      for (unsigned t = tid; t < P / 2; t += kSortThreads) {
        const unsigned a = ((t & ~(j - 1)) << 1) | (t & (j - 1)), b = a + j;
        const unsigned long long ka = keys[a], kb = keys[b];
        const int ia = idv[a], ib = idv[b];
        const bool bFirst = kb > ka || (kb == ka && ib < ia);
        // blocks with (a & k) == 0 end in the final order, the others reversed (bitonic merge input)
        if (bFirst == ((a & k) == 0)) {
          keys[a] = kb;
          keys[b] = ka;
          idv[a] = ib;
          idv[b] = ia;
        }
      }
      __syncthreads();
    }
  }
  if (tid != 0) return;

  // the host's loops, in its order, over the sorted candidates
  unsigned count = n;
  double zTopK = pl.sum;
  if (mode == kTopK) {
    // the sorted prefix of length k is the host's top-k; min-p keeps a prefix of it
    const unsigned k = (unsigned)p.topK;
    if (n < k) return;  // cannot happen: ≥ k logits lie at or above x_lo
    count = 0;
    while (count < k && keyW(keys[count]) >= p.minP) count++;
    if (p.topP < 1.0) {
      zTopK = 0.0;
      if (count == k) {
        for (unsigned j = 0; j < k; j++) zTopK += keyW(keys[j]);
      } else {
        // fewer than k passed min-p: the host sums the k largest weights in ascending order (kLargestSum)
        for (unsigned j = k; j-- > 0;) zTopK += keyW(keys[j]);
      }
    }
  }
  // total = Σ of the kept weights in order: the host sums them afresh, but with the same additions as
  // its top-p loop's running sum up to where that loop stops, so one loop gives both
  double total = 0.0;
  if (p.topP < 1.0) {
    const double target = p.topP * zTopK;
    bool reached = false;
    for (unsigned j = 0; j < count; j++) {
      total += keyW(keys[j]);
      if (total >= target) {
        count = j + 1;
        reached = true;
        break;
      }
    }
    if (mode == kNucleus && !reached) return;  // the nucleus runs past the collected prefix
  } else {
    for (unsigned j = 0; j < count; j++) total += keyW(keys[j]);
  }
  const double target = p.u * total;
  double cum = 0.0;
  int id = idv[count - 1];  // the host's rounding fallback: the last kept
  for (unsigned j = 0; j < count; j++) {
    cum += keyW(keys[j]);
    if (cum > target) {
      id = idv[j];
      break;
    }
  }
  ids[i] = id;
  logprobs[i] = (float)((double)xr[id] - (double)m - pl.logSum);
}

int capacity = 0;

cudaError_t ensureCapacity() {
  if (capacity > 0) return cudaSuccess;
  int dev = 0, optin = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e != cudaSuccess) return e;
  int cap = kMaxCap;
  const int fixed = (int)sizeof(SortShared) + 1024;  // static shared memory and some slack
  while (cap > kMinCap && cap * 12 + fixed > optin) cap >>= 1;
  e = cudaFuncSetAttribute(k_sample_sorted, cudaFuncAttributeMaxDynamicSharedMemorySize, cap * 12);
  if (e != cudaSuccess) return e;
  capacity = cap;
  return cudaSuccess;
}

}  // namespace

extern "C" {

size_t m1_sample_rows_scratch_bytes(int64_t n) { return (size_t)(n > 0 ? n : 1) * sizeof(RowPlan); }

int m1_sample_rows_capacity() { return ensureCapacity() == cudaSuccess ? capacity : 0; }

cudaError_t m1_sample_rows(int* ids, float* logprobs, void* scratch, const float* x, const double* params, int64_t n, int64_t V,
                           cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  cudaError_t e = ensureCapacity();
  if (e != cudaSuccess) return e;
  RowPlan* plan = static_cast<RowPlan*>(scratch);
  k_sample_stats<<<(unsigned)n, kStatThreads, 0, s>>>(ids, logprobs, plan, x, params, V);
  k_sample_sorted<<<(unsigned)n, kSortThreads, (size_t)capacity * 12, s>>>(ids, logprobs, plan, x, params, V, capacity);
  return cudaGetLastError();
}

}  // extern "C"
