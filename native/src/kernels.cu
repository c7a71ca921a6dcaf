// The m1cuda kernels: every op of the Backend interface except the matmuls (cuBLASLt, matmul.cpp).
//
// Each kernel is the CPU reference (src/backend/cpu/*.ts) restated for the GPU with f32 compute;
// the CPU keeps some sums in f64, so results agree to f32 rounding, not bit for bit. Designs:
//  - elementwise: grid-stride loops, one element (or float4) per thread; layout (column copies, group
//    repeats) and other row-wise elementwise ops: row tiles (rowTiles), a thread per column looping over rows;
//  - row reductions (norms, softmax): one block per row, block-wide reduction in shared memory (rows of
//    up to a few thousand float4s held in registers, read from memory once);
//  - column reductions (weight grads): one thread per column looping over rows, deterministic;
//  - attention: one warp per query (lanes split the head dim), online softmax over keys; head dims
//    64 and 128 go to the tiled kernels of flash_attention.cu instead;
//  - scans: one thread per independent recurrence ((b, channel) or (b, head, p)), state in registers;
//    backward recomputes states from per-chunk checkpoints kept in a global scratch buffer.
#include "kernels.h"
#include "flash_attention.h"
#include "runtime.h"
#include "pdl.cuh"
#include "warp.cuh"
#include "async_copy.cuh"
#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <type_traits>
#include <cuda_bf16.h>
#include <math_constants.h>

namespace {

constexpr int kThreads = 256;

inline unsigned gridFor(int64_t n, int threads = kThreads) {
  int64_t g = (n + threads - 1) / threads;
  if (g > 65535LL * 32) g = 65535LL * 32;  // grid-stride loops cover the rest
  return (unsigned)(g < 1 ? 1 : g);
}

#define GRID_STRIDE(i, n) for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

__device__ __forceinline__ float siluf(float x) { return x / (1.f + expf(-x)); }
__device__ __forceinline__ float sigmoidf_(float x) { return 1.f / (1.f + expf(-x)); }
__device__ __forceinline__ float siluGradf(float x) {
  float s = 1.f / (1.f + expf(-x));
  return s * (1.f + x * (1.f - s));
}
/** softplus with mamba's threshold: x above 20 */
__device__ __forceinline__ float softplusf(float x) { return x > 20.f ? x : log1pf(expf(x)); }


/** block-wide sum; every thread gets the result. `sh` holds 32 floats. */
__device__ float blockSum(float v, float* sh) {
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warpSum(v);
  __syncthreads();  // sh may still be read by a previous call
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  float r = lane < nw ? sh[lane] : 0.f;
  return warpSum(r);
}
__device__ float blockMax(float v, float* sh) {
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warpMax(v);
  __syncthreads();
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  float r = lane < nw ? sh[lane] : -CUDART_INF_F;
  return warpMax(r);
}

inline cudaError_t lastError() { return cudaGetLastError(); }

/** a weight read as f32 whatever its storage (bf16 weights are read directly, with no f32 copy) */
struct WeightF {
  const void* p;
  int bf16;
  __device__ __forceinline__ float operator[](int64_t i) const {
    return bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]) : static_cast<const float*>(p)[i];
  }
};

// ------------------------------------------------------------------------------------------------
// memory / elementwise

__global__ void k_cast_f32_bf16(__nv_bfloat16* d, const float* s, int64_t n) {
  pdlStart();  // launched by pdlLaunch (pdl.cuh)
  GRID_STRIDE(i, n) d[i] = __float2bfloat16_rn(s[i]);
}
__global__ void k_cast_bf16_f32(float* d, const __nv_bfloat16* s, int64_t n) { GRID_STRIDE(i, n) d[i] = __bfloat162float(s[i]); }
__global__ void k_fill_f32(float* d, float v, int64_t n) { GRID_STRIDE(i, n) d[i] = v; }
__global__ void k_fill_bf16(__nv_bfloat16* d, __nv_bfloat16 v, int64_t n) { GRID_STRIDE(i, n) d[i] = v; }
__global__ void k_add(float* o, const float* a, const float* b, int64_t n) { GRID_STRIDE(i, n) o[i] = a[i] + b[i]; }
__global__ void k_axpy(float* d, const float* s, float a, int64_t n) { GRID_STRIDE(i, n) d[i] += a * s[i]; }
/** k_add / k_axpy four elements per thread (16-byte loads and stores; n4 = n / 4, the launcher checks) */
__global__ void k_add4(float4* o, const float4* a, const float4* b, int64_t n4) {
  GRID_STRIDE(i, n4) {
    const float4 x = a[i], y = b[i];
    o[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
  }
}
__global__ void k_axpy4(float4* d, const float4* s, float a, int64_t n4) {
  GRID_STRIDE(i, n4) {
    float4 x = d[i];
    const float4 y = s[i];
    x.x += a * y.x;
    x.y += a * y.y;
    x.z += a * y.z;
    x.w += a * y.w;
    d[i] = x;
  }
}
__global__ void k_scale(float* x, float a, int64_t n) { GRID_STRIDE(i, n) x[i] *= a; }
__global__ void k_mul(float* o, const float* a, const float* b, int64_t n) { GRID_STRIDE(i, n) o[i] = a[i] * b[i]; }
__global__ void k_neg_exp(float* o, const float* a, int64_t n) { GRID_STRIDE(i, n) o[i] = -expf(a[i]); }
__global__ void k_add_bias(float* o, const float* x, const float* b, int64_t rows, int64_t C) {
  GRID_STRIDE(i, rows * C) o[i] = x[i] + b[i % C];
}
/** one thread per column, f64 accumulator (the sum runs over every row) */
/**
 * Column sums out_j = Σ_r term(r, j) over `rows` rows, for gradients of per-column parameters (biases,
 * norm and conv weights): a block per 32 columns, its 32 × kColRows threads each summing every
 * kColRows-th row of one column in f64 (adjacent threads read adjacent columns of a row), the partial
 * sums then added in shared memory; `term.store(j, sum)` writes the result. Deterministic.
 */
constexpr int kColRows = 32;
template <class Term>
__global__ void k_col_sum(int64_t rows, int64_t cols, Term term) {
  __shared__ double part[kColRows][33];
  const int64_t j = blockIdx.x * 32 + threadIdx.x;
  double s = 0;
  if (j < cols)
    for (int64_t r = threadIdx.y; r < rows; r += kColRows) s += term(r, j);
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    for (int k = 1; k < kColRows; k++) s += part[k][threadIdx.x];
    term.store(j, s);
  }
}
template <class Term>
void launchColSum(int64_t rows, int64_t cols, Term term, cudaStream_t s) {
  if (cols > 0) k_col_sum<<<(unsigned)((cols + 31) / 32), dim3(32, kColRows), 0, s>>>(rows, cols, term);
}

/** out[c] = Σ_r x[r, c] */
struct SumRowsTerm {
  float* out;
  const float* x;
  int64_t C;
  __device__ double operator()(int64_t r, int64_t c) const { return x[r * C + c]; }
  __device__ void store(int64_t c, double v) const { out[c] = (float)v; }
};
/** partials[blockIdx.x] = Σ over the block of each thread's s */
__device__ __forceinline__ void storeBlockSumD(double* partials, double s) {
  __shared__ double sh[32];
  s = warpSum(s);
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  if (lane == 0) sh[wid] = s;
  __syncthreads();
  if (wid == 0) {
    double r = lane < (int)(blockDim.x >> 5) ? sh[lane] : 0.0;
    r = warpSum(r);
    if (lane == 0) partials[blockIdx.x] = r;
  }
}
template <typename X>
__global__ void k_sum_squares(double* partials, X x, int64_t n) {
  double s = 0;
  GRID_STRIDE(i, n) {
    const double v = x[i];
    s += v * v;
  }
  storeBlockSumD(partials, s);
}
/**
 * k_sum_squares over a bf16 tensor in 16-byte loads of 8 values, four of them in flight per thread (the generic
 * kernel's loop has a branch on the storage type: it is not unrolled, one 2-byte load per thread at a time);
 * x8 16-byte aligned, the last nTail (< 8) values `tail` one per thread of block 0.
 */
__device__ __forceinline__ double sqSumBf16x2(double s, uint32_t u) {
  const double lo = __uint_as_float(u << 16), hi = __uint_as_float(u & 0xffff0000u);  // bf16 → f32 is exact
  s += lo * lo;
  return s + hi * hi;
}
__global__ void k_sum_squares_bf16x8(double* partials, const uint4* __restrict__ x8, int64_t n8, const __nv_bfloat16* __restrict__ tail,
                                     int nTail) {
  double s = 0;
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
#pragma unroll 4
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8; i += step) {
    const uint4 u = x8[i];
    s = sqSumBf16x2(sqSumBf16x2(sqSumBf16x2(sqSumBf16x2(s, u.x), u.y), u.z), u.w);
  }
  if (blockIdx.x == 0 && (int)threadIdx.x < nTail) {
    const double v = __bfloat162float(tail[threadIdx.x]);
    s += v * v;
  }
  storeBlockSumD(partials, s);
}

/** out[t] = Σ of tensor t's `per` partials (a warp per tensor, f64) */
__global__ void k_sum_partials(double* out, const double* partials, int nT, int per) {
  const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (t >= nT) return;
  double s = 0;
  for (int k = lane; k < per; k += 32) s += partials[(int64_t)t * per + k];
  s = warpSum(s);
  if (lane == 0) out[t] = s;
}

// ------------------------------------------------------------------------------------------------
// layout

/**
 * Launch shape of the row-wise kernels (column copies, group repeats, the softmax-chunk gradient): kThreads
 * threads as tx × ty (tx a power of two from 32 up, the smallest ≥ cols below kThreads; ty = kThreads / tx
 * rows side by side), gridDim.x column tiles, gridDim.y row tiles. The row tiles stop at about kRowTileBlocks
 * blocks in all (two waves of 8 blocks of 256 threads on an H200's 132 SMs) and at 65535; a thread keeps its
 * column (and whatever it derived from it: no division per element) and loops over the rows
 * r = blockIdx.y·ty + threadIdx.y, r += gridDim.y·ty.
 */
constexpr int64_t kRowTileBlocks = 2048;
struct RowTiles {
  dim3 grid, block;
};
inline RowTiles rowTiles(int64_t rows, int64_t cols) {
  unsigned tx = 32;
  while (tx < (unsigned)kThreads && (int64_t)tx < cols) tx *= 2;
  const unsigned ty = kThreads / tx;
  const int64_t gx = std::max<int64_t>(1, (cols + tx - 1) / tx);
  const int64_t gy = std::min<int64_t>({std::max<int64_t>(1, (rows + ty - 1) / ty), std::max<int64_t>(1, kRowTileBlocks / gx), 65535});
  return {dim3((unsigned)gx, (unsigned)gy), dim3(tx, ty)};
}
__device__ __forceinline__ int64_t tileCol() { return (int64_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t tileRow0() { return (int64_t)blockIdx.y * blockDim.y + threadIdx.y; }
__device__ __forceinline__ int64_t tileRowStep() { return (int64_t)gridDim.y * blockDim.y; }

/** dst[r, doff + j] = src[r, soff + j], j < w, in units E of 2 to 16 bytes (strides, offsets and w in units); rowTiles(rows, w) */
template <typename E>
__global__ void k_copy_cols(E* __restrict__ dst, int64_t ds, int64_t doff, const E* __restrict__ src, int64_t ss, int64_t soff, int64_t rows,
                            int64_t w) {
  pdlStart();  // launched by pdlLaunch (pdl.cuh)
  const int64_t j = tileCol();
  if (j >= w) return;
  const int64_t step = tileRowStep();
#pragma unroll 4
  for (int64_t r = tileRow0(); r < rows; r += step) dst[r * ds + doff + j] = src[r * ss + soff + j];
}
__device__ __forceinline__ void addTo(float& a, float b) { a += b; }
__device__ __forceinline__ void addTo(float4& a, float4 b) {
  a.x += b.x;
  a.y += b.y;
  a.z += b.z;
  a.w += b.w;
}
template <typename E>
__device__ __forceinline__ E zeroOf();
template <>
__device__ __forceinline__ float zeroOf<float>() { return 0.f; }
template <>
__device__ __forceinline__ float4 zeroOf<float4>() { return make_float4(0.f, 0.f, 0.f, 0.f); }
/**
 * out [rows, inW·rep]: each group of w columns of x [rows, inW] repeated rep times, in units E (float, or float4
 * when w is a multiple of 4: widths in units); rowTiles(rows, inW·rep). The source column is worked out once per
 * thread: out[r, o] = x[r, (g / rep)·w + o % w] with g = o / w.
 */
template <typename E>
__global__ void k_repeat_groups(E* __restrict__ out, const E* __restrict__ x, int64_t rows, int64_t inW, int64_t w, int64_t rep) {
  const int64_t outW = inW * rep, o = tileCol();
  if (o >= outW) return;
  const int64_t g = o / w, src = (g / rep) * w + (o - g * w), step = tileRowStep();
#pragma unroll 4
  for (int64_t r = tileRow0(); r < rows; r += step) out[r * outW + o] = x[r * inW + src];
}
/** dx [rows, inW]: the sum over its rep copies, in order (units as k_repeat_groups); rowTiles(rows, inW) */
template <typename E>
__global__ void k_repeat_groups_bwd(E* __restrict__ dx, const E* __restrict__ dy, int64_t rows, int64_t inW, int64_t w, int64_t rep) {
  const int64_t outW = inW * rep, o = tileCol();
  if (o >= inW) return;
  const int64_t g = o / w, first = g * rep * w + (o - g * w), step = tileRowStep();  // copy k at first + k·w
  for (int64_t r = tileRow0(); r < rows; r += step) {
    E s = zeroOf<E>();
    for (int64_t k = 0; k < rep; k++) addTo(s, dy[r * outW + first + k * w]);
    dx[r * inW + o] = s;
  }
}

// ------------------------------------------------------------------------------------------------
// embedding / norms / MLP

template <typename E>
__device__ __forceinline__ float toF(E v);
template <>
__device__ __forceinline__ float toF<float>(float v) { return v; }
template <>
__device__ __forceinline__ float toF<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename E>
__device__ __forceinline__ E fromF(float v);
template <>
__device__ __forceinline__ float fromF<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 fromF<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename E>
__global__ void k_embedding(float* out, const E* table, const int* ids, int64_t n, int64_t D) {
  GRID_STRIDE(i, n * D) {
    int64_t r = i / D, j = i % D;
    out[i] = toF(table[(int64_t)ids[r] * D + j]);
  }
}
/** atomics: a token id may repeat */
__global__ void k_embedding_bwd(float* dT, const int* ids, const float* dy, int64_t n, int64_t D) {
  GRID_STRIDE(i, n * D) {
    int64_t r = i / D, j = i % D;
    atomicAdd(&dT[(int64_t)ids[r] * D + j], dy[i]);
  }
}
/** res (or null): added to dx as it is stored (the residual stream's gradient: a layer's dx + dOut in one pass) */
__global__ void k_rmsnorm_bwd_dx(float* dx, const float* dy, const float* x, const float* w, const float* rstd, const float* res, int64_t D) {
  __shared__ float sh[32];
  int64_t o = blockIdx.x * D;
  float rs = rstd[blockIdx.x];
  float dot = 0.f;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) dot += dy[o + j] * w[j] * x[o + j];
  dot = blockSum(dot, sh);
  float k = dot * rs * rs * rs / (float)D;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    const float v = dy[o + j] * w[j] * rs - x[o + j] * k;
    dx[o + j] = res ? v + res[o + j] : v;
  }
}
/** rmsNorm's dw[j] = Σ_r dy[r, j]·x[r, j]·rstd[r] */
struct RmsNormDwTerm {
  float* dw;
  const float *dy, *x, *rstd;
  int64_t D;
  __device__ double operator()(int64_t r, int64_t j) const { return (double)dy[r * D + j] * x[r * D + j] * rstd[r]; }
  __device__ void store(int64_t j, double v) const { dw[j] = (float)v; }
};
/**
 * rmsNorm backward, dx and dw in one pass with the row in registers: a block of kThreads threads per range of
 * rowsPer rows (the launcher sizes the grid to one wave), the row's D / 4 float4s over the threads, NV each
 * (D ≤ 4·NV·kThreads). Per row: dy and x loaded once (all of the thread's float4s in flight together), the
 * block's one reduction, dx stored, and dw's terms dy·x·rstd (k_rmsnorm_bwd_dx / RmsNormDwTerm's expressions)
 * added to the thread's f64 column sums, which go to part [gridDim.x, D] at the end; k_rmsnorm_dw_parts adds
 * those in block order (deterministic). dy and x are read from memory once instead of three times (the dx
 * kernel's two loops and the column sum), in 16-byte loads.
 */
template <int NV>
__global__ void __launch_bounds__(kThreads) k_rmsnorm_bwd_rows(float4* __restrict__ dx, double* __restrict__ part, const float4* __restrict__ dy,
                                                               const float4* __restrict__ x, const float4* __restrict__ w,
                                                               const float* __restrict__ rstd, const float4* __restrict__ res, int64_t rows,
                                                               int D4, int64_t rowsPer) {
  __shared__ float sh[32];
  // the thread's f64 column sums (in shared memory: registers would cost a block per SM), acc[4k + c][threadIdx.x]
  // for column 4·(threadIdx.x + k·kThreads) + c; only the owning thread touches them
  __shared__ double acc[4 * NV][kThreads];
  const int64_t r0 = blockIdx.x * rowsPer, r1 = min(rows, r0 + rowsPer);
  const float D = (float)(4 * D4);
  const int t = threadIdx.x;
  float4 wv[NV];
#pragma unroll
  for (int k = 0; k < NV; k++) {
    const int q = t + k * kThreads;
    wv[k] = q < D4 ? w[q] : make_float4(0.f, 0.f, 0.f, 0.f);
    acc[4 * k][t] = acc[4 * k + 1][t] = acc[4 * k + 2][t] = acc[4 * k + 3][t] = 0.0;
  }
  for (int64_t r = r0; r < r1; r++) {
    const int64_t o = r * D4;
    const float rs = rstd[r];
    float4 g[NV], v[NV];
#pragma unroll
    for (int k = 0; k < NV; k++) {
      const int q = t + k * kThreads;
      if (q < D4) {
        g[k] = dy[o + q];
        v[k] = x[o + q];
      }
    }
    float dot = 0.f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
      if (t + k * kThreads < D4) {
        dot += g[k].x * wv[k].x * v[k].x;
        dot += g[k].y * wv[k].y * v[k].y;
        dot += g[k].z * wv[k].z * v[k].z;
        dot += g[k].w * wv[k].w * v[k].w;
      }
    }
    dot = blockSum(dot, sh);
    const float kk = dot * rs * rs * rs / D;
    const double rsd = rs;
#pragma unroll
    for (int k = 0; k < NV; k++) {
      const int q = t + k * kThreads;
      if (q < D4) {
        float4 d = make_float4(g[k].x * wv[k].x * rs - v[k].x * kk, g[k].y * wv[k].y * rs - v[k].y * kk, g[k].z * wv[k].z * rs - v[k].z * kk,
                               g[k].w * wv[k].w * rs - v[k].w * kk);
        if (res) {
          const float4 e = res[o + q];
          d = make_float4(d.x + e.x, d.y + e.y, d.z + e.z, d.w + e.w);
        }
        dx[o + q] = d;
        acc[4 * k][t] += (double)g[k].x * v[k].x * rsd;
        acc[4 * k + 1][t] += (double)g[k].y * v[k].y * rsd;
        acc[4 * k + 2][t] += (double)g[k].z * v[k].z * rsd;
        acc[4 * k + 3][t] += (double)g[k].w * v[k].w * rsd;
      }
    }
  }
#pragma unroll
  for (int k = 0; k < NV; k++) {
    const int q = t + k * kThreads;
    if (q < D4) {
      double2* p = reinterpret_cast<double2*>(part + blockIdx.x * (int64_t)(4 * D4) + 4 * q);
      p[0] = make_double2(acc[4 * k][t], acc[4 * k + 1][t]);
      p[1] = make_double2(acc[4 * k + 2][t], acc[4 * k + 3][t]);
    }
  }
}
/** dw[j] = Σ_b part[b, j] over nParts blocks' sums, in order per row lane then lanes in order (32 columns × 32 row lanes per block) */
__global__ void k_rmsnorm_dw_parts(float* dw, const double* __restrict__ part, int64_t nParts, int64_t D) {
  __shared__ double sh[32][33];
  const int64_t j = blockIdx.x * 32 + threadIdx.x;
  double s = 0;
  if (j < D) {
#pragma unroll 4
    for (int64_t b = threadIdx.y; b < nParts; b += 32) s += part[b * D + j];
  }
  sh[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && j < D) {
    for (int k = 1; k < 32; k++) s += sh[k][threadIdx.x];
    dw[j] = (float)s;
  }
}
/** k_rmsnorm_bwd_rows over one wave of blocks (as many as fit on the device at once), then k_rmsnorm_dw_parts */
template <int NV>
cudaError_t launchRmsNormBwdRows(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd, const float* res,
                                 int64_t rows, int64_t D, cudaStream_t s) {
  static const int perSm = [] {
    int b = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, k_rmsnorm_bwd_rows<NV>, kThreads, 0) != cudaSuccess || b <= 0) {
      (void)cudaGetLastError();
      b = 2;
    }
    return b;
  }();
  int64_t blocks = std::min<int64_t>(rows, (int64_t)m1SmCount() * perSm);
  const int64_t rowsPer = (rows + blocks - 1) / blocks;
  blocks = (rows + rowsPer - 1) / rowsPer;
  double* part = static_cast<double*>(m1Alloc(sizeof(double) * blocks * D));
  k_rmsnorm_bwd_rows<NV><<<(unsigned)blocks, kThreads, 0, s>>>(reinterpret_cast<float4*>(dx), part, reinterpret_cast<const float4*>(dy),
                                                              reinterpret_cast<const float4*>(x), reinterpret_cast<const float4*>(w), rstd,
                                                              reinterpret_cast<const float4*>(res), rows, (int)(D / 4), rowsPer);
  k_rmsnorm_dw_parts<<<(unsigned)((D + 31) / 32), dim3(32, 32), 0, s>>>(dw, part, blocks, D);
  m1Free(part);  // stream-ordered: the block's next user runs after these kernels
  return lastError();
}
__device__ __forceinline__ void storeOut(float* o, int64_t i, float v) { o[i] = v; }
__device__ __forceinline__ void storeOut(__nv_bfloat16* o, int64_t i, float v) { o[i] = __float2bfloat16_rn(v); }
/**
 * h = x + r (when r is given), y = h / rms(h) · w rounded to OT — the residual add, the norm and the rounding
 * of the next matmul's input in one pass; rstd (when given) keeps each row's 1 / rms for the backward. h goes
 * to memory first and is read back by the same thread (same index), so no block-wide barrier is needed
 * between the two loops.
 */
template <typename OT>
__global__ void k_add_rmsnorm(float* h, OT* y, float* rstd, const float* x, const float* r, WeightF w, int64_t D, float eps) {
  __shared__ float sh[32];
  const int64_t o = blockIdx.x * D;
  float ss = 0.f;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    float v = x[o + j];
    if (r) {
      v += r[o + j];
      h[o + j] = v;
    }
    ss += v * v;
  }
  ss = blockSum(ss, sh);
  const float rs = 1.f / sqrtf(ss / (float)D + eps);
  if (rstd && threadIdx.x == 0) rstd[blockIdx.x] = rs;
  const float* src = r ? h : x;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) storeOut(y, o + j, src[o + j] * rs * w[j]);
}
template <typename OT>
__global__ void k_swiglu(OT* h, WeightF g, WeightF u, int64_t n) { GRID_STRIDE(i, n) storeOut(h, i, siluf(g[i]) * u[i]); }
template <typename OT>
__global__ void k_swiglu_bwd(OT* dg, OT* du, const float* dh, const float* g, const float* u, int64_t n) {
  GRID_STRIDE(i, n) {
    storeOut(du, i, dh[i] * siluf(g[i]));
    storeOut(dg, i, dh[i] * u[i] * siluGradf(g[i]));
  }
}
/** four consecutive outputs (i4: their float4 index): one 16-byte store, or 8 bytes of bf16 */
__device__ __forceinline__ void storeOut4(float* o, int64_t i4, float4 v) { reinterpret_cast<float4*>(o)[i4] = v; }
__device__ __forceinline__ void storeOut4(__nv_bfloat16* o, int64_t i4, float4 v) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
  uint2 w;
  w.x = *reinterpret_cast<uint32_t*>(&lo);
  w.y = *reinterpret_cast<uint32_t*>(&hi);
  reinterpret_cast<uint2*>(o)[i4] = w;
}
/** four consecutive values (i4: their float4 index) of f32 or bf16 storage, as floats */
__device__ __forceinline__ float4 bf16x4ToFloat4(uint2 w) {
  const __nv_bfloat162 lo = *reinterpret_cast<const __nv_bfloat162*>(&w.x), hi = *reinterpret_cast<const __nv_bfloat162*>(&w.y);
  const float2 a = __bfloat1622float2(lo), b = __bfloat1622float2(hi);
  return make_float4(a.x, a.y, b.x, b.y);
}
__device__ __forceinline__ float4 load4(const float* p, int64_t i4) { return reinterpret_cast<const float4*>(p)[i4]; }
__device__ __forceinline__ float4 load4(const __nv_bfloat16* p, int64_t i4) { return bf16x4ToFloat4(reinterpret_cast<const uint2*>(p)[i4]); }
/** k_swiglu / k_swiglu_bwd four elements per thread (16-byte loads and stores; n4 = n / 4, the launcher checks); k_swiglu4
 * reads gate and up as f32 or bf16 (IT: a bf16 model's gate / up outputs) */
template <typename OT, typename IT>
__global__ void k_swiglu4(OT* h, const IT* g, const IT* u, int64_t n4) {
  pdlStart();  // launched by pdlLaunch (pdl.cuh)
  GRID_STRIDE(i, n4) {
    const float4 a = load4(g, i), b = load4(u, i);
    storeOut4(h, i, make_float4(siluf(a.x) * b.x, siluf(a.y) * b.y, siluf(a.z) * b.z, siluf(a.w) * b.w));
  }
}
template <typename OT>
__global__ void k_swiglu_bwd4(OT* dg, OT* du, const float4* dh, const float4* g, const float4* u, int64_t n4) {
  GRID_STRIDE(i, n4) {
    const float4 d = dh[i], a = g[i], b = u[i];
    storeOut4(du, i, make_float4(d.x * siluf(a.x), d.y * siluf(a.y), d.z * siluf(a.z), d.w * siluf(a.w)));
    storeOut4(dg, i, make_float4(d.x * b.x * siluGradf(a.x), d.y * b.y * siluGradf(a.y), d.z * b.z * siluGradf(a.z), d.w * b.w * siluGradf(a.w)));
  }
}
/** k_copy_cols from f32 to bf16 (rounded to nearest as stored): V = 4 (a float4 in, 8 bytes out; strides, offsets
 *  and w in units of 4 values) or 1 value a thread; rowTiles(rows, w) */
template <int V>
__global__ void k_copy_cols_bf16(__nv_bfloat16* __restrict__ dst, int64_t ds, int64_t doff, const float* __restrict__ src, int64_t ss,
                                 int64_t soff, int64_t rows, int64_t w) {
  pdlStart();  // launched by pdlLaunch (pdl.cuh)
  const int64_t j = tileCol();
  if (j >= w) return;
  const int64_t step = tileRowStep();
#pragma unroll 4
  for (int64_t r = tileRow0(); r < rows; r += step) {
    if constexpr (V == 4) storeOut4(dst + 4 * (r * ds + doff), j, load4(src + 4 * (r * ss + soff), j));
    else dst[r * ds + doff + j] = __float2bfloat16_rn(src[r * ss + soff + j]);
  }
}
/**
 * k_add_rmsnorm with the row in registers: D / 4 float4s over the block's kAddNormThreads threads, VPT each
 * (D ≤ 4·VPT·kAddNormThreads), all loaded before the block's one reduction — at decode sizes the kernel is a
 * single round trip to memory per row instead of a loop of 4-byte loads, a store of h and a reread of it.
 * The launcher checks that D is a multiple of 4 and x, r, h and y are 16-byte aligned.
 */
constexpr int kAddNormThreads = 256;
template <typename OT, int VPT>
__global__ void __launch_bounds__(kAddNormThreads) k_add_rmsnorm4(float4* h, OT* y, float* rstd, const float4* x, const float4* r, WeightF w,
                                                                  int D4, float eps) {
  pdlStart();  // launched by pdlLaunch (pdl.cuh)
  __shared__ float sh[32];
  const int64_t o = (int64_t)blockIdx.x * D4;
  float4 v[VPT];
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < VPT; k++) {
    const int j = threadIdx.x + k * kAddNormThreads;
    if (j < D4) {
      v[k] = x[o + j];
      if (r) {
        const float4 b = r[o + j];
        v[k] = make_float4(v[k].x + b.x, v[k].y + b.y, v[k].z + b.z, v[k].w + b.w);
        h[o + j] = v[k];
      }
      ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
    }
  }
  ss = blockSum(ss, sh);
  const float rs = 1.f / sqrtf(ss / (float)(4 * D4) + eps);
  if (rstd && threadIdx.x == 0) rstd[blockIdx.x] = rs;
#pragma unroll
  for (int k = 0; k < VPT; k++) {
    const int j = threadIdx.x + k * kAddNormThreads;
    if (j < D4)
      storeOut4(y, o + j, make_float4(v[k].x * rs * w[4 * j], v[k].y * rs * w[4 * j + 1], v[k].z * rs * w[4 * j + 2], v[k].w * rs * w[4 * j + 3]));
  }
}
/** every pointer 16-byte aligned and n a multiple of 4: the four-wide elementwise kernels apply */
__host__ __forceinline__ bool fourWide(int64_t n, std::initializer_list<const void*> ptrs) {
  if (n % 4 != 0) return false;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// ------------------------------------------------------------------------------------------------
// attention

/**
 * The angle is the f32 product pos·invFreq (as PyTorch/HF compute it), cos/sin in f64 like the CPU. A block per
 * token (looping over tokens t = blockIdx.x, += gridDim.x): thread (i, y) takes rotation pair i (< Dh / 2, looping
 * by blockDim.x) of heads y, y + blockDim.y, …, so the f64 sincos is computed once per (token, pair) instead of
 * once per head, and no index is divided.
 */
constexpr int64_t kRopeBlocks = 4096;  // at most; each block then takes several tokens
__global__ void k_rope(float* __restrict__ out, const float* __restrict__ x, const int* __restrict__ pos, const float* __restrict__ invFreq,
                       int64_t n, int H, int Dh, int inverse) {
  pdlStart();  // launched by pdlLaunch (pdl.cuh)
  const int half = Dh / 2;
  for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
    const float p = (float)pos[t];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
      const float angle = __fmul_rn(p, invFreq[i]);
      double sn, cs;
      sincos((double)angle, &sn, &cs);
      if (inverse) sn = -sn;
#pragma unroll 4
      for (int h = threadIdx.y; h < H; h += blockDim.y) {
        const int64_t o = (t * H + h) * Dh;
        const double a = x[o + i], b = x[o + i + half];
        out[o + i] = (float)(a * cs - b * sn);
        out[o + i + half] = (float)(b * cs + a * sn);
      }
    }
  }
}

// Attention: a warp per query row; lane l holds dims l, l+32, ... (DPL = dims per lane, Dh ≤ 32·DPL).
template <int DPL>
__device__ __forceinline__ float warpDot(const float* a, const float (&q)[DPL], int Dh, int lane) {
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < DPL; j++) {
    int d = lane + 32 * j;
    if (d < Dh) s += q[j] * a[d];
  }
  return warpSum(s);
}

template <int DPL>
__global__ void k_attention(float* out, float* lse, const float* q, const float* k, const float* v, const int* seg,
                            int B, int T, int Hq, int Hkv, int Dh, float scale) {
  int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (warp >= (int64_t)B * T * Hq) return;
  int h = warp % Hq;
  int64_t bt = warp / Hq;
  int t = bt % T, b = bt / T;
  int g = h / (Hq / Hkv);
  const float* qr = q + bt * Hq * Dh + (int64_t)h * Dh;
  float qv[DPL], acc[DPL];
#pragma unroll
  for (int j = 0; j < DPL; j++) {
    int d = lane + 32 * j;
    qv[j] = d < Dh ? qr[d] : 0.f;
    acc[j] = 0.f;
  }
  float m = -CUDART_INF_F, l = 0.f;
  int64_t rowStart = (int64_t)b * T;
  int mySeg = seg ? seg[rowStart + t] : 0;
  for (int s = 0; s <= t; s++) {
    if (seg && seg[rowStart + s] != mySeg) continue;
    const float* kr = k + ((rowStart + s) * Hkv + g) * Dh;
    float sc = scale * warpDot<DPL>(kr, qv, Dh, lane);
    float mn = fmaxf(m, sc);
    float corr = expf(m - mn), p = expf(sc - mn);
    l = l * corr + p;
    const float* vr = v + ((rowStart + s) * Hkv + g) * Dh;
#pragma unroll
    for (int j = 0; j < DPL; j++) {
      int d = lane + 32 * j;
      acc[j] = acc[j] * corr + (d < Dh ? p * vr[d] : 0.f);
    }
    m = mn;
  }
  float* orow = out + bt * Hq * Dh + (int64_t)h * Dh;
  float inv = 1.f / l;
#pragma unroll
  for (int j = 0; j < DPL; j++) {
    int d = lane + 32 * j;
    if (d < Dh) orow[d] = acc[j] * inv;
  }
  if (lane == 0) lse[((int64_t)b * Hq + h) * T + t] = m + logf(l);
}

/** dq per query (and D_t = dO_t·O_t into Dbuf [B*T*Hq] for the dk/dv pass) */
template <int DPL>
__global__ void k_attention_bwd_dq(float* dq, float* Dbuf, const float* dout, const float* q, const float* k, const float* v,
                                   const float* out, const float* lse, const int* seg, int B, int T, int Hq, int Hkv, int Dh,
                                   float scale) {
  int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (warp >= (int64_t)B * T * Hq) return;
  int h = warp % Hq;
  int64_t bt = warp / Hq;
  int t = bt % T, b = bt / T;
  int g = h / (Hq / Hkv);
  int64_t qo = bt * Hq * Dh + (int64_t)h * Dh;
  float qv[DPL], dov[DPL], acc[DPL];
  float Dt = 0.f;
#pragma unroll
  for (int j = 0; j < DPL; j++) {
    int d = lane + 32 * j;
    qv[j] = d < Dh ? q[qo + d] : 0.f;
    dov[j] = d < Dh ? dout[qo + d] : 0.f;
    Dt += d < Dh ? dov[j] * out[qo + d] : 0.f;
    acc[j] = 0.f;
  }
  Dt = warpSum(Dt);
  if (lane == 0) Dbuf[warp] = Dt;
  float rowLse = lse[((int64_t)b * Hq + h) * T + t];
  int64_t rowStart = (int64_t)b * T;
  int mySeg = seg ? seg[rowStart + t] : 0;
  for (int s = 0; s <= t; s++) {
    if (seg && seg[rowStart + s] != mySeg) continue;
    const float* kr = k + ((rowStart + s) * Hkv + g) * Dh;
    const float* vr = v + ((rowStart + s) * Hkv + g) * Dh;
    float p = expf(scale * warpDot<DPL>(kr, qv, Dh, lane) - rowLse);
    float dp = warpDot<DPL>(vr, dov, Dh, lane);
    float ds = p * (dp - Dt) * scale;
#pragma unroll
    for (int j = 0; j < DPL; j++) {
      int d = lane + 32 * j;
      if (d < Dh) acc[j] += ds * kr[d];
    }
  }
#pragma unroll
  for (int j = 0; j < DPL; j++) {
    int d = lane + 32 * j;
    if (d < Dh) dq[qo + d] = acc[j];
  }
}

/** dk, dv per key (b, s, kv head g): sums over the group's q heads and the queries t ≥ s that see s */
template <int DPL>
__global__ void k_attention_bwd_dkdv(float* dk, float* dv, const float* Dbuf, const float* dout, const float* q, const float* k,
                                     const float* v, const float* lse, const int* seg, int B, int T, int Hq, int Hkv, int Dh,
                                     float scale) {
  int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (warp >= (int64_t)B * T * Hkv) return;
  int g = warp % Hkv;
  int64_t bs = warp / Hkv;
  int s = bs % T, b = bs / T;
  int group = Hq / Hkv;
  int64_t ko = bs * Hkv * Dh + (int64_t)g * Dh;
  float kv[DPL], vv[DPL], dka[DPL], dva[DPL];
#pragma unroll
  for (int j = 0; j < DPL; j++) {
    int d = lane + 32 * j;
    kv[j] = d < Dh ? k[ko + d] : 0.f;
    vv[j] = d < Dh ? v[ko + d] : 0.f;
    dka[j] = 0.f;
    dva[j] = 0.f;
  }
  int64_t rowStart = (int64_t)b * T;
  int mySeg = seg ? seg[rowStart + s] : 0;
  for (int t = s; t < T; t++) {
    if (seg && seg[rowStart + t] != mySeg) continue;
    for (int h = g * group; h < (g + 1) * group; h++) {
      int64_t qo = ((rowStart + t) * Hq + h) * Dh;
      float p = expf(scale * warpDot<DPL>(q + qo, kv, Dh, lane) - lse[((int64_t)b * Hq + h) * T + t]);
      float dp = warpDot<DPL>(dout + qo, vv, Dh, lane);
      float ds = p * (dp - Dbuf[(rowStart + t) * Hq + h]) * scale;
#pragma unroll
      for (int j = 0; j < DPL; j++) {
        int d = lane + 32 * j;
        if (d < Dh) {
          dka[j] += ds * q[qo + d];
          dva[j] += p * dout[qo + d];
        }
      }
    }
  }
#pragma unroll
  for (int j = 0; j < DPL; j++) {
    int d = lane + 32 * j;
    if (d < Dh) {
      dk[ko + d] = dka[j];
      dv[ko + d] = dva[j];
    }
  }
}

template <typename E>
__global__ void k_kv_cache_write(E* kc, E* vc, const float* k, const float* v, const int* slots, int64_t n, int64_t row) {
  pdlStart();  // launched by pdlLaunch (pdl.cuh)
  GRID_STRIDE(e, n * row) {
    int64_t i = e / row, j = e % row;
    int slot = slots[i];
    if (slot < 0) continue;  // padding token
    kc[(int64_t)slot * row + j] = fromF<E>(k[e]);
    vc[(int64_t)slot * row + j] = fromF<E>(v[e]);
  }
}

/** a warp per (sequence, q head); keys read from the scattered cache blocks through the block table */
template <int DPL, typename E>
__global__ void k_paged_decode(float* out, const float* q, const E* kc, const E* vc, const int* bt, int maxBlocks,
                               const int* seqLens, int n, int Hq, int Hkv, int Dh, int bsz, float scale) {
  int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (warp >= (int64_t)n * Hq) return;
  int h = warp % Hq, i = warp / Hq;
  int g = h / (Hq / Hkv);
  int L = seqLens[i];
  const float* qr = q + warp * Dh;
  float qv[DPL], acc[DPL];
#pragma unroll
  for (int j = 0; j < DPL; j++) {
    int d = lane + 32 * j;
    qv[j] = d < Dh ? qr[d] : 0.f;
    acc[j] = 0.f;
  }
  float m = -CUDART_INF_F, l = 0.f;
  for (int s = 0; s < L; s++) {
    int blk = bt[(int64_t)i * maxBlocks + s / bsz];
    int64_t ro = (((int64_t)blk * bsz + s % bsz) * Hkv + g) * Dh;
    float part = 0.f;
#pragma unroll
    for (int j = 0; j < DPL; j++) {
      int d = lane + 32 * j;
      if (d < Dh) part += qv[j] * toF(kc[ro + d]);
    }
    float sc = scale * warpSum(part);
    float mn = fmaxf(m, sc);
    float corr = expf(m - mn), p = expf(sc - mn);
    l = l * corr + p;
#pragma unroll
    for (int j = 0; j < DPL; j++) {
      int d = lane + 32 * j;
      acc[j] = acc[j] * corr + (d < Dh ? p * toF(vc[ro + d]) : 0.f);
    }
    m = mn;
  }
  float* orow = out + warp * Dh;
#pragma unroll
  for (int j = 0; j < DPL; j++) {
    int d = lane + 32 * j;
    if (d < Dh) orow[d] = L > 0 ? acc[j] / l : 0.f;
  }
}

// ------------------------------------------------------------------------------------------------
// causal conv1d

/**
 * The row walk of the causal conv kernels: a thread per (channel c, range of rows [r0, r1) of the flattened
 * [B·T] rows), blockDim.x channels a block, gridDim.y ranges. Rows are loaded kConvU at a time (every load of a
 * group issued before any is used) and each value of x (and dy) is read once, plus K − 1 rows past the range's
 * edges. The window keeps the last K inputs of the channel by lag: win[j] = row r − j. A row's last valid lag
 * `lim` = t − (its segment's start) bounds the taps: a tap reaches back only inside the row's segment (and so
 * inside its sequence). Width: KMAX = K when EXACT (the common widths, the loops fold), else K ≤ KMAX at run time.
 */
constexpr int kConvU = 8;
/** the conv's pre-activation at row r from the window: bias + the taps k with lag K − 1 − k ≤ lim, in tap order */
template <int KMAX>
__device__ __forceinline__ float convWindow(const float (&win)[KMAX], const float (&wk)[KMAX], float bias, int K, int lim) {
  float acc = bias;
#pragma unroll
  for (int k = 0; k < KMAX; k++)
    if (k < K && K - 1 - k <= lim) acc += wk[k] * win[K - 1 - k];
  return acc;
}
template <int KMAX, typename V>
__device__ __forceinline__ void convShift(V (&win)[KMAX], V v) {
#pragma unroll
  for (int j = KMAX - 1; j > 0; j--) win[j] = win[j - 1];
  win[0] = v;
}
/** what the row walks share: the thread's channel and rows, its taps, and the window of the rows before r0 */
template <int KMAX>
struct ConvWalk {
  int c, t;  // t: the time index of the next row
  int64_t r0, r1;
  float wk[KMAX], win[KMAX], bias;
  __device__ __forceinline__ bool init(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, int64_t rows,
                                       int T, int C, int K, int64_t rowsPer) {
    c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return false;
    r0 = blockIdx.y * rowsPer;
    r1 = min(rows, r0 + rowsPer);
    t = (int)(r0 % T);
    bias = b ? b[c] : 0.f;
#pragma unroll
    for (int k = 0; k < KMAX; k++) wk[k] = k < K ? w[(int64_t)c * K + k] : 0.f;
#pragma unroll
    for (int j = 0; j < KMAX; j++) win[j] = j + 1 < K && r0 - 1 - j >= 0 ? x[(r0 - 1 - j) * C + c] : 0.f;  // lags at row r0 − 1
    return true;
  }
  /** the next row's last valid lag, given its segment's start (0: one segment per sequence); t moves on */
  __device__ __forceinline__ int nextLim(int segStart, int T) {
    const int lim = t - segStart;
    if (++t == T) t = 0;
    return lim;
  }
};
template <int KMAX, bool EXACT>
__global__ void k_conv1d_rows(float* __restrict__ y, const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                              const int* __restrict__ segStart, int64_t rows, int T, int C, int Kr, int64_t rowsPer, int silu) {
  const int K = EXACT ? KMAX : Kr;
  ConvWalk<KMAX> cw;
  if (!cw.init(x, w, bias, rows, T, C, K, rowsPer)) return;
  const float* xp = x + cw.r0 * C + cw.c;
  float* yp = y + cw.r0 * C + cw.c;
  const int* sp = segStart ? segStart + cw.r0 : nullptr;
  for (int64_t r = cw.r0; r < cw.r1; r += kConvU) {
    const int n = (int)min((int64_t)kConvU, cw.r1 - r);
    float xs[kConvU];
    int ss[kConvU];  // the rows' segment starts, loaded with them
#pragma unroll
    for (int u = 0; u < kConvU; u++) {
      xs[u] = u < n ? xp[(int64_t)u * C] : 0.f;
      ss[u] = sp && u < n ? sp[u] : 0;
    }
#pragma unroll
    for (int u = 0; u < kConvU; u++) {
      if (u < n) {
        convShift(cw.win, xs[u]);
        const float a = convWindow(cw.win, cw.wk, cw.bias, K, cw.nextLim(ss[u], T));
        yp[(int64_t)u * C] = silu ? siluf(a) : a;
      }
    }
    xp += (int64_t)kConvU * C;
    yp += (int64_t)kConvU * C;
    if (sp) sp += kConvU;
  }
}
/** rows per range of the conv row walk: about 8 blocks of 128 channels per SM of an H200 (132), at least 64 rows each */
static int64_t convRowsPer(int64_t rows, int C) {
  const int cBlocks = (C + 127) / 128;
  const int64_t ranges = std::max<int64_t>(1, std::min<int64_t>((132 * 8 + cBlocks - 1) / cBlocks, rows / 64));
  return rows > 0 ? (rows + ranges - 1) / ranges : 1;
}
__global__ void k_conv1d_state_out(float* st, const float* x, const int* segStart, const int* slots, int B, int T, int C, int K) {
  int W = K - 1;
  GRID_STRIDE(e, (int64_t)B * C * W) {
    int j = e % W;
    int c = (e / W) % C;
    int b = e / ((int64_t)W * C);
    int lastStart = T > 0 && segStart ? segStart[(int64_t)b * T + T - 1] : 0;
    int t = T - W + j;
    bool valid = t >= lastStart && t >= 0;
    st[((int64_t)slots[b] * C + c) * W + j] = valid ? x[((int64_t)b * T + t) * C + c] : 0.f;
  }
}
__global__ void k_conv1d_step(float* y, const float* x, float* st, const int* slots, const float* w, const float* bias, int n,
                              int C, int K, int silu) {
  int W = K - 1;
  GRID_STRIDE(e, (int64_t)n * C) {
    int c = e % C, i = e / C;
    float* so = st + ((int64_t)slots[i] * C + c) * W;
    const float* wo = w + (int64_t)c * K;
    float xv = x[e];
    float acc = bias ? bias[c] : 0.f;
    for (int k = 0; k < W; k++) acc += wo[k] * so[k];
    acc += wo[W] * xv;
    y[e] = silu ? siluf(acc) : acc;
    for (int k = 0; k + 1 < W; k++) so[k] = so[k + 1];
    if (W > 0) so[W - 1] = xv;
  }
}
/**
 * The conv's whole backward in one row walk (k_conv1d_rows' layout): per row q the pre-activation is recomputed
 * from the window, dpre = dy·SiLU'(pre) (dy without the SiLU), dx of row rp = q − (K − 1) gathered from the last K
 * dpre values (dx[rp] = Σ_k w[k]·dpre[rp + K − 1 − k] over the outputs whose segment holds rp: lim of row q − k
 * ≥ K − 1 − k), and dw[c, k] / dbias[c] summed over the range's rows (taps inside each row's segment): in f32 over
 * a group of kConvU rows, then in f64. The walk runs K − 1 rows past the range for the dx of its last rows (rows
 * past the array read as zero). One range: the sums are stored; several: each range's K + 1 sums go to part
 * [ranges][K + 1][C], added in range order by k_conv1d_dw_ranges (deterministic).
 */
template <int KMAX, bool EXACT>
__global__ void k_conv1d_bwd_rows(float* __restrict__ dx, float* __restrict__ dw, float* __restrict__ dbias, double* __restrict__ part,
                                  const float* __restrict__ dy, const float* __restrict__ x, const float* __restrict__ w,
                                  const float* __restrict__ bias, const int* __restrict__ segStart, int64_t rows, int T, int C, int Kr,
                                  int64_t rowsPer, int silu) {
  const int K = EXACT ? KMAX : Kr;
  ConvWalk<KMAX> cw;
  if (!cw.init(x, w, bias, rows, T, C, K, rowsPer)) return;
  const int64_t end = cw.r1 + K - 1, avail = min(rows, end);
  float dwin[KMAX];
  int lwin[KMAX];  // lwin[j]: the last valid lag of row q − j
  double acc[KMAX + 1];
#pragma unroll
  for (int k = 0; k < KMAX; k++) {
    dwin[k] = 0.f;
    lwin[k] = -1;
    acc[k] = 0.0;
  }
  acc[KMAX] = 0.0;
  const float* xp = x + cw.r0 * C + cw.c;
  const float* gp = dy + cw.r0 * C + cw.c;
  float* dxp = dx + (cw.r0 - (K - 1)) * C + cw.c;  // dx of row q − (K − 1): written once that row is complete
  const int* sp = segStart ? segStart + cw.r0 : nullptr;
  for (int64_t r = cw.r0; r < end; r += kConvU) {
    const int n = (int)min((int64_t)kConvU, avail - r);  // rows with data (≤ 0 in the walk's tail past the array)
    float xs[kConvU], gs[kConvU];
    int ss[kConvU];  // the rows' segment starts, loaded with them
#pragma unroll
    for (int u = 0; u < kConvU; u++) {
      xs[u] = u < n ? xp[(int64_t)u * C] : 0.f;
      gs[u] = u < n ? gp[(int64_t)u * C] : 0.f;
      ss[u] = sp && u < n ? sp[u] : 0;
    }
    float part32[KMAX + 1];
#pragma unroll
    for (int k = 0; k <= KMAX; k++) part32[k] = 0.f;
#pragma unroll
    for (int u = 0; u < kConvU; u++) {
      const int64_t q = r + u;
      if (q < end) {
        convShift(cw.win, xs[u]);
        const int lim = u < n ? cw.nextLim(ss[u], T) : -1;  // past the array: no valid lag (dp is 0 there)
        const float dp = silu ? gs[u] * siluGradf(convWindow(cw.win, cw.wk, cw.bias, K, lim)) : gs[u];
        convShift(dwin, dp);
        convShift(lwin, lim);
        if (q < cw.r1) {
          part32[KMAX] += dp;
#pragma unroll
          for (int k = 0; k < KMAX; k++)
            if (k < K && K - 1 - k <= lim) part32[k] += dp * cw.win[K - 1 - k];
        }
        if (q - (K - 1) >= cw.r0) {
          float g = 0.f;
#pragma unroll
          for (int k = 0; k < KMAX; k++)
            if (k < K && lwin[k] >= K - 1 - k) g += cw.wk[k] * dwin[k];
          dxp[(int64_t)u * C] = g;
        }
      }
    }
#pragma unroll
    for (int k = 0; k <= KMAX; k++) acc[k] += part32[k];
    xp += (int64_t)kConvU * C;
    gp += (int64_t)kConvU * C;
    dxp += (int64_t)kConvU * C;
    if (sp) sp += kConvU;
  }
  const int c = cw.c;
  if (part) {
    double* p = part + (int64_t)blockIdx.y * (K + 1) * C;
#pragma unroll
    for (int k = 0; k < KMAX; k++)
      if (k < K) p[(int64_t)k * C + c] = acc[k];
    p[(int64_t)K * C + c] = acc[KMAX];
  } else {
#pragma unroll
    for (int k = 0; k < KMAX; k++)
      if (k < K) dw[(int64_t)c * K + k] = (float)acc[k];
    if (dbias) dbias[c] = (float)acc[KMAX];
  }
}
__global__ void k_conv1d_dw_ranges(float* dw, float* dbias, const double* part, int ranges, int C, int K) {
  GRID_STRIDE(e, (int64_t)(K + 1) * C) {
    const int k = (int)(e / C), c = (int)(e % C);
    double v = 0;
    for (int q = 0; q < ranges; q++) v += part[(int64_t)q * (K + 1) * C + e];
    if (k < K) dw[(int64_t)c * K + k] = (float)v;
    else if (dbias) dbias[c] = (float)v;
  }
}

// ------------------------------------------------------------------------------------------------
// M1 selective scan (Mamba-1, grouped B/C): one thread per (b, channel), state h[N] in registers

/**
 * exp(x) for the selective scan's decays exp(Δ·A) (forward, chunk carry, backward): one MUFU.EX2 on the log2 scale
 * (ex2.approx.ftz: ~2 ulp; decays below 2^-126 flush to 0), as the reference's Triton kernels (tl.exp) and the decode
 * step do, instead of expf's ~10 instructions. Every per-step decay uses it, so the backward's recomputed states are
 * the forward's (the chunk carry's exp(A·Σdt) stays expf).
 */
__device__ __forceinline__ float scanExp(float x) { return ex2Fast(x * 1.4426950408889634f); }
__device__ __forceinline__ bool resetAt(const int* segStart, int64_t r, int t) { return t == 0 || (segStart && segStart[r] == t); }

/**
 * A B / C row of N ≤ NMAX states into v (zeros past N): as float4 when `vec` — every row whole (N == NMAX, NMAX % 4 == 0)
 * and the array 16-byte aligned (scanRowsVec) — else one float at a time.
 */
template <int NMAX>
__device__ __forceinline__ void loadStateRow(const float* p, int N, bool vec, float (&v)[NMAX]) {
  if constexpr (NMAX % 4 == 0) {
    if (vec) {
#pragma unroll
      for (int q = 0; q < NMAX / 4; q++) {
        const float4 f = reinterpret_cast<const float4*>(p)[q];
        v[4 * q] = f.x, v[4 * q + 1] = f.y, v[4 * q + 2] = f.z, v[4 * q + 3] = f.w;
      }
      return;
    }
  }
#pragma unroll
  for (int n = 0; n < NMAX; n++) v[n] = n < N ? p[n] : 0.f;
}
template <int NMAX>
__device__ __forceinline__ bool scanRowsVec(int N, const float* rows) {
  return NMAX % 4 == 0 && N == NMAX && (reinterpret_cast<uintptr_t>(rows) & 15) == 0;
}

/**
 * One step's per-channel inputs of a scan pass: Δ, u (x or dy), z (0 without z) at element i of row r, and whether a
 * segment starts at step t. The passes load the next step's while they compute this one: a thread walks its chunk
 * step by step, and each step waiting on its own loads kept the passes far below the memory's rate.
 */
struct ScanStepIn {
  float delta, u, z;
  bool reset;
};
__device__ __forceinline__ ScanStepIn scanStepIn(const float* delta, const float* u, const float* z, const int* segStart, int64_t r,
                                                 int t, int64_t i) {
  return {delta[i], u[i], z ? z[i] : 0.f, resetAt(segStart, r, t)};
}

/**
 * The (row b, time chunk k, channel c) of a chunked scan's thread tid = ((b · K) + k) · Di + c, the
 * channel's B/C group g and the chunk's steps [t0, t1); ok is false past the last thread.
 */
struct ScanLane {
  int64_t tid;
  int b, k, c, g, t0, t1;
  bool ok;
};
__device__ __forceinline__ ScanLane scanLane(int B, int T, int Di, int G, int K, int L) {
  ScanLane s;
  s.tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  s.ok = s.tid < (int64_t)B * K * Di;
  s.c = (int)(s.tid % Di);
  s.k = (int)((s.tid / Di) % K);
  s.b = (int)(s.tid / ((int64_t)Di * K));
  s.g = s.c / (Di / G);
  s.t0 = s.k * L;
  s.t1 = min(T, s.t0 + L);
  return s;
}

/**
 * The sequence is cut into K time chunks of L steps (K = m1_selective_scan_chunks: enough (b, chunk,
 * channel) threads to fill the GPU; K = 1 is the plain sequential scan). Chunked, the forward runs in
 * three passes: (1) `chunkS` set: each chunk scanned from a zero state, its end state written to
 * chunkS and the sum of its dt to chunkDt (−1 when a segment starts inside it: nothing carries
 * through); (2) k_scan_chunk_carry turns those into the state entering each chunk, `hin`; (3) each
 * chunk scanned again from hin, writing y. The state after the chunk's decays is exp(A·Σdt)·h_in +
 * the chunk's own end state, since A is constant over time.
 */
template <int NMAX, typename OT>
__global__ void k_selective_scan(OT* y, const float* x, const float* delta, const float* A, const float* Bm, const float* Cm,
                                 const float* D, const float* z, const float* db, const int* segStart, float* st,
                                 const int* slots, const float* hin, float* chunkS, float* chunkDt, int B, int T, int Di, int N,
                                 int G, int K, int L, float* ckpt, int ckL, int ckK) {
  const ScanLane ln = scanLane(B, T, Di, G, K, L);
  if (!ln.ok) return;
  const int64_t tid = ln.tid;
  const int c = ln.c, k = ln.k, b = ln.b, g = ln.g, t0 = ln.t0, t1 = ln.t1;
  float a[NMAX], h[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; n++) {
    a[n] = n < N ? A[(int64_t)c * N + n] : 0.f;
    h[n] = hin && n < N ? hin[tid * N + n] : 0.f;
  }
  float bias = db ? db[c] : 0.f, Dc = D ? D[c] : 0.f;
  float dtSum = 0.f;
  bool cut = false;
  // checkpoints for the backward (final pass only): the state entering each of its chunks of ckL steps, i.e.
  // after step k·ckL − 1, at [b, k, c, :] (chunk 0: zeros, written by the thread that starts the row)
  if (ckpt && t0 == 0) {
#pragma unroll
    for (int n = 0; n < NMAX; n++)
      if (n < N) ckpt[(((int64_t)b * ckK) * Di + c) * N + n] = 0.f;
  }
  // the next step's inputs loaded one step ahead (scanStepIn); B / C rows as float4 where every row is aligned
  const bool vec = scanRowsVec<NMAX>(N, Bm) && scanRowsVec<NMAX>(N, Cm);
  const float* zIn = chunkS ? nullptr : z;  // the chunk pass does not gate
  auto in = [&](int t) { const int64_t r = (int64_t)b * T + t; return scanStepIn(delta, x, zIn, segStart, r, t, r * Di + c); };
  ScanStepIn next = t0 < t1 ? in(t0) : ScanStepIn{};
  for (int t = t0; t < t1; t++) {
    const ScanStepIn cur = next;
    if (t + 1 < t1) next = in(t + 1);
    const float dv = cur.delta, xv = cur.u, zv = cur.z;
    int64_t r = (int64_t)b * T + t;
    if (cur.reset) {
      cut = true;
#pragma unroll
      for (int n = 0; n < NMAX; n++) h[n] = 0.f;
    }
    int64_t i = r * Di + c;
    float dt = softplusf(dv + bias), dtx = dt * xv;
    dtSum += dt;
    float bv[NMAX];
    loadStateRow<NMAX>(Bm + (r * G + g) * N, N, vec, bv);
    if (chunkS) {
#pragma unroll
      for (int n = 0; n < NMAX; n++)
        if (n < N) h[n] = scanExp(dt * a[n]) * h[n] + dtx * bv[n];
      continue;
    }
    float cv[NMAX];
    loadStateRow<NMAX>(Cm + (r * G + g) * N, N, vec, cv);
    float acc = 0.f;
#pragma unroll
    for (int n = 0; n < NMAX; n++) {
      if (n < N) {
        h[n] = scanExp(dt * a[n]) * h[n] + dtx * bv[n];
        acc += cv[n] * h[n];
      }
    }
    acc += Dc * xv;
    storeOut(y, i, z ? acc * siluf(zv) : acc);
    if (ckpt && (t + 1) % ckL == 0 && t + 1 < T) {
      float* cko = ckpt + (((int64_t)b * ckK + (t + 1) / ckL) * Di + c) * N;
#pragma unroll
      for (int n = 0; n < NMAX; n++)
        if (n < N) cko[n] = h[n];
    }
  }
  if (chunkS) {
#pragma unroll
    for (int n = 0; n < NMAX; n++)
      if (n < N) chunkS[tid * N + n] = h[n];
    chunkDt[tid] = cut ? -1.f : dtSum;
  } else if (st && k == K - 1) {
    float* so = st + ((int64_t)slots[b] * Di + c) * N;
#pragma unroll
    for (int n = 0; n < NMAX; n++)
      if (n < N) so[n] = h[n];
  }
}

/**
 * Per (b, c, n), in place over S [B, K, Di, N]: the chunks' own end values (states, or adjoints when
 * `reverse`) become the value entering each chunk — carry ← exp(A·Σdt_k)·carry + S_k, in time order
 * (reverse: from the last chunk back), cut to 0 where chunkDt < 0 (a segment starts in the chunk).
 */
__global__ void k_scan_chunk_carry(float* S, const float* chunkDt, const float* A, int B, int K, int Di, int N, int reverse) {
  constexpr int kAhead = 32;  // chunks loaded before any is written: the loads of a batch are in flight together (8: 254 µs for the M1-3B backward's 512 chunks)
  GRID_STRIDE(tid, (int64_t)B * Di * N) {
    int n = tid % N, c = (tid / N) % Di, b = tid / ((int64_t)N * Di);
    float a = A[(int64_t)c * N + n], carry = 0.f;
    for (int j0 = 0; j0 < K; j0 += kAhead) {
      float own[kAhead], d[kAhead];
#pragma unroll
      for (int u = 0; u < kAhead; u++) {
        const int j = j0 + u, k = reverse ? K - 1 - j : j;
        const int64_t o = ((int64_t)b * K + k) * Di + c;
        own[u] = j < K ? S[o * N + n] : 0.f;
        d[u] = j < K ? chunkDt[o] : 0.f;
      }
#pragma unroll
      for (int u = 0; u < kAhead; u++) {
        const int j = j0 + u, k = reverse ? K - 1 - j : j;
        if (j < K) {
          S[(((int64_t)b * K + k) * Di + c) * N + n] = carry;
          carry = (d[u] < 0.f ? 0.f : expf(a * d[u])) * carry + own[u];  // expf: scanExp here took 120 → 175 registers (ncu13)
        }
      }
    }
  }
}

/**
 * One decode step. LANES consecutive lanes share one (token, channel): lane k holds states
 * n = k, k + LANES, ... of the channel's contiguous [N] state row, so a warp's state (and A, B, C)
 * accesses are contiguous; C·h is summed with shuffles inside each LANES-lane group. LANES is N
 * rounded up to a power of two, at most 32 (N = 16: 2 channels per warp; N = 5: 8 lanes, 3 idle;
 * N > 32: a warp per channel, each lane looping). Requires blockDim.x to be a multiple of 32.
 */
template <int LANES>
__global__ void k_selective_scan_step(float* y, const float* x, const float* delta, const float* A, const float* Bm,
                                      const float* Cm, const float* D, const float* z, const float* db, float* st,
                                      const int* slots, int nTok, int Di, int N, int G) {
  // grid: x over (channel, lane) of one token, y over tokens. 32-bit index math inside a token: a
  // 64-bit division per thread (the flat (token, channel) index split by Di) cost more than the
  // memory traffic of the whole step (0.44 ms per layer at batch 512, measured on the H200).
  const int lane = threadIdx.x & 31, k = lane % LANES;
  const int chPerGroup = Di / G;
  for (int s = blockIdx.y; s < nTok; s += gridDim.y) {
    float* stRow = st + (int64_t)slots[s] * Di * N;
    const int64_t rowOff = (int64_t)s * Di;
    // `w0` is warp-uniform, so all 32 lanes reach every shuffle
    for (int w0 = blockIdx.x * blockDim.x + threadIdx.x - lane; w0 < Di * LANES; w0 += gridDim.x * blockDim.x) {
      const int c = (w0 + lane) / LANES;
      const bool valid = c < Di;
      float acc = 0.f, xv = 0.f;
      if (valid) {
        const int64_t i = rowOff + c;
        const int g = c / chPerGroup;
        const float dt = softplusf(delta[i] + (db ? db[c] : 0.f));
        xv = x[i];
        const float dtx = dt * xv;
        const float* ap = A + (int64_t)c * N;
        const float* bp = Bm + ((int64_t)s * G + g) * N;
        const float* cp = Cm + ((int64_t)s * G + g) * N;
        float* so = stRow + (int64_t)c * N;
        for (int n = k; n < N; n += LANES) {
          const float hn = scanExp(dt * ap[n]) * so[n] + dtx * bp[n];
          so[n] = hn;
          acc += cp[n] * hn;
        }
      }
#pragma unroll
      for (int o = LANES / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
      if (valid && k == 0) {
        const int64_t i = rowOff + c;
        if (D) acc += D[c] * xv;
        y[i] = z ? acc * siluf(z[i]) : acc;
      }
    }
  }
}

constexpr float kLog2e = 1.4426950408889634f;
/**
 * One float4 of a state row advanced by one token on the log2 scale: h ← 2^(dt·a2) ⊙ h + dt·x·B (dtx = dt·x), where
 * a2 = A·log2(e), so 2^(dt·a2) = exp(dt·A) by one MUFU.EX2 per state — as the reference's Triton step does (tl.exp
 * lowers to ex2.approx) — instead of expf's ~10 instructions, which made the decode step issue-bound (Nsight Compute,
 * batch 128: 69 % of issue slots busy). scanState4 takes A itself (dt·log2 e folded into one multiply).
 */
__device__ __forceinline__ float4 scanState4Log2(float4 v, const float4 a2, const float4 b, float dt, float dtx) {
  v.x = ex2Fast(dt * a2.x) * v.x + dtx * b.x;
  v.y = ex2Fast(dt * a2.y) * v.y + dtx * b.y;
  v.z = ex2Fast(dt * a2.z) * v.z + dtx * b.z;
  v.w = ex2Fast(dt * a2.w) * v.w + dtx * b.w;
  return v;
}
__device__ __forceinline__ float4 scanState4(float4 v, const float4 a, const float4 b, float dt, float dtx) {
  return scanState4Log2(v, a, b, dt * kLog2e, dtx);
}
__device__ __forceinline__ float dot4(const float4 c, const float4 v) { return c.x * v.x + c.y * v.y + c.z * v.z + c.w * v.w; }

/**
 * One channel's state row h [4·N4] (float4s) advanced by one token in place (scanState4), returning
 * C·h. All rows are loaded before the math so their loads are in flight together.
 */
template <int N4>
__device__ __forceinline__ float scanStateStep(float4* so, const float4* ap, const float4* bp, const float4* cp, float dt, float dtx) {
  float4 h[N4];
#pragma unroll
  for (int j = 0; j < N4; j++) h[j] = so[j];
  float acc = 0.f;
#pragma unroll
  for (int j = 0; j < N4; j++) {
    const float4 cc = cp[j];  // loaded before the store, which may alias it
    const float4 v = scanState4(h[j], ap[j], bp[j], dt, dtx);
    so[j] = v;
    acc += dot4(cc, v);
  }
  return acc;
}

/**
 * One decode step, a thread per (token, channel) with the channel's whole state row: N = 4·N4
 * states read and written as float4, A / B / C rows likewise. Each thread keeps 4·N4 independent
 * loads in flight, where the lane-per-state kernel above kept one 4-byte load per thread (at batch
 * 512 that one was latency-bound: 0.33 ms per M1-3B layer for 200 MB of state traffic). The launcher
 * uses it when N is 4, 8, 16 or 32 and every row is 16-byte aligned.
 */
template <int N4>
__global__ void k_selective_scan_step_vec(float* y, const float* x, const float* delta, const float* A, const float* Bm,
                                          const float* Cm, const float* D, const float* z, const float* db, float* st,
                                          const int* slots, int nTok, int Di, int G) {
  constexpr int N = 4 * N4;
  const int chPerGroup = Di / G;
  for (int s = blockIdx.y; s < nTok; s += gridDim.y) {
    float4* stRow = reinterpret_cast<float4*>(st + (int64_t)slots[s] * Di * N);
    const int64_t rowOff = (int64_t)s * Di;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < Di; c += gridDim.x * blockDim.x) {
      const int64_t i = rowOff + c;
      const int g = c / chPerGroup;
      const float dt = softplusf(delta[i] + (db ? db[c] : 0.f));
      const float xv = x[i];
      const float dtx = dt * xv;
      const float4* ap = reinterpret_cast<const float4*>(A + (int64_t)c * N);
      const float4* bp = reinterpret_cast<const float4*>(Bm + ((int64_t)s * G + g) * N);
      const float4* cp = reinterpret_cast<const float4*>(Cm + ((int64_t)s * G + g) * N);
      float acc = scanStateStep<N4>(stRow + (int64_t)c * N4, ap, bp, cp, dt, dtx);
      if (D) acc += D[c] * xv;
      y[i] = z ? acc * siluf(z[i]) : acc;
    }
  }
}

/**
 * Four consecutive values (i4: their float4 index) of an f32 or a bf16 array: the decode step's SSM states (bf16: the
 * reference's ssm_state in a bf16 model, read as stored and rounded to nearest-even when stored: storeOut4) and its
 * in_proj row (bf16: a bf16 model's Linear output). stage() starts an asynchronous copy of them into a float4 slot of
 * shared memory, staged() reads them back as floats.
 */
template <typename ST>
struct Vec4;
template <>
struct Vec4<float> {
  static __device__ __forceinline__ float4 load(const float* st, int64_t i4) { return load4(st, i4); }
  static __device__ __forceinline__ void stage(float4* dst, const float* st, int64_t i4, bool v) {
    cpAsync16(dst, v ? reinterpret_cast<const float4*>(st) + i4 : reinterpret_cast<const float4*>(st), v);
  }
  static __device__ __forceinline__ float4 staged(const float4& slot) { return slot; }
};
template <>
struct Vec4<__nv_bfloat16> {
  static __device__ __forceinline__ float4 load(const __nv_bfloat16* st, int64_t i4) { return load4(st, i4); }
  static __device__ __forceinline__ void stage(float4* dst, const __nv_bfloat16* st, int64_t i4, bool v) {
    cpAsync8(dst, v ? reinterpret_cast<const uint2*>(st) + i4 : reinterpret_cast<const uint2*>(st), v);
  }
  static __device__ __forceinline__ float4 staged(const float4& slot) { return bf16x4ToFloat4(*reinterpret_cast<const uint2*>(&slot)); }
};

/**
 * One channel of a decode step (lane l of a warp's tile: channel c = c0 + l), the part both decode-step kernels
 * share. weights(): b_dt, D, the conv bias, the conv taps (when the width KC is known at compile time: 4, M1's) and
 * where the channel's x' lives in a proj row — the repeat is an index map: repeated channel c = g·N + j reads x'
 * channel ⌊g / r⌋·N + j — loaded once per channel, not per token. token(): z, x', deltaLow and the conv state of one
 * token, all before any store. step(): the conv step on the repeated x (the state holds the previous K − 1 inputs;
 * shifted in place), SiLU, Δ = softplus(deltaLow + 2·b_dt) (b_dt reaches Δ twice, m1-spec).
 */
template <int KC, typename ST>
struct DecodeChannel {
  static constexpr int KT = KC > 0 ? KC : 1, KP = KC > 1 ? KC - 1 : 1;
  float zv = 0.f, xin = 0.f, dl = 0.f, bias = 0.f, dSkip = 0.f, cb = 0.f, taps[KT], prev[KP];
  int xOff = 0;
  ST* cs = nullptr;  // the conv window: f32, or bf16 with the state (stored rounded; this step's output uses xin as is)
  float dt = 0.f, dtx = 0.f, xv = 0.f;  // after step()

  __device__ __forceinline__ void weights(WeightF dtBias, WeightF convW, WeightF convBias, WeightF D, int c, int Di, int dXb, int N) {
    const int g = c / N;
    xOff = Di + (g / (Di / dXb)) * N + c % N;
    bias = dtBias[c];
    dSkip = D[c];
    cb = convBias.p ? convBias[c] : 0.f;
    if constexpr (KC > 0) {
#pragma unroll
      for (int k = 0; k < KC; k++) taps[k] = convW[(int64_t)c * KC + k];
    }
  }
  template <typename PT>
  __device__ __forceinline__ void token(const PT* row, const float* deltaLow, ST* convSt, int s, int slot, int c, int Di, int W) {
    cs = convSt + ((int64_t)slot * Di + c) * W;
    zv = toF<PT>(row[c]);
    xin = toF<PT>(row[xOff]);
    dl = deltaLow[(int64_t)s * Di + c];
    if constexpr (KC > 0) {
#pragma unroll
      for (int k = 0; k < KC - 1; k++) prev[k] = toF<ST>(cs[k]);
    }
  }
  __device__ __forceinline__ void step(WeightF convW, int c, int K) {
    const int W = K - 1;
    float acc = cb;
    if constexpr (KC > 0) {
#pragma unroll
      for (int k = 0; k < KC - 1; k++) acc += taps[k] * prev[k];
      acc += taps[KC - 1] * xin;
#pragma unroll
      for (int k = 0; k + 1 < KC - 1; k++) storeOut(cs, k, prev[k + 1]);
    } else {  // any width: the taps and state read in the loop
      for (int k = 0; k < W; k++) acc += convW[(int64_t)c * K + k] * toF<ST>(cs[k]);
      acc += convW[(int64_t)c * K + W] * xin;
      for (int k = 0; k + 1 < W; k++) cs[k] = cs[k + 1];
    }
    if (W > 0) storeOut(cs, W - 1, xin);
    xv = siluf(acc);
    dt = softplusf((dl + bias) + bias);
    dtx = dt * xv;
  }
};

/** a2 = A·log2(e) = −exp(A_log)·log2(e) for scanState4Log2, four at a time (once per channel in the decode step) */
__device__ __forceinline__ float4 negExpLog2e4(const float4 l) {
  return make_float4(-ex2Fast(l.x * kLog2e) * kLog2e, -ex2Fast(l.y * kLog2e) * kLog2e, -ex2Fast(l.z * kLog2e) * kLog2e,
                     -ex2Fast(l.w * kLog2e) * kLog2e);
}

/** pass i's C·h: summed over its N4 lanes, handed to the lane of its channel (lane / CPB == i keeps it in `out`) */
template <int N4>
__device__ __forceinline__ void passOut(float part, int i, int lane, float& out) {
  constexpr int CPB = 32 / N4;
#pragma unroll
  for (int o = N4 / 2; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
  const float got = __shfl_sync(0xffffffffu, part, (lane % CPB) * N4);
  if (lane / CPB == i) out = got;
}

/**
 * mamba1DecodeStep fused (the op's definition: mamba1DecodeStepComposite in backend.ts). A warp per 32
 * channels c0 … c0 + 31 — one tile per warp, which then steps the tokens s = blockIdx.y, + gridDim.y, … — in two
 * phases per token:
 *  - per channel, lane l for channel c0 + l: z, x' straight from in_proj's output row [z | x' | B' | C | δ]
 *    (DecodeChannel), the conv step (state shift, SiLU) and Δ = softplus(deltaLow + 2·b_dt);
 *  - per state, in N4 passes of 32 / N4 channels: N4 consecutive lanes per channel, lane j owning float4 j
 *    of its state, A, B and C rows (the tile's rows are contiguous: each pass is one 512-byte run per
 *    warp), Δ and Δ·x fetched from the channel's lane by shuffles, C·h summed over the N4 lanes by
 *    shuffles and handed back to the channel's lane, which writes y.
 * The channel's weights and A (negExpLog2e4 of A_log) are loaded once per warp, not per token. The state and the
 * channel's token inputs are loaded before the first store; each pass's B and C float4s in the pass. This kernel takes
 * N = 32 (its A rows in registers: 8 float4s a lane); k_mamba1_decode_step_smem below, the same step staged through
 * shared memory, takes N ≤ 16 (M1's 16). KC: the conv width when known at compile time (4, M1's), 0 for any. ST: the
 * state's storage (State4). One kernel instead of split, two repeats, bias add, conv step and scan step. Full warps
 * take part in every shuffle (a tile's lanes past Di only skip their memory accesses), so blocks are whole warps.
 * _handles checks the shapes and the 16-byte alignment of the rows.
 */
constexpr int kDecodeThreads = 128;
template <int N4, int KC, typename OT, typename ST, typename PT>
__global__ void __launch_bounds__(kDecodeThreads, 4) k_mamba1_decode_step(OT* y, const PT* proj, const float* deltaLow,
    WeightF dtBias, ST* convSt, WeightF convW, WeightF convBias, const float* aLog, WeightF D, ST* ssmSt,
    const int* slots, int nTok, int Di, int dXb, int P, int Kr) {
  pdlStart();  // launched by pdlLaunch (pdl.cuh)
  constexpr int N = 4 * N4, CPB = 32 / N4;  // states per channel; channels per pass
  const int K = KC > 0 ? KC : Kr, r = Di / dXb;
  const int lane = threadIdx.x & 31, j = lane & (N4 - 1), sub = lane / N4;  // in a pass: float4 j of channel c0 + i·CPB + sub
  const int tile = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;        // the launcher gives each warp one tile (or none)
  if (tile >= (Di + 31) / 32) return;                                        // warp-uniform
  const int c0 = tile * 32, c = c0 + lane;
  const bool live = c < Di;
  DecodeChannel<KC, ST> ch;
  if (live) ch.weights(dtBias, convW, convBias, D, c, Di, dXb, N);
  float4 a2[N4];
#pragma unroll
  for (int i = 0; i < N4; i++) {
    const int cm = c0 + i * CPB + sub;
    a2[i] = cm < Di ? negExpLog2e4(reinterpret_cast<const float4*>(aLog + (int64_t)cm * N)[j]) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  for (int s = blockIdx.y; s < nTok; s += gridDim.y) {
    const PT* row = proj + (int64_t)s * P;
    const int slot = slots[s];
    if (live) ch.token(row, deltaLow, convSt, s, slot, c, Di, K - 1);
    ST* st = ssmSt + ((int64_t)slot * Di + c0) * N;  // pass i's run: float4 i·32 + lane of it
    float4 h[N4];
#pragma unroll
    for (int i = 0; i < N4; i++)
      if (c0 + i * CPB + sub < Di) h[i] = Vec4<ST>::load(st, i * 32 + lane);
    if (live) ch.step(convW, c, K);
    float out = 0.f;  // C·h of channel c, from the pass lane / CPB
#pragma unroll
    for (int i = 0; i < N4; i++) {
      const int m = i * CPB + sub, cm = c0 + m;
      const float dti = __shfl_sync(0xffffffffu, ch.dt, m), dtxi = __shfl_sync(0xffffffffu, ch.dtx, m);
      float part = 0.f;
      if (cm < Di) {
        const int g = cm / N, src = (g / r) * N;
        const float4 b = load4(row + Di + dXb + src, j);
        const float4 cv = load4(row + Di + 2 * dXb + g * N, j);
        const float4 hn = scanState4Log2(h[i], a2[i], b, dti, dtxi);
        storeOut4(st, i * 32 + lane, hn);
        part = dot4(cv, hn);
      }
      passOut<N4>(part, i, lane, out);
    }
    if (live) storeOut(y, (int64_t)s * Di + c, (out + ch.dSkip * ch.xv) * siluf(ch.zv));
  }
}

/**
 * The same step with each token's state float4s and its groups' B and C rows staged in shared memory by cp.async
 * instead of registers, and A (a2) kept there: the kernel for N ≤ 16 (the register kernel above takes N = 32).
 * Registers held ~100 of them per lane, which left 16 warps an SM; the copies cost none, so the SM holds more warps
 * and has that many tiles' loads in flight. B and C are staged once per group (lanes 0–15), the state by the lane that
 * reads it; the warp syncs once in between, and once before the next token's copies reuse the slots. Tried: two stage
 * buffers a warp, the next token's copies in flight during this token's math — no faster at any batch (eleventh
 * session, H200, same call, two rounds: batch 512 8.17 / 8.20 ms with one buffer, 8.20 / 8.29 with two).
 */
template <int N4, int KC, typename OT, typename ST, typename PT>
__global__ void __launch_bounds__(kDecodeThreads) k_mamba1_decode_step_smem(OT* y, const PT* proj, const float* deltaLow,
    WeightF dtBias, ST* convSt, WeightF convW, WeightF convBias, const float* aLog, WeightF D, ST* ssmSt,
    const int* slots, int nTok, int Di, int dXb, int P, int Kr) {
  pdlStart();  // launched by pdlLaunch (pdl.cuh)
  constexpr int N = 4 * N4, CPB = 32 / N4;
  extern __shared__ float4 stage[];  // per warp: a2 [N4 passes][32 lanes], then h [N4][32], then B, C [32 / N groups][N4]
  const int K = KC > 0 ? KC : Kr, r = Di / dXb;
  const int lane = threadIdx.x & 31, j = lane & (N4 - 1), sub = lane / N4;
  const int tile = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;  // the launcher gives each warp one tile (or none)
  if (tile >= (Di + 31) / 32 || (int)blockIdx.y >= nTok) return;       // warp-uniform
  float4* const base = stage + (threadIdx.x / 32) * (2 * N4 * 32 + 16);
  float4* const buf = base + N4 * 32;
  const float4* const bc = buf + N4 * 32;  // the tile's B rows (8 float4s), then its C rows (8)
  const int c0 = tile * 32, c = c0 + lane;
  const bool live = c < Di;
  DecodeChannel<KC, ST> ch;
  if (live) ch.weights(dtBias, convW, convBias, D, c, Di, dXb, N);
#pragma unroll
  for (int i = 0; i < N4; i++) {  // a2 in the slots this lane reads
    const int cm = c0 + i * CPB + sub;
    base[i * 32 + lane] = cm < Di ? negExpLog2e4(reinterpret_cast<const float4*>(aLog + (int64_t)cm * N)[j]) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  // B and C rows of the tile's groups (its 32 / N groups × N4 float4s = 8 each): lanes 0–7 B, 8–15 C
  const int q = lane & 7, bcGroup = c0 / N + q / N4;
  const bool bcLive = lane < 16 && bcGroup * N < Di;
  const int bcOff = (lane < 8 ? Di + dXb + (bcGroup / r) * N : Di + 2 * dXb + bcGroup * N) + (q & (N4 - 1)) * 4;
  // token s's state float4s and B, C rows into the stage buffer
  const auto issue = [&](int s) {
    const PT* row = proj + (int64_t)s * P;
    const ST* st = ssmSt + ((int64_t)slots[s] * Di + c0) * N;
#pragma unroll
    for (int i = 0; i < N4; i++) Vec4<ST>::stage(buf + i * 32 + lane, st, i * 32 + lane, c0 + i * CPB + sub < Di);
    if (lane < 16) Vec4<PT>::stage(buf + N4 * 32 + lane, bcLive ? row + bcOff : row, 0, bcLive);
    cpAsyncCommit();
  };
  issue(blockIdx.y);
  for (int s = blockIdx.y; s < nTok; s += gridDim.y) {
    const PT* row = proj + (int64_t)s * P;
    const int slot = slots[s];
    if (live) {
      ch.token(row, deltaLow, convSt, s, slot, c, Di, K - 1);
      ch.step(convW, c, K);
    }
    cpAsyncWaitAll();
    __syncwarp();  // B and C were staged by lanes 0–15
    ST* st = ssmSt + ((int64_t)slot * Di + c0) * N;
    float out = 0.f;
#pragma unroll
    for (int i = 0; i < N4; i++) {
      const int m = i * CPB + sub, cm = c0 + m;
      const float dti = __shfl_sync(0xffffffffu, ch.dt, m), dtxi = __shfl_sync(0xffffffffu, ch.dtx, m);
      float part = 0.f;
      if (cm < Di) {
        const int lg = (m / N) * N4 + j;  // this lane's float4 of its group's B and C rows
        const float4 hn = scanState4Log2(Vec4<ST>::staged(buf[i * 32 + lane]), base[i * 32 + lane], Vec4<PT>::staged(bc[lg]), dti, dtxi);
        storeOut4(st, i * 32 + lane, hn);
        part = dot4(Vec4<PT>::staged(bc[8 + lg]), hn);
      }
      passOut<N4>(part, i, lane, out);
    }
    if (live) storeOut(y, (int64_t)s * Di + c, (out + ch.dSkip * ch.xv) * siluf(ch.zv));
    __syncwarp();  // every lane has read the buffer before the next token's copies overwrite it
    if (s + (int)gridDim.y < nTok) issue(s + gridDim.y);
  }
}

/** the smem kernel's occupancy is bounded by shared memory: ask for the largest carveout, once per instantiation */
template <int N4, int KC, typename OT, typename ST, typename PT>
void smemCarveout() {
  static const bool done = [] {
    cudaFuncSetAttribute(k_mamba1_decode_step_smem<N4, KC, OT, ST, PT>, cudaFuncAttributePreferredSharedMemoryCarveout, 100);
    return true;
  }();
  (void)done;
}

constexpr int kScanChunk = 32;

/**
 * Sum `v` over each aligned run of `width` lanes (a power of two ≤ 32) that share one destination, then
 * add it once per run. The launcher picks `width` from the channel layout (every lane of a warp active,
 * runs of `width` consecutive channels in one group of one row); width 1: each lane adds its own value.
 */
__device__ __forceinline__ void groupAtomicAdd(float* dst, float v, int width) {
  for (int o = width >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & (width - 1)) == 0) atomicAdd(dst, v);
}

/**
 * Backward of the selective scan, per (b, chunk k, c) over time chunks of at most kScanChunk steps (the
 * backward's own chunking, bwdChunks: finer than the forward's, so a chunk is one sub-chunk and its states
 * need no checkpoints of their own). The state entering the chunk (`hin`, from the forward's passes 1–2)
 * and the adjoint entering it from the right (`adjIn`, from k_selective_scan_bwd_adj + k_scan_chunk_carry
 * reversed) make chunks independent. A chunk's states are recomputed into hs[step][N][threads]
 * (thread-fastest: coalesced), then walked backwards. dB and dC sum over the channels of a group: when a
 * group's lanes are exactly N (`width` == N, M1-3B: 16 channels of d_state 16), each lane puts its N terms
 * in shared memory and lane j of the group adds column j — one atomic per lane, on N consecutive addresses
 * — instead of N shuffle reductions (`colSum`: the launcher also makes sure every lane of every block is
 * valid); otherwise groupAtomicAdd. dA, dD, dDb: atomics into zeroed outputs.
 */
template <int NMAX>
__global__ void __launch_bounds__(128) k_selective_scan_bwd(float* dx, float* ddelta, float* dA, float* dBm, float* dCm, float* dD,
                                     float* dz, float* dDb, float* hs, const float* hin, const float* adjIn, const float* dy,
                                     const float* x, const float* delta, const float* A, const float* Bm, const float* Cm, const float* D,
                                     const float* z, const float* db, const int* segStart, int B, int T, int Di, int N, int G,
                                     int K, int L, int width, int colSum) {
  extern __shared__ float gsum[];  // colSum: [2][blockDim.x][N + 1] (dC, dB terms; +1 against bank conflicts)
  const ScanLane ln = scanLane(B, T, Di, G, K, L);
  if (!ln.ok) return;
  const int64_t tid = ln.tid, nth = (int64_t)B * K * Di;
  const int c = ln.c, b = ln.b, g = ln.g, t0 = ln.t0, t1 = ln.t1, q = t1 - t0;
  float* myC = gsum + (size_t)threadIdx.x * (N + 1);
  float* myB = myC + (size_t)blockDim.x * (N + 1);
  const int lane = threadIdx.x & 31, col = lane & (N - 1), first = threadIdx.x - (lane & (N - 1));  // colSum: the group's first lane
  float a[NMAX], h[NMAX], adj[NMAX], dAa[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; n++) {
    a[n] = n < N ? A[(int64_t)c * N + n] : 0.f;
    h[n] = hin && n < N ? hin[tid * N + n] : 0.f;
    adj[n] = adjIn && n < N ? adjIn[tid * N + n] : 0.f;
    dAa[n] = 0.f;
  }
  const float bias = db ? db[c] : 0.f, Dc = D ? D[c] : 0.f;
  // the chunk's states, from the state entering it (hin is also the state before step 0: prev of j = 0)
  for (int j = 0; j < q; j++) {
    const int t = t0 + j;
    const int64_t r = (int64_t)b * T + t;
    const bool reset = resetAt(segStart, r, t);
    const int64_t i = r * Di + c;
    const float dt = softplusf(delta[i] + bias), dtx = dt * x[i];
    const float* bp = Bm + (r * G + g) * N;
#pragma unroll
    for (int n = 0; n < NMAX; n++)
      if (n < N) {
        h[n] = scanExp(dt * a[n]) * (reset ? 0.f : h[n]) + dtx * bp[n];
        if (j + 1 < q) hs[((int64_t)j * N + n) * nth + tid] = h[n];  // the last state stays in h
      }
  }
  // walking back, h holds the state after step j (after the loop above: the chunk's last state), and the state
  // before it is the only one read from hs (then it becomes h): one load per state and step
  float dDacc = 0.f, dDbacc = 0.f;
  for (int j = q - 1; j >= 0; j--) {
    const int t = t0 + j;
    const int64_t r = (int64_t)b * T + t;
    const bool reset = resetAt(segStart, r, t);
    const int64_t i = r * Di + c;
    const float xv = x[i], v = delta[i] + bias, dt = softplusf(v);
    const float* bp = Bm + (r * G + g) * N;
    const float* cp = Cm + (r * G + g) * N;
    float dr = dy[i];
    if (z) {
      float rr = Dc * xv;
#pragma unroll
      for (int n = 0; n < NMAX; n++)
        if (n < N) rr += cp[n] * h[n];
      const float zv = z[i];
      dz[i] = dr * rr * siluGradf(zv);
      dr *= siluf(zv);
    }
    float dxv = 0.f;
    if (D) {
      dDacc += dr * xv;
      dxv = dr * Dc;
    }
    float ddt = 0.f;
#pragma unroll
    for (int n = 0; n < NMAX; n++) {
      if (n < N) {
        const float hn = h[n];
        h[n] = j > 0 ? hs[((int64_t)(j - 1) * N + n) * nth + tid] : (hin ? hin[tid * N + n] : 0.f);
        const float prev = reset ? 0.f : h[n];
        const float gh = adj[n] + dr * cp[n];
        const float decay = scanExp(dt * a[n]);
        ddt += gh * (a[n] * decay * prev + bp[n] * xv);
        dAa[n] += gh * dt * decay * prev;
        dxv += gh * dt * bp[n];
        adj[n] = reset ? 0.f : gh * decay;
        if (colSum) {
          myC[n] = dr * hn;
          myB[n] = gh * dt * xv;
        } else {
          groupAtomicAdd(&dCm[(r * G + g) * N + n], dr * hn, width);
          groupAtomicAdd(&dBm[(r * G + g) * N + n], gh * dt * xv, width);
        }
      }
    }
    if (colSum) {
      __syncwarp();
      float sc = 0.f, sb = 0.f;
      for (int l = 0; l < N; l++) {
        sc += gsum[(size_t)(first + l) * (N + 1) + col];
        sb += gsum[(size_t)(blockDim.x + first + l) * (N + 1) + col];
      }
      atomicAdd(&dCm[(r * G + g) * N + col], sc);
      atomicAdd(&dBm[(r * G + g) * N + col], sb);
      __syncwarp();
    }
    dx[i] = dxv;
    const float dv = ddt * (v > 20.f ? 1.f : sigmoidf_(v));
    ddelta[i] = dv;
    dDbacc += dv;
  }
#pragma unroll
  for (int n = 0; n < NMAX; n++)
    if (n < N) atomicAdd(&dA[(int64_t)c * N + n], dAa[n]);
  if (dD) atomicAdd(&dD[c], dDacc);
  if (dDb) atomicAdd(&dDb[c], dDbacc);
}

/** Sum over each aligned run of W lanes (a power of two ≤ 32); every lane of the run gets the sum. */
template <int W>
__device__ __forceinline__ float runSum(float v) {
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/** SPT consecutive floats (SPT 1 or 2; p aligned to SPT floats) */
template <int SPT>
__device__ __forceinline__ void loadRun(const float* p, float (&v)[SPT]) {
  static_assert(SPT == 1 || SPT == 2, "runs of 1 or 2 floats");
  if constexpr (SPT == 2) {
    const float2 t = *reinterpret_cast<const float2*>(p);
    v[0] = t.x, v[1] = t.y;
  } else {
    v[0] = *p;
  }
}

/** chunk length and states per lane of k_selective_scan_bwd_lanes */
constexpr int kLanesChunk = 16, kLanesSpt = 2;

/**
 * Blocks an SM that k_selective_scan_bwd_lanes's registers are bounded for (256 threads each): 4 — 64 registers, 8
 * blocks of 128 threads — where a lane owns at most 2 of a chunk's steps (LPC ≥ 8), else no bound. The kernel waits
 * on memory more than it computes (Nsight Compute at N 16: 54 % of its stalls on global loads, issue slots 39 % busy
 * with 94 registers and 10 warps a scheduler); 64 registers (a few bytes spilled) let twice the warps hide that.
 */
constexpr int scanBwdMinBlocks(int LPC) { return LPC >= 8 ? 4 : 1; }

/**
 * Backward of the selective scan with the states of a channel spread over its lanes: LPC = N / SPT
 * consecutive lanes per channel, lane l owning states l·SPT … l·SPT + SPT − 1 (B / C read as SPT-float runs from
 * the chunk's rows, staged in shared memory by the block once).
 * The launcher's choice when a block can hold whole channels of one B/C group: block = CPB = blockDim.x / LPC
 * consecutive channels of one (row b, chunk k), all in one group, over the backward's chunks of KL steps
 * (its own chunking; hin / adjIn from the same passes as k_selective_scan_bwd's). The chunk is unrolled, so
 * each lane keeps its states after every step in registers (hs), recomputed forward from hin, then walks
 * back. Work per (step, channel) is done once, by the step's owner lane j mod LPC: it loads and computes Δ,
 * x, dr = dy·SiLU(z), dy·SiLU'(z) and softplus' for its steps up front, hands Δ, x and dr to the channel's
 * lanes by shuffles, and keeps that step's dx, dδ, dz after the sums over the LPC lanes, written at the end.
 * dB / dC (sums over the group's channels) go through registers (the warp's channels) and shared memory (the
 * block's warps) to one store per (step, group, state) when the block is the whole group (`whole`), else
 * one atomic. dA, dD, dDb: one atomic per lane / channel per chunk, into zeroed outputs.
 */
template <int N, int SPT, int KL>
__global__ void __launch_bounds__(256, scanBwdMinBlocks(N / SPT)) k_selective_scan_bwd_lanes(float* dx, float* ddelta, float* dA, float* dBm, float* dCm,
    float* dD, float* dz, float* dDb, const float* hin, const float* adjIn, const float* dy, const float* x, const float* delta,
    const float* A, const float* Bm, const float* Cm, const float* D, const float* z, const float* db, const int* segStart, int T,
    int Di, int G, int K, int whole) {
  constexpr int LPC = N / SPT, JP = (KL + LPC - 1) / LPC;  // lanes per channel; steps owned per lane (at most)
  static_assert(LPC >= 1 && LPC <= 32 && N % SPT == 0, "layout");
  constexpr unsigned kAll = 0xffffffffu;
  extern __shared__ float red[];  // [2][KL][warps][N]: a warp's dC, dB terms per step, summed over its channels
  const int CPB = blockDim.x / LPC, warps = blockDim.x / 32, nCB = Di / CPB;
  const int cb = blockIdx.x % nCB;
  const int64_t bk = blockIdx.x / nCB;  // b · K + k
  const int k = (int)(bk % K), b = (int)(bk / K);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, li = threadIdx.x % LPC, n0 = li * SPT, first = lane & ~(LPC - 1);
  const int c = cb * CPB + threadIdx.x / LPC, per = Di / G, g = c / per;
  const int t0 = k * KL, q = min(T, t0 + KL) - t0;  // q: uniform over the block
  const int64_t o = (bk * Di + c) * N + n0, r0 = (int64_t)b * T + t0;  // r0: the chunk's first row
  const int* sp = segStart ? segStart + r0 : nullptr;
  const int64_t i0 = r0 * Di + c;  // (step j, channel c) at i0 + j·Di
  // the chunk's B and C rows of the block's group (every channel of a block is in one group) copied to shared memory
  // once, [2][KL][N] after the dB / dC terms: the loops read them there, not by a global load per step and lane
  float* sBC = red + 2 * KL * (blockDim.x / 32) * N;
  for (int e = threadIdx.x; e < 2 * q * N; e += blockDim.x) {
    const int which = e / (q * N), j = (e % (q * N)) / N, st = e % N;
    sBC[(which * KL + j) * N + st] = (which ? Cm : Bm)[((r0 + j) * G + g) * N + st];
  }
  float a[SPT], adj[SPT], dAacc[SPT], h[SPT], h0[SPT];
  loadRun<SPT>(A + (int64_t)c * N + n0, a);
#pragma unroll
  for (int e = 0; e < SPT; e++) {
    h0[e] = hin ? hin[o + e] : 0.f;
    adj[e] = adjIn ? adjIn[o + e] : 0.f;
    dAacc[e] = 0.f;
    h[e] = h0[e];
  }
  const float bias = db ? db[c] : 0.f, Dc = D ? D[c] : 0.f;
  // the owner's per-(step, channel) values of steps li + m·LPC: Δ, x, dr, dy·SiLU'(z), softplus'(δ + bias)
  float dtv[JP], xv[JP], drv[JP], gzv[JP], sgv[JP];
#pragma unroll
  for (int m = 0; m < JP; m++) {
    const int j = li + m * LPC;
    dtv[m] = xv[m] = drv[m] = gzv[m] = sgv[m] = 0.f;
    if (j < q) {
      const int64_t i = i0 + j * Di;
      const float v = delta[i] + bias, d = dy[i];
      dtv[m] = softplusf(v);
      sgv[m] = v > 20.f ? 1.f : sigmoidf_(v);
      xv[m] = x[i];
      if (z) {
        const float zv = z[i];
        drv[m] = d * siluf(zv);
        gzv[m] = d * siluGradf(zv);
      } else {
        drv[m] = d;
      }
    }
  }
  // a segment starts at step j (the state before it is zero): at t = 0, or where segStart says so
  auto resetAtStep = [&](int j) { return t0 + j == 0 || (sp && sp[j] == t0 + j); };
  auto loadB = [&](int j, float (&v)[SPT]) { loadRun<SPT>(sBC + j * N + n0, v); };
  auto loadC = [&](int j, float (&v)[SPT]) { loadRun<SPT>(sBC + (KL + j) * N + n0, v); };
  __syncthreads();
  float hs[KL][SPT];
#pragma unroll
  for (int j = 0; j < KL; j++) {
    if (j < q) {
      const float dt = __shfl_sync(kAll, dtv[j / LPC], first + j % LPC), dtx = dt * __shfl_sync(kAll, xv[j / LPC], first + j % LPC);
      const bool reset = resetAtStep(j);
      float bn[SPT];
      loadB(j, bn);
#pragma unroll
      for (int e = 0; e < SPT; e++) {
        h[e] = scanExp(dt * a[e]) * (reset ? 0.f : h[e]) + dtx * bn[e];
        hs[j][e] = h[e];
      }
    }
  }
  float* sC = red;
  float* sB = red + KL * warps * N;
  float dxo[JP], ddo[JP], dzo[JP];  // the owner's outputs of steps li + m·LPC
  float dDacc = 0.f, dDbacc = 0.f;
#pragma unroll
  for (int j = KL - 1; j >= 0; j--) {
    if (j < q) {
      const int src = first + j % LPC, m = j / LPC;
      const bool reset = resetAtStep(j), own = li == j % LPC;
      const float dt = __shfl_sync(kAll, dtv[m], src), xs = __shfl_sync(kAll, xv[m], src), dr = __shfl_sync(kAll, drv[m], src);
      float bn[SPT], cn[SPT], tc[SPT], tb[SPT];
      loadB(j, bn);
      loadC(j, cn);
      float pdt = 0.f, pdx = 0.f, prr = 0.f;
#pragma unroll
      for (int e = 0; e < SPT; e++) {
        const float hn = hs[j][e], prev = reset ? 0.f : (j > 0 ? hs[j - 1][e] : h0[e]);
        const float gh = adj[e] + dr * cn[e], decay = scanExp(dt * a[e]);
        pdt += gh * (a[e] * decay * prev + bn[e] * xs);
        pdx += gh * dt * bn[e];
        prr += cn[e] * hn;
        dAacc[e] += gh * dt * decay * prev;
        adj[e] = reset ? 0.f : gh * decay;
        tc[e] = dr * hn;
        tb[e] = gh * dt * xs;
      }
      const float ddt = runSum<LPC>(pdt), dxs = runSum<LPC>(pdx);
      if (z) {
        const float rr = Dc * xs + runSum<LPC>(prr);
        if (own) dzo[m] = gzv[m] * rr;
      }
      if (own) {
        dxo[m] = (D ? dr * Dc : 0.f) + dxs;
        ddo[m] = ddt * sgv[m];
        dDbacc += ddo[m];
        dDacc += dr * xs;
      }
#pragma unroll
      for (int sh = 16; sh >= LPC; sh >>= 1)  // over the warp's channels (same states)
#pragma unroll
        for (int e = 0; e < SPT; e++) {
          tc[e] += __shfl_xor_sync(kAll, tc[e], sh);
          tb[e] += __shfl_xor_sync(kAll, tb[e], sh);
        }
      if (lane < LPC)
#pragma unroll
        for (int e = 0; e < SPT; e++) {
          sC[(j * warps + warp) * N + n0 + e] = tc[e];
          sB[(j * warps + warp) * N + n0 + e] = tb[e];
        }
    }
  }
#pragma unroll
  for (int m = 0; m < JP; m++) {
    const int j = li + m * LPC;
    if (j < q) {
      const int64_t i = i0 + j * Di;
      dx[i] = dxo[m];
      ddelta[i] = ddo[m];
      if (z) dz[i] = dzo[m];
    }
  }
#pragma unroll
  for (int e = 0; e < SPT; e++) atomicAdd(&dA[(int64_t)c * N + n0 + e], dAacc[e]);
  dDacc = runSum<LPC>(dDacc);
  dDbacc = runSum<LPC>(dDbacc);
  if (li == 0) {
    if (dD) atomicAdd(&dD[c], dDacc);
    if (dDb) atomicAdd(&dDb[c], dDbacc);
  }
  __syncthreads();
  const int gb = cb * CPB / per;  // the block's group
  for (int e = threadIdx.x; e < q * N; e += blockDim.x) {
    const int j = e / N, s = e % N;
    float sc = 0.f, sb = 0.f;
    for (int w = 0; w < warps; w++) {
      sc += sC[(j * warps + w) * N + s];
      sb += sB[(j * warps + w) * N + s];
    }
    const int64_t d = ((r0 + j) * G + gb) * N + s;
    if (whole) {
      dCm[d] = sc;
      dBm[d] = sb;
    } else {
      atomicAdd(&dCm[d], sc);
      atomicAdd(&dBm[d], sb);
    }
  }
}

/**
 * Per (b, chunk, c): the adjoint of the state that leaves the chunk to the left, from a zero adjoint
 * at its right end — the chunk's own term of the reverse recurrence adj ← exp(dt·A)·(adj + dr·C), with
 * dr = dy·SiLU(z) (the gate does not depend on the state). Written to adjS [B, K, Di, N].
 */
template <int NMAX>
__global__ void k_selective_scan_bwd_adj(float* adjS, float* chunkDt, const float* dy, const float* delta, const float* A,
                                         const float* Cm, const float* z, const float* db, const int* segStart, int B, int T, int Di,
                                         int N, int G, int K, int L) {
  const ScanLane ln = scanLane(B, T, Di, G, K, L);
  if (!ln.ok) return;
  const int64_t tid = ln.tid;
  const int c = ln.c, b = ln.b, g = ln.g, t0 = ln.t0, t1 = ln.t1;
  float a[NMAX], adj[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; n++) {
    a[n] = n < N ? A[(int64_t)c * N + n] : 0.f;
    adj[n] = 0.f;
  }
  float bias = db ? db[c] : 0.f, dtSum = 0.f;
  bool cut = false;
  // as k_selective_scan: the next step's inputs loaded one step ahead, C rows as float4 where every row is aligned
  const bool vec = scanRowsVec<NMAX>(N, Cm);
  auto in = [&](int t) { const int64_t r = (int64_t)b * T + t; return scanStepIn(delta, dy, z, segStart, r, t, r * Di + c); };
  ScanStepIn next = t1 > t0 ? in(t1 - 1) : ScanStepIn{};
  for (int t = t1 - 1; t >= t0; t--) {
    const ScanStepIn cur = next;
    if (t > t0) next = in(t - 1);
    const float dv = cur.delta, dyv = cur.u, zv = cur.z;
    const bool reset = cur.reset;
    int64_t r = (int64_t)b * T + t;
    cut |= reset;
    float dt = softplusf(dv + bias), dr = z ? dyv * siluf(zv) : dyv;
    dtSum += dt;
    float cv[NMAX];
    loadStateRow<NMAX>(Cm + (r * G + g) * N, N, vec, cv);
#pragma unroll
    for (int n = 0; n < NMAX; n++)
      if (n < N) adj[n] = reset ? 0.f : (adj[n] + dr * cv[n]) * scanExp(dt * a[n]);
  }
#pragma unroll
  for (int n = 0; n < NMAX; n++)
    if (n < N) adjS[tid * N + n] = adj[n];
  // with forward checkpoints the chunk pass does not run: its chunk sums (−1: a segment starts inside) come from here
  if (chunkDt) chunkDt[tid] = cut ? -1.f : dtSum;
}

// ------------------------------------------------------------------------------------------------
// Mamba-2 SSD scan: one thread per (b, head, p), the state row H[p, :N] in registers. The forward is
// the sequential recurrence (the same function as the CPU's chunked form, to f32 rounding).

template <int NMAX>
__global__ void k_ssd_scan(float* y, const float* x, const float* dt, const float* A, const float* Bm, const float* Cm,
                           const float* D, const float* dtBias, const int* segStart, float* st, const int* slots, int B, int T,
                           int H, int P, int G, int N) {
  int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (tid >= (int64_t)B * H * P) return;
  int p = tid % P, h = (tid / P) % H, b = tid / ((int64_t)P * H);
  int g = h / (H / G);
  float Ah = A[h], Dh = D ? D[h] : 0.f, bias = dtBias ? dtBias[h] : 0.f;
  float s[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; n++) s[n] = 0.f;
  for (int t = 0; t < T; t++) {
    int64_t r = (int64_t)b * T + t;
    float d = softplusf(dt[r * H + h] + bias);
    float alpha = resetAt(segStart, r, t) ? 0.f : expf(d * Ah);
    int64_t xi = (r * H + h) * P + p;
    float xv = x[xi], dx = d * xv;
    const float* bp = Bm + (r * G + g) * N;
    const float* cp = Cm + (r * G + g) * N;
    float acc = 0.f;
#pragma unroll
    for (int n = 0; n < NMAX; n++)
      if (n < N) {
        s[n] = alpha * s[n] + dx * bp[n];
        acc += s[n] * cp[n];
      }
    y[xi] = acc + Dh * xv;
  }
  if (st) {
    float* so = st + (((int64_t)slots[b] * H + h) * P + p) * N;
#pragma unroll
    for (int n = 0; n < NMAX; n++)
      if (n < N) so[n] = s[n];
  }
}

template <int NMAX>
__global__ void k_ssd_scan_step(float* y, const float* x, const float* dt, const float* A, const float* Bm, const float* Cm,
                                const float* D, const float* dtBias, float* st, const int* slots, int nTok, int H, int P, int G,
                                int N) {
  int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (tid >= (int64_t)nTok * H * P) return;
  int p = tid % P, h = (tid / P) % H, i = tid / ((int64_t)P * H);
  int g = h / (H / G);
  float d = softplusf(dt[(int64_t)i * H + h] + (dtBias ? dtBias[h] : 0.f));
  float alpha = expf(d * A[h]);
  float xv = x[tid], dx = d * xv;
  const float* bp = Bm + ((int64_t)i * G + g) * N;
  const float* cp = Cm + ((int64_t)i * G + g) * N;
  float* so = st + (((int64_t)slots[i] * H + h) * P + p) * N;
  float acc = 0.f;
#pragma unroll
  for (int n = 0; n < NMAX; n++)
    if (n < N) {
      float v = alpha * so[n] + dx * bp[n];
      so[n] = v;
      acc += v * cp[n];
    }
  y[tid] = acc + (D ? D[h] : 0.f) * xv;
}

/**
 * SSD backward per (b, h, p), same checkpoint scheme as the selective scan; the adjoint row
 * G[p, :N] lives in registers. dBm/dCm/ddt sum over p (and heads of a group): warp sums + atomics.
 */
template <int NMAX>
__global__ void k_ssd_scan_bwd(float* dx, float* ddt, float* dA, float* dBm, float* dCm, float* dD, float* dBias, float* scratch,
                               const float* dy, const float* x, const float* dt, const float* A, const float* Bm, const float* Cm,
                               const float* D, const float* dtBias, const int* segStart, int B, int T, int H, int P, int G, int N,
                               int width) {
  int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  int64_t nth = (int64_t)B * H * P;
  if (tid >= nth) return;
  int p = tid % P, h = (tid / P) % H, b = tid / ((int64_t)P * H);
  int g = h / (H / G);
  int nChunks = (T + kScanChunk - 1) / kScanChunk;
  float* ckpt = scratch;
  float* hs = scratch + (int64_t)nChunks * N * nth;
  float Ah = A[h], Dh = D ? D[h] : 0.f, bias = dtBias ? dtBias[h] : 0.f;
  float s[NMAX], Gn[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; n++) {
    s[n] = 0.f;
    Gn[n] = 0.f;
  }
  for (int t = 0; t < T; t++) {
    int64_t r = (int64_t)b * T + t;
    if (t % kScanChunk == 0) {
#pragma unroll
      for (int n = 0; n < NMAX; n++)
        if (n < N) ckpt[((int64_t)(t / kScanChunk) * N + n) * nth + tid] = s[n];
    }
    float d = softplusf(dt[r * H + h] + bias);
    float alpha = resetAt(segStart, r, t) ? 0.f : expf(d * Ah);
    float dxv = d * x[(r * H + h) * P + p];
    const float* bp = Bm + (r * G + g) * N;
#pragma unroll
    for (int n = 0; n < NMAX; n++)
      if (n < N) s[n] = alpha * s[n] + dxv * bp[n];
  }
  float dAacc = 0.f, dDacc = 0.f, dBiasAcc = 0.f;
  for (int k = nChunks - 1; k >= 0; k--) {
    int c0 = k * kScanChunk, q = min(kScanChunk, T - c0);
#pragma unroll
    for (int n = 0; n < NMAX; n++)
      if (n < N) s[n] = ckpt[((int64_t)k * N + n) * nth + tid];
    for (int j = 0; j < q; j++) {
      int64_t r = (int64_t)b * T + c0 + j;
      float d = softplusf(dt[r * H + h] + bias);
      float alpha = resetAt(segStart, r, c0 + j) ? 0.f : expf(d * Ah);
      float dxv = d * x[(r * H + h) * P + p];
      const float* bp = Bm + (r * G + g) * N;
#pragma unroll
      for (int n = 0; n < NMAX; n++)
        if (n < N) {
          s[n] = alpha * s[n] + dxv * bp[n];
          hs[((int64_t)j * N + n) * nth + tid] = s[n];
        }
    }
    for (int j = q - 1; j >= 0; j--) {
      int t = c0 + j;
      int64_t r = (int64_t)b * T + t;
      bool reset = resetAt(segStart, r, t);
      float v = dt[r * H + h] + bias, d = softplusf(v);
      int64_t xi = (r * H + h) * P + p;
      float xv = x[xi], dyp = dy[xi];
      const float* bp = Bm + (r * G + g) * N;
      const float* cp = Cm + (r * G + g) * N;
      dDacc += dyp * xv;
      float gb = 0.f, dAlpha = 0.f;
      float alpha = expf(d * Ah);
#pragma unroll
      for (int n = 0; n < NMAX; n++)
        if (n < N) {
          float gv = Gn[n] + dyp * cp[n];
          gb += gv * bp[n];
          groupAtomicAdd(&dCm[(r * G + g) * N + n], dyp * hs[((int64_t)j * N + n) * nth + tid], width);
          groupAtomicAdd(&dBm[(r * G + g) * N + n], d * gv * xv, width);
          float prev = j > 0 ? hs[((int64_t)(j - 1) * N + n) * nth + tid] : ckpt[((int64_t)k * N + n) * nth + tid];
          dAlpha += gv * prev;
          Gn[n] = reset ? 0.f : alpha * gv;
        }
      float dDelta = xv * gb;
      dx[xi] = Dh * dyp + d * gb;
      if (!reset) {
        dDelta += dAlpha * alpha * Ah;
        dAacc += dAlpha * alpha * d;
      }
      float g2 = dDelta * (v > 20.f ? 1.f : sigmoidf_(v));
      groupAtomicAdd(&ddt[r * H + h], g2, width);
      dBiasAcc += g2;
    }
  }
  groupAtomicAdd(&dA[h], dAacc, width);
  if (dD) groupAtomicAdd(&dD[h], dDacc, width);
  if (dBias) groupAtomicAdd(&dBias[h], dBiasAcc, width);
}

// ------------------------------------------------------------------------------------------------
// gated RMSNorm: one block per group of `group` elements

__global__ void k_gated_rmsnorm(float* out, float* rstdOut, const float* y, const float* z, const float* w, int64_t D, int64_t group,
                                float eps) {
  __shared__ float sh[32];
  int64_t o = blockIdx.x * group, wo = o % D;
  float ss = 0.f;
  for (int64_t j = threadIdx.x; j < group; j += blockDim.x) {
    float gv = y[o + j] * siluf(z[o + j]);
    ss += gv * gv;
  }
  ss = blockSum(ss, sh);
  float rs = 1.f / sqrtf(ss / (float)group + eps);
  if (rstdOut && threadIdx.x == 0) rstdOut[blockIdx.x] = rs;
  if (out)
    for (int64_t j = threadIdx.x; j < group; j += blockDim.x) out[o + j] = y[o + j] * siluf(z[o + j]) * rs * w[wo + j];
}
__global__ void k_gated_rmsnorm_bwd(float* dy, float* dz, const float* rstd, const float* dout, const float* y, const float* z,
                                    const float* w, int64_t D, int64_t group) {
  __shared__ float sh[32];
  int64_t o = blockIdx.x * group, wo = o % D;
  float rs = rstd[blockIdx.x];
  float dot = 0.f;
  for (int64_t j = threadIdx.x; j < group; j += blockDim.x) dot += dout[o + j] * w[wo + j] * y[o + j] * siluf(z[o + j]);
  dot = blockSum(dot, sh);
  float k = dot * rs * rs * rs / (float)group;
  for (int64_t j = threadIdx.x; j < group; j += blockDim.x) {
    float zj = z[o + j], gv = y[o + j] * siluf(zj);
    float dg = dout[o + j] * w[wo + j] * rs - gv * k;
    dy[o + j] = dg * siluf(zj);
    dz[o + j] = dg * y[o + j] * siluGradf(zj);
  }
}
/** gatedRmsNorm's dw[j] = Σ_r dout·y·SiLU(z)·rstd over the rows of [rows, D], rstd per `group` elements */
struct GatedRmsNormDwTerm {
  float* dw;
  const float *rstd, *dout, *y, *z;
  int64_t D, group;
  __device__ double operator()(int64_t r, int64_t j) const {
    const int64_t e = r * D + j;
    return (double)dout[e] * y[e] * siluf(z[e]) * rstd[e / group];
  }
  __device__ void store(int64_t j, double v) const { dw[j] = (float)v; }
};

// ------------------------------------------------------------------------------------------------
// logits: one block per row

__device__ float rowLse(const float* xr, int64_t V, float* sh) {
  float mx = -CUDART_INF_F;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, xr[j]);
  mx = blockMax(mx, sh);
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) s += expf(xr[j] - mx);
  s = blockSum(s, sh);
  return mx + logf(s);
}
__global__ void k_log_softmax(float* out, const float* x, int64_t V) {
  __shared__ float sh[32];
  const float* xr = x + blockIdx.x * V;
  float l = rowLse(xr, V, sh);
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) out[blockIdx.x * V + j] = xr[j] - l;
}
__global__ void k_gather_logprobs(float* out, const float* x, const int* targets, int64_t V) {
  __shared__ float sh[32];
  const float* xr = x + blockIdx.x * V;
  float l = rowLse(xr, V, sh);
  if (threadIdx.x == 0) out[blockIdx.x] = xr[targets[blockIdx.x]] - l;
}
// greedy decoding on the device: the first maximum of each row and its log-probability under the
// unmodified distribution; only 2 numbers per row go back to the host instead of the whole row.
// One pass over the logits: each row is split over `parts` blocks (enough blocks to fill the GPU at small
// batch), each thread keeps an online (max, first index, Σ exp(x − max)), the block reduces them, and a
// second kernel combines a row's parts. Ties go to the lower index at every level.
struct ArgmaxPart { float mx; int idx; float sum; };
__device__ __forceinline__ void argmaxMerge(float& mx, int& idx, float& sum, float omx, int oidx, float osum) {
  if (omx > mx || (omx == mx && oidx < idx)) {
    const float scale = mx == -CUDART_INF_F ? 0.f : expf(mx - omx);  // omx ≥ mx here
    sum = osum + sum * scale;
    mx = omx;
    idx = oidx;
  } else if (omx != -CUDART_INF_F) {
    sum += osum * expf(omx - mx);
  }
}
__global__ void k_argmax_part(ArgmaxPart* parts, const float* x, int64_t V, int64_t span) {
  __shared__ ArgmaxPart sh[32];
  const int64_t lo = blockIdx.y * span, hi = min(V, lo + span);
  const float* xr = x + blockIdx.x * V;
  float mx = -CUDART_INF_F, sum = 0.f;
  int idx = 0x7fffffff;
  for (int64_t j = lo + threadIdx.x; j < hi; j += blockDim.x) {
    const float v = xr[j];
    if (v > mx) {  // j grows per thread, so the first maximum of this thread is kept
      sum = (mx == -CUDART_INF_F ? 0.f : sum * expf(mx - v)) + 1.f;
      mx = v;
      idx = (int)j;
    } else if (mx != -CUDART_INF_F) {
      sum += expf(v - mx);
    }
  }
  for (int o = 16; o > 0; o >>= 1)
    argmaxMerge(mx, idx, sum, __shfl_xor_sync(0xffffffffu, mx, o), __shfl_xor_sync(0xffffffffu, idx, o), __shfl_xor_sync(0xffffffffu, sum, o));
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  if (lane == 0) sh[wid] = ArgmaxPart{mx, idx, sum};
  __syncthreads();
  if (wid == 0) {
    ArgmaxPart p = lane < nw ? sh[lane] : ArgmaxPart{-CUDART_INF_F, 0x7fffffff, 0.f};
    for (int o = 16; o > 0; o >>= 1)
      argmaxMerge(p.mx, p.idx, p.sum, __shfl_xor_sync(0xffffffffu, p.mx, o), __shfl_xor_sync(0xffffffffu, p.idx, o),
                  __shfl_xor_sync(0xffffffffu, p.sum, o));
    if (lane == 0) parts[blockIdx.x * gridDim.y + blockIdx.y] = p;
  }
}
/** one warp per row: the row's parts merged */
__global__ void k_argmax_combine(int* ids, float* logprobs, const ArgmaxPart* parts, int64_t rows, int nParts) {
  const int64_t r = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  float mx = -CUDART_INF_F, sum = 0.f;
  int idx = 0x7fffffff;
  for (int k = lane; k < nParts; k += 32) {
    const ArgmaxPart p = parts[r * nParts + k];
    argmaxMerge(mx, idx, sum, p.mx, p.idx, p.sum);
  }
  for (int o = 16; o > 0; o >>= 1)
    argmaxMerge(mx, idx, sum, __shfl_xor_sync(0xffffffffu, mx, o), __shfl_xor_sync(0xffffffffu, idx, o), __shfl_xor_sync(0xffffffffu, sum, o));
  if (lane == 0) {
    ids[r] = idx == 0x7fffffff ? 0 : idx;
    logprobs[r] = -logf(sum);  // x[arg] − (mx + log Σ) with x[arg] = mx
  }
}
__global__ void k_cross_entropy(float* rowLoss, float* dl, const float* x, const int* targets, const int* mask, int64_t V, float inv) {
  __shared__ float sh[32];
  int64_t o = blockIdx.x * V;
  if (mask && !mask[blockIdx.x]) {
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) dl[o + j] = 0.f;
    if (threadIdx.x == 0) rowLoss[blockIdx.x] = 0.f;
    return;
  }
  const float* xr = x + o;
  float l = rowLse(xr, V, sh);
  int t = targets[blockIdx.x];
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) dl[o + j] = expf(xr[j] - l) * inv - (j == t ? inv : 0.f);
  if (threadIdx.x == 0) rowLoss[blockIdx.x] = l - xr[t];
}

// fused LM-head losses, one block per row of a vocabulary chunk (Backend.softmaxChunkStats/Grad).
// The CPU works in f64 throughout; here each element is f32 (z = scale·x, exp) and the row sums and
// the merge with the running stats are f64, so the two agree to a few f32 ulps of the inputs.
__device__ double blockSumD(double v, double* sh) {
  int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warpSum(v);
  __syncthreads();
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  double r = lane < nw ? sh[lane] : 0.0;
  return warpSum(r);
}
/**
 * The end of a chunk's statistics pass (thread 0, after the block sums s and w): rescale what earlier chunks
 * accumulated in st to the new max m (nothing on the first chunk: m0 = −inf), add this chunk's, and note the target's
 * scaled logit when it falls in the chunk.
 */
__device__ __forceinline__ void chunkStatsFinish(float* st, float m0, float m, double s, double w, const int* targets, int64_t r,
                                                 int64_t vocabOffset, int64_t Vc, const float* xr, float scale) {
  if (threadIdx.x != 0) return;
  const double rescale = m0 == -CUDART_INF_F ? 0.0 : exp((double)m0 - (double)m);
  st[0] = m;
  st[1] = (float)((double)st[1] * rescale + s);
  st[2] = (float)((double)st[2] * rescale + w);
  if (targets) {
    const int64_t c = (int64_t)targets[r] - vocabOffset;
    if (c >= 0 && c < Vc) st[3] = scale * xr[c];
  }
}
/** stats [R, 4] = (m, s, w, zt) merged with this chunk; other: [R, Vc] or null; targets: [R] or null */
__global__ void k_softmax_chunk_stats(float* stats, const float* x, const float* other, const int* targets, int64_t Vc, float scale,
                                      int64_t vocabOffset) {
  __shared__ float shm[32];
  __shared__ double shd[32];
  const int64_t r = blockIdx.x;
  const float* xr = x + r * Vc;
  const float* orow = other ? other + r * Vc : nullptr;
  float cmax = -CUDART_INF_F;
  for (int64_t j = threadIdx.x; j < Vc; j += blockDim.x) cmax = fmaxf(cmax, scale * xr[j]);
  cmax = blockMax(cmax, shm);
  float* st = stats + 4 * r;
  const float m0 = st[0];
  const float m = fmaxf(m0, cmax);
  double s = 0.0, w = 0.0;
  for (int64_t j = threadIdx.x; j < Vc; j += blockDim.x) {
    float z = scale * xr[j];
    double e = (double)expf(z - m);
    s += e;
    w += e * (double)(orow ? z - orow[j] : z);
  }
  s = blockSumD(s, shd);
  w = blockSumD(w, shd);
  chunkStatsFinish(st, m0, m, s, w, targets, r, vocabOffset, Vc, xr, scale);
}
/**
 * k_softmax_chunk_stats with the row in registers: a block of kChunkThreads threads per row, the row's Vc / 4
 * float4s (and other's) over the threads, NV each (Vc ≤ 4·NV·kChunkThreads), all loaded before the block's max, so
 * the row is read from memory once, in 16-byte loads, and the second loop runs on registers. Every element's
 * z, exp and term are k_softmax_chunk_stats's expressions (only the order of the f64 sums differs). The
 * launcher checks that Vc is a multiple of 4 and x, other 16-byte aligned.
 */
constexpr int kChunkThreads = 512;
template <int NV>
__global__ void __launch_bounds__(kChunkThreads) k_softmax_chunk_stats4(float* stats, const float4* __restrict__ x, const float4* __restrict__ other,
                                                                        const int* targets, int64_t Vc, float scale, int64_t vocabOffset) {
  __shared__ float shm[32];
  __shared__ double shd[32];
  const int64_t r = blockIdx.x;
  const int V4 = (int)(Vc >> 2);
  const float4* xr = x + r * V4;
  const float4* orow = other ? other + r * V4 : nullptr;
  float4 z[NV], o[NV];
#pragma unroll
  for (int k = 0; k < NV; k++) {
    const int q = threadIdx.x + k * kChunkThreads;
    if (q < V4) {
      z[k] = xr[q];
      if (orow) o[k] = orow[q];
    }
  }
  float cmax = -CUDART_INF_F;
#pragma unroll
  for (int k = 0; k < NV; k++) {
    if (threadIdx.x + k * kChunkThreads < V4) {
      z[k] = make_float4(scale * z[k].x, scale * z[k].y, scale * z[k].z, scale * z[k].w);
      cmax = fmaxf(fmaxf(fmaxf(cmax, z[k].x), fmaxf(z[k].y, z[k].z)), z[k].w);
    }
  }
  cmax = blockMax(cmax, shm);
  float* st = stats + 4 * r;
  const float m0 = st[0];
  const float m = fmaxf(m0, cmax);
  double s = 0.0, w = 0.0;
  auto term = [&](float zz, float oo) {
    double e = (double)expf(zz - m);
    s += e;
    w += e * (double)(orow ? zz - oo : zz);
  };
#pragma unroll
  for (int k = 0; k < NV; k++) {
    if (threadIdx.x + k * kChunkThreads < V4) {
      const float4 ov = orow ? o[k] : make_float4(0.f, 0.f, 0.f, 0.f);
      term(z[k].x, ov.x);
      term(z[k].y, ov.y);
      term(z[k].z, ov.z);
      term(z[k].w, ov.w);
    }
  }
  s = blockSumD(s, shd);
  w = blockSumD(w, shd);
  chunkStatsFinish(st, m0, m, s, w, targets, r, vocabOffset, Vc, reinterpret_cast<const float*>(xr), scale);
}
/** dl [R, Vc] = scale·(p·(c0 + c2·(z − other)) + ct·onehot(target)) with coefs [R, 4] = (lse, c0, c2, ct): one element */
__device__ __forceinline__ float chunkGradElem(float xv, float ov, bool hasOther, float scale, float lse, float c0, float c2, float ct,
                                               int64_t j, int64_t c) {
  float z = scale * xv;
  float p = expf(z - lse);
  float d = hasOther ? z - ov : z;
  float g = scale * p * (c0 + c2 * d);
  if (j == c) g += scale * ct;
  return g;
}
/**
 * softmaxChunkGrad, a row-tiled elementwise kernel (rowTiles(rows, Vc / 4) or (rows, Vc)): each thread takes one
 * float4 (V4: Vc a multiple of 4, dl, x, other 16-byte aligned) or one float of every row it visits — not a block
 * per row looping over the row a float at a time, one load after the other.
 */
template <bool V4>
__global__ void k_softmax_chunk_grad_tiles(float* __restrict__ dl, const float* __restrict__ x, const float* __restrict__ coefs,
                                           const float* __restrict__ other, const int* __restrict__ targets, int64_t rows, int64_t Vc,
                                           float scale, int64_t vocabOffset) {
  const int64_t q = tileCol(), nq = V4 ? Vc / 4 : Vc;
  if (q >= nq) return;
  const int64_t step = tileRowStep();
  for (int64_t r = tileRow0(); r < rows; r += step) {
    const float4 cf = make_float4(coefs[4 * r], coefs[4 * r + 1], coefs[4 * r + 2], coefs[4 * r + 3]);  // (lse, c0, c2, ct)
    const int64_t c = targets && cf.w != 0.f ? (int64_t)targets[r] - vocabOffset : -1;
    if constexpr (V4) {
      const float4 v = reinterpret_cast<const float4*>(x)[r * nq + q];
      const float4 ov = other ? reinterpret_cast<const float4*>(other)[r * nq + q] : make_float4(0.f, 0.f, 0.f, 0.f);
      const int64_t j = 4 * q;
      auto elem = [&](float xv, float oo, int64_t jj) { return chunkGradElem(xv, oo, other, scale, cf.x, cf.y, cf.z, cf.w, jj, c); };
      reinterpret_cast<float4*>(dl)[r * nq + q] = make_float4(elem(v.x, ov.x, j), elem(v.y, ov.y, j + 1), elem(v.z, ov.z, j + 2), elem(v.w, ov.w, j + 3));
    } else {
      dl[r * Vc + q] = chunkGradElem(x[r * Vc + q], other ? other[r * Vc + q] : 0.f, other, scale, cf.x, cf.y, cf.z, cf.w, q, c);
    }
  }
}

/** one AdamW element (the CPU's expression order): updates m and v in place, returns the new weight */
__device__ __forceinline__ float adamwElem(float w, float g, float& m, float& v, float b1, float b2, float eps, float decay,
                                           float stepSize, float sqrtBc2) {
  float mi = b1 * m + (1.f - b1) * g;
  float vi = b2 * v + (1.f - b2) * g * g;
  m = mi;
  v = vi;
  return w * decay - stepSize * mi / (sqrtf(vi) / sqrtBc2 + eps);
}
/**
 * Whether w's bf16 rounding (to nearest, ties to even) is finite: |w| below the midpoint between the largest bf16,
 * 0x7F7F (3.3895e38), and infinity — 0x7F7F8000 as an f32, which itself rounds up to infinity (0x7F7F is odd). NaN: false.
 */
__device__ __forceinline__ bool bf16RoundsFinite(float w) { return fabsf(w) < __int_as_float(0x7f7f8000); }
/**
 * The AdamW element i; returns whether the stored weight is finite (the bf16 value where paramOut is bf16: rounding can
 * overflow an f32 near its maximum to infinity).
 */
__device__ __forceinline__ bool adamwScalar(int64_t i, float* w, void* paramOut, int paramBf16, const float* grad, float* m, float* v,
                                            float b1, float b2, float eps, float decay, float stepSize, float sqrtBc2) {
  float mi = m[i], vi = v[i];
  float wi = adamwElem(w[i], grad[i], mi, vi, b1, b2, eps, decay, stepSize, sqrtBc2);
  m[i] = mi;
  v[i] = vi;
  w[i] = wi;
  if (paramOut && paramBf16) {
    ((__nv_bfloat16*)paramOut)[i] = __float2bfloat16_rn(wi);
    return bf16RoundsFinite(wi);
  }
  if (paramOut) ((float*)paramOut)[i] = wi;
  return isfinite(wi);
}
/** the non-finite count (`bad`, may be null): 1 added per thread that stored a non-finite weight — the rare path only */
__device__ __forceinline__ void countNonFinite(float* bad, bool finite) {
  if (bad && !finite) atomicAdd(bad, 1.f);
}
__global__ void k_adamw(float* w, void* paramOut, int paramBf16, const float* grad, float* m, float* v, int64_t n, float b1, float b2,
                        float eps, float decay, float stepSize, float sqrtBc2, float* bad) {
  bool finite = true;
  GRID_STRIDE(i, n) finite &= adamwScalar(i, w, paramOut, paramBf16, grad, m, v, b1, b2, eps, decay, stepSize, sqrtBc2);
  countNonFinite(bad, finite);
}
/**
 * k_adamw with 4 elements per thread: 16-byte loads/stores of w, grad, m, v (and an f32 paramOut), one
 * 8-byte store of 4 bf16 for a bf16 paramOut. Needs those alignments (m1_adamw checks); the n % 4 tail
 * goes to the first threads, one element each.
 */
__global__ void k_adamw_vec4(float* w, void* paramOut, int paramBf16, const float* grad, float* m, float* v, int64_t n, float b1,
                             float b2, float eps, float decay, float stepSize, float sqrtBc2, float* bad) {
  const int64_t n4 = n >> 2;
  bool finite = true;
  GRID_STRIDE(i, n4) {
    const float4 g4 = reinterpret_cast<const float4*>(grad)[i];
    float4 w4 = reinterpret_cast<const float4*>(w)[i];
    float4 m4 = reinterpret_cast<const float4*>(m)[i];
    float4 v4 = reinterpret_cast<const float4*>(v)[i];
    w4.x = adamwElem(w4.x, g4.x, m4.x, v4.x, b1, b2, eps, decay, stepSize, sqrtBc2);
    w4.y = adamwElem(w4.y, g4.y, m4.y, v4.y, b1, b2, eps, decay, stepSize, sqrtBc2);
    w4.z = adamwElem(w4.z, g4.z, m4.z, v4.z, b1, b2, eps, decay, stepSize, sqrtBc2);
    w4.w = adamwElem(w4.w, g4.w, m4.w, v4.w, b1, b2, eps, decay, stepSize, sqrtBc2);
    reinterpret_cast<float4*>(m)[i] = m4;
    reinterpret_cast<float4*>(v)[i] = v4;
    reinterpret_cast<float4*>(w)[i] = w4;
    if (paramOut && paramBf16) {
      storeOut4(static_cast<__nv_bfloat16*>(paramOut), i, w4);
      finite &= bf16RoundsFinite(w4.x) && bf16RoundsFinite(w4.y) && bf16RoundsFinite(w4.z) && bf16RoundsFinite(w4.w);  // as stored
    } else {
      if (paramOut) storeOut4(static_cast<float*>(paramOut), i, w4);
      finite &= isfinite(w4.x) && isfinite(w4.y) && isfinite(w4.z) && isfinite(w4.w);
    }
  }
  const int64_t t = (n4 << 2) + blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (t < n) finite &= adamwScalar(t, w, paramOut, paramBf16, grad, m, v, b1, b2, eps, decay, stepSize, sqrtBc2);
  countNonFinite(bad, finite);
}

template <int DPL>
cudaError_t launchAttention(float* out, float* lse, const float* q, const float* k, const float* v, const int* seg, int B, int T,
                            int Hq, int Hkv, int Dh, float scale, cudaStream_t s) {
  int64_t threads = (int64_t)B * T * Hq * 32;
  k_attention<DPL><<<gridFor(threads, 128), 128, 0, s>>>(out, lse, q, k, v, seg, B, T, Hq, Hkv, Dh, scale);
  return lastError();
}
template <int DPL>
cudaError_t launchAttentionBwd(float* dq, float* dk, float* dv, float* Dbuf, const float* dout, const float* q, const float* k,
                               const float* v, const float* out, const float* lse, const int* seg, int B, int T, int Hq, int Hkv,
                               int Dh, float scale, cudaStream_t s) {
  int64_t t1 = (int64_t)B * T * Hq * 32, t2 = (int64_t)B * T * Hkv * 32;
  k_attention_bwd_dq<DPL><<<gridFor(t1, 128), 128, 0, s>>>(dq, Dbuf, dout, q, k, v, out, lse, seg, B, T, Hq, Hkv, Dh, scale);
  k_attention_bwd_dkdv<DPL><<<gridFor(t2, 128), 128, 0, s>>>(dk, dv, Dbuf, dout, q, k, v, lse, seg, B, T, Hq, Hkv, Dh, scale);
  return lastError();
}
template <int DPL, typename E>
cudaError_t launchPaged(float* out, const float* q, const void* kc, const void* vc, const int* bt, int maxBlocks, const int* seqLens,
                        int n, int Hq, int Hkv, int Dh, int bsz, float scale, cudaStream_t s) {
  int64_t threads = (int64_t)n * Hq * 32;
  k_paged_decode<DPL, E><<<gridFor(threads, 128), 128, 0, s>>>(out, q, (const E*)kc, (const E*)vc, bt, maxBlocks, seqLens, n, Hq,
                                                               Hkv, Dh, bsz, scale);
  return lastError();
}

}  // namespace

#define DISPATCH_DPL(Dh, CALL)                     \
  do {                                             \
    if ((Dh) <= 32) { constexpr int DPL = 1; CALL; } \
    else if ((Dh) <= 64) { constexpr int DPL = 2; CALL; } \
    else if ((Dh) <= 128) { constexpr int DPL = 4; CALL; } \
    else if ((Dh) <= 256) { constexpr int DPL = 8; CALL; } \
    else return cudaErrorInvalidValue;             \
  } while (0)

#define DISPATCH_N(N, CALL)                                   \
  do {                                                        \
    if ((N) <= 16) { constexpr int NM = 16; CALL; }           \
    else if ((N) <= 32) { constexpr int NM = 32; CALL; }      \
    else if ((N) <= 64) { constexpr int NM = 64; CALL; }      \
    else if ((N) <= 128) { constexpr int NM = 128; CALL; }    \
    else return cudaErrorInvalidValue;                        \
  } while (0)

extern "C" {

cudaError_t m1_cast_f32_bf16(void* d, const float* s_, int64_t n, cudaStream_t s) {
  const cudaError_t e = pdlLaunch(k_cast_f32_bf16, gridFor(n), kThreads, 0, s, (__nv_bfloat16*)d, s_, n);
  return e != cudaSuccess ? e : lastError();
}
cudaError_t m1_cast_bf16_f32(float* d, const void* s_, int64_t n, cudaStream_t s) {
  k_cast_bf16_f32<<<gridFor(n), kThreads, 0, s>>>(d, (const __nv_bfloat16*)s_, n);
  return lastError();
}
// +0 (all bits zero; -0 keeps the kernel) is a memset: the trainer zeroes every f32 gradient each step
cudaError_t m1_fill_f32(float* d, float v, int64_t n, cudaStream_t s) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  if (bits == 0) return n > 0 ? cudaMemsetAsync(d, 0, (size_t)n * sizeof(float), s) : cudaSuccess;
  k_fill_f32<<<gridFor(n), kThreads, 0, s>>>(d, v, n);
  return lastError();
}
cudaError_t m1_fill_bf16(void* d, float v, int64_t n, cudaStream_t s) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  if (bits == 0) return n > 0 ? cudaMemsetAsync(d, 0, (size_t)n * sizeof(__nv_bfloat16), s) : cudaSuccess;
  k_fill_bf16<<<gridFor(n), kThreads, 0, s>>>((__nv_bfloat16*)d, __float2bfloat16_rn(v), n);
  return lastError();
}
cudaError_t m1_add(float* o, const float* a, const float* b, int64_t n, cudaStream_t s) {
  if (n > 0 && fourWide(n, {o, a, b})) {
    k_add4<<<gridFor(n / 4), kThreads, 0, s>>>(reinterpret_cast<float4*>(o), reinterpret_cast<const float4*>(a),
                                               reinterpret_cast<const float4*>(b), n / 4);
    return lastError();
  }
  k_add<<<gridFor(n), kThreads, 0, s>>>(o, a, b, n);
  return lastError();
}
cudaError_t m1_axpy(float* d, const float* src, float alpha, int64_t n, cudaStream_t s) {
  if (n > 0 && fourWide(n, {d, src})) {
    k_axpy4<<<gridFor(n / 4), kThreads, 0, s>>>(reinterpret_cast<float4*>(d), reinterpret_cast<const float4*>(src), alpha, n / 4);
    return lastError();
  }
  k_axpy<<<gridFor(n), kThreads, 0, s>>>(d, src, alpha, n);
  return lastError();
}
cudaError_t m1_scale(float* x, float a, int64_t n, cudaStream_t s) {
  k_scale<<<gridFor(n), kThreads, 0, s>>>(x, a, n);
  return lastError();
}
cudaError_t m1_mul(float* o, const float* a, const float* b, int64_t n, cudaStream_t s) {
  k_mul<<<gridFor(n), kThreads, 0, s>>>(o, a, b, n);
  return lastError();
}
cudaError_t m1_neg_exp(float* o, const float* a, int64_t n, cudaStream_t s) {
  k_neg_exp<<<gridFor(n), kThreads, 0, s>>>(o, a, n);
  return lastError();
}
cudaError_t m1_add_bias(float* o, const float* x, const float* b, int64_t rows, int64_t C, cudaStream_t s) {
  k_add_bias<<<gridFor(rows * C), kThreads, 0, s>>>(o, x, b, rows, C);
  return lastError();
}
cudaError_t m1_sum_rows(float* o, const float* x, int64_t rows, int64_t C, cudaStream_t s) {
  launchColSum(rows, C, SumRowsTerm{o, x, C}, s);
  return lastError();
}
int m1_sum_squares_each_partials() { return 2048; }
cudaError_t m1_sum_squares_each(double* out, double* partials, const void* const* xs, const int64_t* sizes, const int* bf16, int nT,
                                cudaStream_t s) {
  // each tensor's grid grows with its size (about 8 elements per thread, at most `per` blocks: a 394M-value
  // embedding gets enough blocks in flight to stream at full bandwidth, a bias one block); partials start at
  // zero, so one small kernel sums a fixed `per` of them for every tensor
  const int per = m1_sum_squares_each_partials();
  if (nT > 0) cudaMemsetAsync(partials, 0, sizeof(double) * (size_t)nT * per, s);
  for (int t = 0; t < nT; t++) {
    const int64_t g = std::max<int64_t>(1, std::min<int64_t>(per, (sizes[t] + 8 * kThreads - 1) / (8 * kThreads)));
    if (bf16[t] && reinterpret_cast<uintptr_t>(xs[t]) % 16 == 0)  // bf16 in 16-byte loads
      k_sum_squares_bf16x8<<<(unsigned)g, kThreads, 0, s>>>(partials + (int64_t)t * per, static_cast<const uint4*>(xs[t]), sizes[t] / 8,
                                                            static_cast<const __nv_bfloat16*>(xs[t]) + sizes[t] / 8 * 8, (int)(sizes[t] % 8));
    else
      k_sum_squares<<<(unsigned)g, kThreads, 0, s>>>(partials + (int64_t)t * per, WeightF{xs[t], bf16[t]}, sizes[t]);
  }
  if (nT > 0) k_sum_partials<<<(unsigned)((nT + 7) / 8), kThreads, 0, s>>>(out, partials, nT, per);
  return lastError();
}
cudaError_t m1_copy_cols(void* dst, int64_t ds, int64_t doff, const void* src, int64_t ss, int64_t soff, int64_t rows, int64_t w,
                         int elemBytes, cudaStream_t s) {
  if (rows * w == 0) return cudaSuccess;
  if (elemBytes != 4 && elemBytes != 2) return cudaErrorInvalidValue;
  // copied in the widest unit (16, 8, 4 or 2 bytes) that divides both addresses and every stride, offset and
  // the width in bytes (a value's low bits are zero in all of them iff they are zero in their OR)
  const uint64_t bits = (uint64_t)reinterpret_cast<uintptr_t>(dst) | (uint64_t)reinterpret_cast<uintptr_t>(src) |
                        (uint64_t)((ds | doff | ss | soff | w) * elemBytes);
  int unit = 16;
  while (unit > elemBytes && bits % unit != 0) unit /= 2;
  const int64_t k = unit / elemBytes;  // elements per unit
  const RowTiles t = rowTiles(rows, w / k);
#define M1_COPY_COLS(E) \
  pdlLaunch(k_copy_cols<E>, t.grid, t.block, 0, s, static_cast<E*>(dst), ds / k, doff / k, static_cast<const E*>(src), ss / k, soff / k, rows, w / k)
  const cudaError_t e = unit == 16 ? M1_COPY_COLS(uint4) : unit == 8 ? M1_COPY_COLS(uint2) : unit == 4 ? M1_COPY_COLS(uint32_t) : M1_COPY_COLS(uint16_t);
#undef M1_COPY_COLS
  return e != cudaSuccess ? e : lastError();
}
cudaError_t m1_copy_cols_bf16(void* dst, int64_t ds, int64_t doff, const float* src, int64_t ss, int64_t soff, int64_t rows, int64_t w,
                              cudaStream_t s) {
  if (rows * w == 0) return cudaSuccess;
  __nv_bfloat16* d = static_cast<__nv_bfloat16*>(dst);
  if ((ds | doff | ss | soff | w) % 4 == 0 && reinterpret_cast<uintptr_t>(dst) % 8 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0) {
    const RowTiles t = rowTiles(rows, w / 4);
    const cudaError_t e = pdlLaunch(k_copy_cols_bf16<4>, t.grid, t.block, 0, s, d, ds / 4, doff / 4, src, ss / 4, soff / 4, rows, w / 4);
    if (e != cudaSuccess) return e;
  } else {
    const RowTiles t = rowTiles(rows, w);
    const cudaError_t e = pdlLaunch(k_copy_cols_bf16<1>, t.grid, t.block, 0, s, d, ds, doff, src, ss, soff, rows, w);
    if (e != cudaSuccess) return e;
  }
  return lastError();
}
cudaError_t m1_repeat_groups(float* out, const float* x, int64_t rows, int64_t inW, int64_t w, int64_t rep, cudaStream_t s) {
  if (rows <= 0 || inW <= 0 || rep <= 0 || w <= 0) return cudaSuccess;
  if (w % 4 == 0 && fourWide(inW, {out, x})) {  // in float4s
    const RowTiles t = rowTiles(rows, inW * rep / 4);
    k_repeat_groups<float4><<<t.grid, t.block, 0, s>>>(reinterpret_cast<float4*>(out), reinterpret_cast<const float4*>(x), rows, inW / 4, w / 4,
                                                       rep);
  } else {
    const RowTiles t = rowTiles(rows, inW * rep);
    k_repeat_groups<float><<<t.grid, t.block, 0, s>>>(out, x, rows, inW, w, rep);
  }
  return lastError();
}
cudaError_t m1_repeat_groups_bwd(float* dx, const float* dy, int64_t rows, int64_t outW, int64_t w, int64_t rep, cudaStream_t s) {
  if (rows <= 0 || outW <= 0 || rep <= 0 || w <= 0) return cudaSuccess;
  const int64_t inW = outW / rep;
  if (w % 4 == 0 && fourWide(inW, {dx, dy})) {  // in float4s
    const RowTiles t = rowTiles(rows, inW / 4);
    k_repeat_groups_bwd<float4><<<t.grid, t.block, 0, s>>>(reinterpret_cast<float4*>(dx), reinterpret_cast<const float4*>(dy), rows, inW / 4,
                                                           w / 4, rep);
  } else {
    const RowTiles t = rowTiles(rows, inW);
    k_repeat_groups_bwd<float><<<t.grid, t.block, 0, s>>>(dx, dy, rows, inW, w, rep);
  }
  return lastError();
}

cudaError_t m1_embedding(float* out, const void* table, int bf16, const int* ids, int64_t n, int64_t D, cudaStream_t s) {
  if (bf16)
    k_embedding<__nv_bfloat16><<<gridFor(n * D), kThreads, 0, s>>>(out, (const __nv_bfloat16*)table, ids, n, D);
  else
    k_embedding<float><<<gridFor(n * D), kThreads, 0, s>>>(out, (const float*)table, ids, n, D);
  return lastError();
}
cudaError_t m1_embedding_bwd(float* dT, const int* ids, const float* dy, int64_t n, int64_t D, cudaStream_t s) {
  k_embedding_bwd<<<gridFor(n * D), kThreads, 0, s>>>(dT, ids, dy, n, D);
  return lastError();
}
cudaError_t m1_rmsnorm_bwd(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd, const float* res,
                           int64_t rows, int64_t D, cudaStream_t s) {
  const int64_t D4 = D / 4, nv = (D4 + kThreads - 1) / kThreads;
  if (rows > 0 && nv >= 1 && nv <= 4 && fourWide(D, {dx, dy, x, w, res ? res : dx})) {  // the row in registers, dx and dw in one pass
    cudaError_t e = cudaSuccess;
    switch (nv) {
      case 1: e = launchRmsNormBwdRows<1>(dx, dw, dy, x, w, rstd, res, rows, D, s); break;
      case 2: e = launchRmsNormBwdRows<2>(dx, dw, dy, x, w, rstd, res, rows, D, s); break;
      case 3: e = launchRmsNormBwdRows<3>(dx, dw, dy, x, w, rstd, res, rows, D, s); break;
      default: e = launchRmsNormBwdRows<4>(dx, dw, dy, x, w, rstd, res, rows, D, s); break;
    }
    return e != cudaSuccess ? e : lastError();
  }
  if (rows > 0) k_rmsnorm_bwd_dx<<<(unsigned)rows, kThreads, 0, s>>>(dx, dy, x, w, rstd, res, D);
  launchColSum(rows, D, RmsNormDwTerm{dw, dy, x, rstd, D}, s);
  return lastError();
}
cudaError_t m1_swiglu(void* h, int outBf16, const void* g, const void* u, int inBf16, int64_t n, cudaStream_t s) {
  if (n > 0 && fourWide(n, {h, g, u})) {
    const auto run = [&](auto* in) {
      using IT = std::remove_const_t<std::remove_pointer_t<decltype(in)>>;
      const IT *g4 = static_cast<const IT*>(g), *u4 = static_cast<const IT*>(u);
      // (a launch error is also the runtime's last error, returned below)
      if (outBf16) (void)pdlLaunch(k_swiglu4<__nv_bfloat16, IT>, gridFor(n / 4), kThreads, 0, s, static_cast<__nv_bfloat16*>(h), g4, u4, n / 4);
      else (void)pdlLaunch(k_swiglu4<float, IT>, gridFor(n / 4), kThreads, 0, s, static_cast<float*>(h), g4, u4, n / 4);
    };
    if (inBf16) run(static_cast<const __nv_bfloat16*>(nullptr));
    else run(static_cast<const float*>(nullptr));
    return lastError();
  }
  const WeightF gf{g, inBf16}, uf{u, inBf16};
  if (outBf16) k_swiglu<<<gridFor(n), kThreads, 0, s>>>(static_cast<__nv_bfloat16*>(h), gf, uf, n);
  else k_swiglu<<<gridFor(n), kThreads, 0, s>>>(static_cast<float*>(h), gf, uf, n);
  return lastError();
}
cudaError_t m1_add_rmsnorm(float* h, void* y, int outBf16, float* rstd, const float* x, const float* r, const void* w, int wBf16, int64_t rows,
                           int64_t D, float eps, cudaStream_t s) {
  if (rows == 0) return cudaSuccess;
  const WeightF wf{w, wBf16};
  const int64_t D4 = D / 4, vpt = (D4 + kAddNormThreads - 1) / kAddNormThreads;
  if (vpt <= 4 && fourWide(D, {h, y, x, r})) {
    float4* h4 = reinterpret_cast<float4*>(h);
    const float4 *x4 = reinterpret_cast<const float4*>(x), *r4 = reinterpret_cast<const float4*>(r);
#define M1_ADD_NORM4(V)                                                                                                           \
  (outBf16 ? pdlLaunch(k_add_rmsnorm4<__nv_bfloat16, V>, (unsigned)rows, kAddNormThreads, 0, s, h4, static_cast<__nv_bfloat16*>(y), rstd, x4, \
                       r4, wf, (int)D4, eps)                                                                                      \
           : pdlLaunch(k_add_rmsnorm4<float, V>, (unsigned)rows, kAddNormThreads, 0, s, h4, static_cast<float*>(y), rstd, x4, r4, wf, (int)D4, eps))
    const cudaError_t e = vpt == 1 ? M1_ADD_NORM4(1) : vpt == 2 ? M1_ADD_NORM4(2) : vpt == 3 ? M1_ADD_NORM4(3) : M1_ADD_NORM4(4);
#undef M1_ADD_NORM4
    return e != cudaSuccess ? e : lastError();
  }
  if (outBf16) k_add_rmsnorm<<<(unsigned)rows, kThreads, 0, s>>>(h, static_cast<__nv_bfloat16*>(y), rstd, x, r, wf, D, eps);
  else k_add_rmsnorm<<<(unsigned)rows, kThreads, 0, s>>>(h, static_cast<float*>(y), rstd, x, r, wf, D, eps);
  return lastError();
}
cudaError_t m1_swiglu_bwd(void* dg, void* du, int outBf16, const float* dh, const float* g, const float* u, int64_t n, cudaStream_t s) {
  if (n > 0 && fourWide(n, {dg, du, dh, g, u})) {
    const float4 *d4 = reinterpret_cast<const float4*>(dh), *g4 = reinterpret_cast<const float4*>(g), *u4 = reinterpret_cast<const float4*>(u);
    if (outBf16)
      k_swiglu_bwd4<<<gridFor(n / 4), kThreads, 0, s>>>(static_cast<__nv_bfloat16*>(dg), static_cast<__nv_bfloat16*>(du), d4, g4, u4, n / 4);
    else k_swiglu_bwd4<<<gridFor(n / 4), kThreads, 0, s>>>(static_cast<float*>(dg), static_cast<float*>(du), d4, g4, u4, n / 4);
    return lastError();
  }
  if (outBf16) k_swiglu_bwd<<<gridFor(n), kThreads, 0, s>>>(static_cast<__nv_bfloat16*>(dg), static_cast<__nv_bfloat16*>(du), dh, g, u, n);
  else k_swiglu_bwd<<<gridFor(n), kThreads, 0, s>>>(static_cast<float*>(dg), static_cast<float*>(du), dh, g, u, n);
  return lastError();
}

cudaError_t m1_rope(float* out, const float* x, const int* pos, const float* invFreq, int64_t n, int64_t H, int64_t Dh, int inverse,
                    cudaStream_t s) {
  if (n <= 0 || H <= 0 || Dh < 2) return cudaSuccess;
  if (H > INT32_MAX || Dh > INT32_MAX) return cudaErrorInvalidValue;
  // threads: x over the Dh / 2 pairs (a power of two from 32 up), y over the heads; blocks over the tokens
  unsigned tx = 32;
  while (tx < (unsigned)kThreads && (int64_t)tx < Dh / 2) tx *= 2;
  const cudaError_t e = pdlLaunch(k_rope, (unsigned)std::min<int64_t>(n, kRopeBlocks), dim3(tx, kThreads / tx), 0, s, out, x, pos, invFreq, n,
                                  (int)H, (int)Dh, inverse);
  return e != cudaSuccess ? e : lastError();
}
cudaError_t m1_attention(float* out, float* lse, const float* q, const float* k, const float* v, const int* seg, int B, int T, int Hq,
                         int Hkv, int Dh, float scale, int bf16, cudaStream_t s) {
  if ((int64_t)B * T * Hq == 0) return cudaSuccess;
  const void* vec4[] = {out, q, k, v};  // tiled kernels (flash_attention*.cu) for Dh 64/128, these for the rest
  if (m1_flash_attention_handles(B, Hq, Dh, vec4, 4)) {
    if (bf16) return m1_flash_attention_bf16(out, lse, q, k, v, seg, B, T, Hq, Hkv, Dh, scale, s);
    return m1_flash_attention(out, lse, q, k, v, seg, B, T, Hq, Hkv, Dh, scale, s);
  }
  DISPATCH_DPL(Dh, return launchAttention<DPL>(out, lse, q, k, v, seg, B, T, Hq, Hkv, Dh, scale, s));
}
cudaError_t m1_attention_bwd(float* dq, float* dk, float* dv, float* Dbuf, const float* dout, const float* q, const float* k,
                             const float* v, const float* out, const float* lse, const int* seg, int B, int T, int Hq, int Hkv,
                             int Dh, float scale, int bf16, cudaStream_t s) {
  if ((int64_t)B * T * Hq == 0) return cudaSuccess;
  const void* vec4[] = {dq, dk, dv, dout, q, k, v};
  if (m1_flash_attention_handles(B, Hq, Dh, vec4, 7)) {
    if (bf16) return m1_flash_attention_bwd_bf16(dq, dk, dv, Dbuf, dout, q, k, v, out, lse, seg, B, T, Hq, Hkv, Dh, scale, s);
    return m1_flash_attention_bwd(dq, dk, dv, Dbuf, dout, q, k, v, out, lse, seg, B, T, Hq, Hkv, Dh, scale, s);
  }
  DISPATCH_DPL(Dh, return launchAttentionBwd<DPL>(dq, dk, dv, Dbuf, dout, q, k, v, out, lse, seg, B, T, Hq, Hkv, Dh, scale, s));
}
cudaError_t m1_kv_cache_write(void* kc, void* vc, int bf16, const float* k, const float* v, const int* slots, int64_t n, int64_t row,
                              cudaStream_t s) {
  if (n * row == 0) return cudaSuccess;
  const cudaError_t e = bf16 ? pdlLaunch(k_kv_cache_write<__nv_bfloat16>, gridFor(n * row), kThreads, 0, s, (__nv_bfloat16*)kc, (__nv_bfloat16*)vc,
                                         k, v, slots, n, row)
                             : pdlLaunch(k_kv_cache_write<float>, gridFor(n * row), kThreads, 0, s, (float*)kc, (float*)vc, k, v, slots, n, row);
  return e != cudaSuccess ? e : lastError();
}
cudaError_t m1_paged_decode(float* out, const float* q, const void* kc, const void* vc, int bf16, const int* bt, int maxBlocks,
                            const int* seqLens, int n, int Hq, int Hkv, int Dh, int bsz, float scale, cudaStream_t s) {
  if ((int64_t)n * Hq == 0) return cudaSuccess;
  if (bf16) {
    DISPATCH_DPL(Dh, return (launchPaged<DPL, __nv_bfloat16>(out, q, kc, vc, bt, maxBlocks, seqLens, n, Hq, Hkv, Dh, bsz, scale, s)));
  }
  DISPATCH_DPL(Dh, return (launchPaged<DPL, float>(out, q, kc, vc, bt, maxBlocks, seqLens, n, Hq, Hkv, Dh, bsz, scale, s)));
}

/** the conv kernels' instantiations: widths 2, 3 and 4 exact (Mamba's d_conv is 4), others up to 16 at run time */
#define M1_CONV_WIDTHS(LAUNCH)      \
  do {                              \
    if (K == 4) LAUNCH(4, true);    \
    else if (K == 3) LAUNCH(3, true); \
    else if (K == 2) LAUNCH(2, true); \
    else if (K <= 8) LAUNCH(8, false); \
    else LAUNCH(16, false);         \
  } while (0)
cudaError_t m1_conv1d(float* y, const float* x, const float* w, const float* bias, const int* segStart, int B, int T, int C, int K,
                      int silu, cudaStream_t s) {
  const int64_t rows = (int64_t)B * T;
  if (rows == 0 || C == 0) return cudaSuccess;
  if (K < 1 || K > 16) return cudaErrorInvalidValue;  // the row walk's register window (Mamba convs: K = 4)
  const int64_t rowsPer = convRowsPer(rows, C);
  const dim3 grid((unsigned)((C + 127) / 128), (unsigned)((rows + rowsPer - 1) / rowsPer));
#define M1_CONV(KM, EX) k_conv1d_rows<KM, EX><<<grid, 128, 0, s>>>(y, x, w, bias, segStart, rows, T, C, K, rowsPer, silu)
  M1_CONV_WIDTHS(M1_CONV);
#undef M1_CONV
  return lastError();
}
cudaError_t m1_conv1d_state_out(float* st, const float* x, const int* segStart, const int* slots, int B, int T, int C, int K,
                                cudaStream_t s) {
  int64_t n = (int64_t)B * C * (K - 1);
  if (n == 0) return cudaSuccess;
  k_conv1d_state_out<<<gridFor(n), kThreads, 0, s>>>(st, x, segStart, slots, B, T, C, K);
  return lastError();
}
cudaError_t m1_conv1d_step(float* y, const float* x, float* st, const int* slots, const float* w, const float* bias, int n, int C, int K,
                           int silu, cudaStream_t s) {
  if ((int64_t)n * C == 0) return cudaSuccess;
  k_conv1d_step<<<gridFor((int64_t)n * C), kThreads, 0, s>>>(y, x, st, slots, w, bias, n, C, K, silu);
  return lastError();
}
cudaError_t m1_conv1d_bwd(float* dx, float* dw, float* dbias, const float* dy, const float* x, const float* w, const float* bias,
                          const int* segStart, int B, int T, int C, int K, int silu, cudaStream_t s) {
  const int64_t rows = (int64_t)B * T;
  if (C <= 0) return lastError();
  if (K < 1 || K > 16) return cudaErrorInvalidValue;  // the row walk's register window (Mamba convs: K = 4)
  if (rows == 0) {  // no rows: zero sums
    cudaMemsetAsync(dw, 0, sizeof(float) * (size_t)C * K, s);
    if (dbias) cudaMemsetAsync(dbias, 0, sizeof(float) * (size_t)C, s);
    return lastError();
  }
  // the ranges' sums are added in order after (deterministic)
  const int64_t rowsPer = convRowsPer(rows, C), ranges = (rows + rowsPer - 1) / rowsPer;
  double* part = ranges > 1 ? static_cast<double*>(m1Alloc(sizeof(double) * ranges * (K + 1) * C)) : nullptr;
  const dim3 grid((unsigned)((C + 127) / 128), (unsigned)ranges);
#define M1_CONV_BWD(KM, EX) k_conv1d_bwd_rows<KM, EX><<<grid, 128, 0, s>>>(dx, dw, dbias, part, dy, x, w, bias, segStart, rows, T, C, K, rowsPer, silu)
  M1_CONV_WIDTHS(M1_CONV_BWD);
#undef M1_CONV_BWD
  if (part) {
    k_conv1d_dw_ranges<<<gridFor((int64_t)(K + 1) * C), kThreads, 0, s>>>(dw, dbias, part, (int)ranges, C, K);
    m1Free(part);  // stream-ordered: the block's next user runs after these kernels
  }
  return lastError();
}

namespace {
/** time chunks of the selective scan (forward and backward): K chunks of L steps, L = ⌈T / K⌉ */
struct ScanChunks { int K, L; };
ScanChunks scanChunks(int B, int T, int Di) {
  if (T <= 0) return {1, 1};
  const int64_t lanes = (int64_t)B * Di, target = 1 << 18;  // (b, chunk, channel) threads: the GPU filled a few times
  int64_t K = (target + lanes - 1) / lanes;
  K = std::max<int64_t>(1, std::min<int64_t>(K, (T + 31) / 32));  // chunks of ≥ 32 steps
  int L = (int)((T + K - 1) / K);
  return {(T + L - 1) / L, L};
}
/**
 * The backward's chunks of L steps (kScanChunk for the channel-per-thread kernel, kLanesChunk for the lanes
 * kernel): a chunk's states fit its hs scratch / registers with no checkpoint pass (measured at B 1, T 8192,
 * Di 3072, N 16 on the H200: see BENCHMARKS.md, sixth and seventh sessions)
 */
ScanChunks bwdChunks(int T, int L) {
  if (T <= 0) return {1, 1};
  L = std::min(T, L);
  return {(T + L - 1) / L, L};
}
/**
 * Channels per block of k_selective_scan_bwd_lanes (the same for both of its lane layouts), 0 where it does
 * not apply: N is 4 … 32 and a block of whole warps (at most N·CPB ≤ 256 threads) holds whole channels of
 * one group — CPB channels, a power of two dividing the group's channel count; the step offsets are 32-bit.
 */
int scanBwdLanesChannels(int T, int Di, int N, int G) {
  if (!(N == 4 || N == 8 || N == 16 || N == 32) || T <= 0 || Di <= 0 || G <= 0 || Di % G != 0) return 0;
  if ((int64_t)G * N * kLanesChunk > INT32_MAX || (int64_t)Di * kLanesChunk > INT32_MAX) return 0;
  const int per = Di / G;
  int cpb = 256 / N;
  while (cpb > 1 && per % cpb != 0) cpb >>= 1;
  return cpb * N / kLanesSpt >= 32 && per % cpb == 0 ? cpb : 0;
}
/** the backward's chunks: bwdChunks with the chunk length of the kernel m1_selective_scan_bwd picks */
ScanChunks scanBwdChunks(int T, int Di, int N, int G) {
  return bwdChunks(T, scanBwdLanesChannels(T, Di, N, G) > 0 ? kLanesChunk : kScanChunk);
}
}  // namespace

int64_t m1_selective_scan_scratch_floats(int B, int T, int Di, int N) {
  ScanChunks ch = scanChunks(B, T, Di);
  return ch.K > 1 ? (int64_t)B * ch.K * Di * (N + 1) : 0;
}
int64_t m1_selective_scan_checkpoint_floats(int B, int T, int Di, int N, int G) {
  const ScanChunks ch = scanBwdChunks(T, Di, N, G);
  return ch.K > 1 ? (int64_t)B * ch.K * Di * N : 0;
}
cudaError_t m1_selective_scan(void* y, int yBf16, const float* x, const float* delta, const float* A, const float* Bm, const float* Cm,
                              const float* D, const float* z, const float* db, const int* segStart, float* st, const int* slots,
                              float* scratch, float* ckpt, int B, int T, int Di, int N, int G, cudaStream_t s) {
  ScanChunks ch = scanChunks(B, T, Di);
  int64_t n = (int64_t)B * ch.K * Di;
  if (n == 0 || T == 0) return cudaSuccess;
  const ScanChunks ck = scanBwdChunks(T, Di, N, G);
  if (ck.K <= 1) ckpt = nullptr;  // a backward of one chunk reads no checkpoints
  float* hin = nullptr;
  if (ch.K > 1) {
    hin = scratch;
    float* chunkDt = scratch + n * N;
    DISPATCH_N(N, (k_selective_scan<NM, float><<<gridFor(n, 128), 128, 0, s>>>(nullptr, x, delta, A, Bm, Cm, D, z, db, segStart, nullptr,
                                                                        nullptr, nullptr, hin, chunkDt, B, T, Di, N, G, ch.K, ch.L,
                                                                        nullptr, 1, 1)));
    k_scan_chunk_carry<<<gridFor((int64_t)B * Di * N), kThreads, 0, s>>>(hin, chunkDt, A, B, ch.K, Di, N, 0);
  }
#define M1_SCAN_FINAL(OT)                                                                                                     \
  DISPATCH_N(N, (k_selective_scan<NM, OT><<<gridFor(n, 128), 128, 0, s>>>(static_cast<OT*>(y), x, delta, A, Bm, Cm, D, z, db, segStart, st, \
                                                                          slots, hin, nullptr, nullptr, B, T, Di, N, G, ch.K, ch.L, ckpt, ck.L, ck.K)))
  if (yBf16) M1_SCAN_FINAL(__nv_bfloat16);
  else M1_SCAN_FINAL(float);
#undef M1_SCAN_FINAL
  return lastError();
}
cudaError_t m1_selective_scan_step(float* y, const float* x, const float* delta, const float* A, const float* Bm, const float* Cm,
                                   const float* D, const float* z, const float* db, float* st, const int* slots, int nTok, int Di,
                                   int N, int G, cudaStream_t s) {
  int64_t n = (int64_t)nTok * Di;
  if (n == 0) return cudaSuccess;
  if (N < 1 || N > 128) return cudaErrorInvalidValue;
  if ((int64_t)Di * 32 > INT32_MAX) return cudaErrorInvalidValue;
  const unsigned tokBlocks = (unsigned)(nTok < 65535 ? nTok : 65535);
  const bool aligned = ((((uintptr_t)A | (uintptr_t)Bm | (uintptr_t)Cm | (uintptr_t)st) & 15) == 0);
  if (aligned && (N == 4 || N == 8 || N == 16 || N == 32)) {
    const dim3 vgrid((unsigned)((Di + 127) / 128 < 65535 ? (Di + 127) / 128 : 65535), tokBlocks);
#define SCAN_STEP_VEC(N4) k_selective_scan_step_vec<N4><<<vgrid, 128, 0, s>>>(y, x, delta, A, Bm, Cm, D, z, db, st, slots, nTok, Di, G)
    if (N == 4) SCAN_STEP_VEC(1);
    else if (N == 8) SCAN_STEP_VEC(2);
    else if (N == 16) SCAN_STEP_VEC(4);
    else SCAN_STEP_VEC(8);
#undef SCAN_STEP_VEC
    return lastError();
  }
  const dim3 grid((unsigned)((Di * 32 + 127) / 128 < 65535 ? (Di * 32 + 127) / 128 : 65535), tokBlocks);
#define SCAN_STEP(LANES) k_selective_scan_step<LANES><<<dim3(std::min<unsigned>(grid.x, (unsigned)((Di * LANES + 127) / 128)), grid.y), 128, 0, s>>>(y, x, delta, A, Bm, Cm, D, z, db, st, slots, nTok, Di, N, G)
  if (N <= 1) SCAN_STEP(1);
  else if (N <= 2) SCAN_STEP(2);
  else if (N <= 4) SCAN_STEP(4);
  else if (N <= 8) SCAN_STEP(8);
  else if (N <= 16) SCAN_STEP(16);
  else SCAN_STEP(32);
#undef SCAN_STEP
  return lastError();
}
int m1_mamba1_decode_step_handles(int Di, int dXb, int N, int P, const void* const* vec4Ptrs, int nPtrs) {
  if (N != 4 && N != 8 && N != 16 && N != 32) return 0;
  if (Di % N != 0 || dXb % N != 0 || Di % dXb != 0 || P % 4 != 0) return 0;
  for (int i = 0; i < nPtrs; i++)
    if (reinterpret_cast<uintptr_t>(vec4Ptrs[i]) % 16 != 0) return 0;
  return 1;
}
cudaError_t m1_mamba1_decode_step(void* y, int outBf16, const void* proj_, int projBf16, const float* deltaLow, const void* dtBias_,
                                  void* convSt_, const void* convW_, const void* convBias_, const float* aLog, const void* D_, int wBf16,
                                  void* ssmSt, int stBf16, const int* slots, int nTok, int Di, int dXb, int N, int P, int K, cudaStream_t s) {
  const WeightF dtBias{dtBias_, wBf16 & 1}, convW{convW_, (wBf16 >> 1) & 1}, convBias{convBias_, (wBf16 >> 2) & 1}, D{D_, (wBf16 >> 3) & 1};
  if ((int64_t)nTok * Di == 0) return cudaSuccess;
  if (K < 1 || dXb < 1 || Di > INT32_MAX - 31) return cudaErrorInvalidValue;
  // a warp per 32 channels (one tile) stepping through tokens: blockIdx.y, + gridDim.y, …, so that the channel's
  // weights and A are loaded once per warp. The grid is one wave of resident blocks (the occupancy calculator's, per
  // kernel), or one block a token when there are fewer tokens.
  // Earlier (a tile and a token per warp): N ≤ 16 staged through shared memory (tenth session, H200, M1-3B decode step
  // with graphs, same call, two rounds): batch 512 at context 256 9.55 → 8.94 ms, at 4096 21.05 → 20.4 ms; batch 256
  // 5.91 → 5.69 ms; batch 8 / 64 unchanged. Bounding it to 12 blocks an SM (40 registers instead of 47) changed nothing.
  // Tried before that: TPW tokens per warp with A and the per-channel weights kept in registers (TPW 1 / 2 / 4: 128 / 168
  // / 255 registers) — slower at every batch (fewer warps per SM).
  const int64_t tilesX = ((int64_t)Di + kDecodeThreads - 1) / kDecodeThreads;
  if (tilesX > 65535) return cudaErrorInvalidValue;
  // per warp: a2, then the stage buffer (state, B and C)
  const auto smemBytes = [](int n4) { return (size_t)(kDecodeThreads / 32) * (2 * n4 * 32 + 16) * sizeof(float4); };
  const auto gridFor = [&](const void* kernel, size_t smem) {
    int perSM = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSM, kernel, kDecodeThreads, smem) != cudaSuccess || perSM < 1) perSM = 1;
    const int64_t wave = std::max<int64_t>(1, (int64_t)perSM * m1SmCount() / tilesX);
    return dim3((unsigned)tilesX, (unsigned)std::min<int64_t>({(int64_t)nTok, wave, 65535}));
  };
  // one launch for an output type OT and a state type ST: the register kernel (N = 32) or the shared-memory one
  const auto launch = [&](auto outTag, auto stTag, auto ptTag, auto n4, auto kc, auto smem) {
    using OT = decltype(outTag);
    using ST = decltype(stTag);
    using PT = decltype(ptTag);
    constexpr int N4 = decltype(n4)::value, KC = decltype(kc)::value;
    OT* o = static_cast<OT*>(y);
    ST* st = static_cast<ST*>(ssmSt);
    ST* convSt = static_cast<ST*>(convSt_);
    const PT* proj = static_cast<const PT*>(proj_);
    if constexpr (decltype(smem)::value) {
      smemCarveout<N4, KC, OT, ST, PT>();
      const auto k = k_mamba1_decode_step_smem<N4, KC, OT, ST, PT>;
      const size_t bytes = smemBytes(N4);
      // (a launch error is also the runtime's last error, returned below)
      (void)pdlLaunch(k, gridFor((const void*)k, bytes), kDecodeThreads, bytes, s, o, proj, deltaLow, dtBias, convSt, convW, convBias, aLog, D, st,
                      slots, nTok, Di, dXb, P, K);
    } else {
      const auto k = k_mamba1_decode_step<N4, KC, OT, ST, PT>;
      (void)pdlLaunch(k, gridFor((const void*)k, 0), kDecodeThreads, 0, s, o, proj, deltaLow, dtBias, convSt, convW, convBias, aLog, D, st, slots,
                      nTok, Di, dXb, P, K);
    }
  };
  const auto byWidth = [&](auto outTag, auto stTag, auto ptTag) {
    using I1 = std::integral_constant<int, 1>;
    using I2 = std::integral_constant<int, 2>;
    using I4 = std::integral_constant<int, 4>;
    using I8 = std::integral_constant<int, 8>;
    using K0 = std::integral_constant<int, 0>;
    const auto widths = [&](auto n4, auto smem) { K == 4 ? launch(outTag, stTag, ptTag, n4, I4{}, smem) : launch(outTag, stTag, ptTag, n4, K0{}, smem); };
    if (N == 4) widths(I1{}, std::true_type{});
    else if (N == 8) widths(I2{}, std::true_type{});
    else if (N == 16) widths(I4{}, std::true_type{});
    else widths(I8{}, std::false_type{});
  };
  if (N != 4 && N != 8 && N != 16 && N != 32) return cudaErrorInvalidValue;
  const __nv_bfloat16 bf{};
  const auto byState = [&](auto outTag, auto ptTag) { stBf16 ? byWidth(outTag, bf, ptTag) : byWidth(outTag, 0.f, ptTag); };
  const auto byProj = [&](auto outTag) { projBf16 ? byState(outTag, bf) : byState(outTag, 0.f); };
  outBf16 ? byProj(bf) : byProj(0.f);
  return lastError();
}
int64_t m1_scan_bwd_scratch_floats(int64_t threads, int T, int N) {
  int64_t nChunks = (T + kScanChunk - 1) / kScanChunk;
  return threads * N * (nChunks + kScanChunk);
}
int64_t m1_selective_scan_bwd_scratch_floats(int B, int T, int Di, int N, int G) {
  const bool lanes = scanBwdLanesChannels(T, Di, N, G) > 0;
  const ScanChunks ch = scanBwdChunks(T, Di, N, G);
  int64_t nth = (int64_t)B * ch.K * Di;
  int64_t chunked = ch.K > 1 ? nth * (2 * N + 1) : 0;  // hin, adjIn, chunkDt
  return chunked + (lanes ? 0 : nth * N * ch.L);        // hs (the lanes kernel keeps its states in registers)
}
cudaError_t m1_selective_scan_bwd(float* dx, float* ddelta, float* dA, float* dBm, float* dCm, float* dD, float* dz, float* dDb,
                                  float* scratch, const float* dy, const float* x, const float* delta, const float* A, const float* Bm,
                                  const float* Cm, const float* D, const float* z, const float* db, const int* segStart,
                                  const float* ckpt, int B, int T, int Di, int N, int G, cudaStream_t s) {
  const int per = Di / G, cpb = scanBwdLanesChannels(T, Di, N, G);
  const ScanChunks ch = scanBwdChunks(T, Di, N, G);
  int64_t n = (int64_t)B * ch.K * Di;
  const bool whole = cpb > 0 && cpb == per;  // each block is one whole group: dB / dC stored, not summed
  // outputs reduced with atomics start from zero
  cudaMemsetAsync(dA, 0, sizeof(float) * (size_t)Di * N, s);
  if (!whole) {
    cudaMemsetAsync(dBm, 0, sizeof(float) * (size_t)B * T * G * N, s);
    cudaMemsetAsync(dCm, 0, sizeof(float) * (size_t)B * T * G * N, s);
  }
  if (dD) cudaMemsetAsync(dD, 0, sizeof(float) * Di, s);
  if (dDb) cudaMemsetAsync(dDb, 0, sizeof(float) * Di, s);
  if (n == 0 || T == 0) return lastError();
  float *hin = nullptr, *adjIn = nullptr, *rest = scratch;
  if (ch.K > 1) {
    hin = scratch;
    adjIn = scratch + n * N;
    float* chunkDt = scratch + 2 * n * N;
    rest = chunkDt + n;
    if (ckpt) {
      // the states entering the chunks were saved by the forward (m1_selective_scan's ckpt): no chunk pass, no
      // carry; the adjoint pass sums the chunks' dt for the reverse carry
      hin = const_cast<float*>(ckpt);
    } else {
      DISPATCH_N(N, (k_selective_scan<NM, float><<<gridFor(n, 128), 128, 0, s>>>(nullptr, x, delta, A, Bm, Cm, D, z, db, segStart, nullptr,
                                                                          nullptr, nullptr, hin, chunkDt, B, T, Di, N, G, ch.K, ch.L,
                                                                          nullptr, 1, 1)));
      k_scan_chunk_carry<<<gridFor((int64_t)B * Di * N), kThreads, 0, s>>>(hin, chunkDt, A, B, ch.K, Di, N, 0);
    }
    DISPATCH_N(N, (k_selective_scan_bwd_adj<NM><<<gridFor(n, 128), 128, 0, s>>>(adjIn, ckpt ? chunkDt : nullptr, dy, delta, A, Cm, z,
                                                                                db, segStart, B, T, Di, N, G, ch.K, ch.L)));
    k_scan_chunk_carry<<<gridFor((int64_t)B * Di * N), kThreads, 0, s>>>(adjIn, chunkDt, A, B, ch.K, Di, N, 1);
  }
  if (cpb > 0) {
    // SPT-float runs of A / B / C when all three are 8-byte aligned, else one state per lane (same chunks, same blocks)
    const bool runs = (((uintptr_t)A | (uintptr_t)Bm | (uintptr_t)Cm) & (sizeof(float) * kLanesSpt - 1)) == 0;
    const int threads = runs ? cpb * N / kLanesSpt : cpb * N;
    // the warps' dB / dC terms per step, then the chunk's B and C rows
    const size_t smem = (2 * (size_t)kLanesChunk * (threads / 32) * N + 2 * (size_t)kLanesChunk * N) * sizeof(float);
    const int64_t blocks = (int64_t)B * ch.K * (Di / cpb);
    if (blocks > INT32_MAX) return cudaErrorInvalidValue;
#define SCAN_BWD_LANES(NN, SPT)                                                                                             \
  k_selective_scan_bwd_lanes<NN, SPT, kLanesChunk><<<(unsigned)blocks, threads, smem, s>>>(                                  \
      dx, ddelta, dA, dBm, dCm, dD, dz, dDb, hin, adjIn, dy, x, delta, A, Bm, Cm, D, z, db, segStart, T, Di, G, ch.K, whole ? 1 : 0)
#define SCAN_BWD_LANES_N(NN) do { if (runs) SCAN_BWD_LANES(NN, kLanesSpt); else SCAN_BWD_LANES(NN, 1); } while (0)
    if (N == 4) SCAN_BWD_LANES_N(4);
    else if (N == 8) SCAN_BWD_LANES_N(8);
    else if (N == 16) SCAN_BWD_LANES_N(16);
    else SCAN_BWD_LANES_N(32);
#undef SCAN_BWD_LANES_N
#undef SCAN_BWD_LANES
    return lastError();
  }
  // dB / dC sums over the channels of a group: runs of `width` lanes share one (row, group) when every warp
  // lies in one (b, chunk) row (Di % 32 == 0) and width divides the group's channel count
  int width = 1;
  if (Di % 32 == 0)
    while (width < 32 && per % (width * 2) == 0) width *= 2;
  // the column sums need whole warps of valid lanes: Di % 32 == 0 (width > 1 only then) and n a multiple of the block
  const bool colSum = width == N && N <= 32 && n % 128 == 0;
  const size_t smem = colSum ? 2 * 128 * (size_t)(N + 1) * sizeof(float) : 0;
  DISPATCH_N(N, (k_selective_scan_bwd<NM><<<gridFor(n, 128), 128, smem, s>>>(dx, ddelta, dA, dBm, dCm, dD, dz, dDb, rest, hin, adjIn,
                                                                             dy, x, delta, A, Bm, Cm, D, z, db, segStart, B, T, Di, N, G,
                                                                             ch.K, ch.L, width, colSum ? 1 : 0)));
  return lastError();
}

cudaError_t m1_ssd_scan(float* y, const float* x, const float* dt, const float* A, const float* Bm, const float* Cm, const float* D,
                        const float* dtBias, const int* segStart, float* st, const int* slots, int B, int T, int H, int P, int G,
                        int N, cudaStream_t s) {
  int64_t n = (int64_t)B * H * P;
  if (n == 0) return cudaSuccess;
  DISPATCH_N(N, (k_ssd_scan<NM><<<gridFor(n, 128), 128, 0, s>>>(y, x, dt, A, Bm, Cm, D, dtBias, segStart, st, slots, B, T, H, P, G,
                                                                N)));
  return lastError();
}
cudaError_t m1_ssd_scan_step(float* y, const float* x, const float* dt, const float* A, const float* Bm, const float* Cm, const float* D,
                             const float* dtBias, float* st, const int* slots, int nTok, int H, int P, int G, int N, cudaStream_t s) {
  int64_t n = (int64_t)nTok * H * P;
  if (n == 0) return cudaSuccess;
  DISPATCH_N(N, (k_ssd_scan_step<NM><<<gridFor(n, 128), 128, 0, s>>>(y, x, dt, A, Bm, Cm, D, dtBias, st, slots, nTok, H, P, G, N)));
  return lastError();
}
cudaError_t m1_ssd_scan_bwd(float* dx, float* ddt, float* dA, float* dBm, float* dCm, float* dD, float* dDtBias, float* scratch,
                            const float* dy, const float* x, const float* dt, const float* A, const float* Bm, const float* Cm,
                            const float* D, const float* dtBias, const int* segStart, int B, int T, int H, int P, int G, int N,
                            cudaStream_t s) {
  cudaMemsetAsync(ddt, 0, sizeof(float) * (size_t)B * T * H, s);
  cudaMemsetAsync(dA, 0, sizeof(float) * H, s);
  cudaMemsetAsync(dBm, 0, sizeof(float) * (size_t)B * T * G * N, s);
  cudaMemsetAsync(dCm, 0, sizeof(float) * (size_t)B * T * G * N, s);
  if (dD) cudaMemsetAsync(dD, 0, sizeof(float) * H, s);
  if (dDtBias) cudaMemsetAsync(dDtBias, 0, sizeof(float) * H, s);
  int64_t n = (int64_t)B * H * P;
  if (n == 0 || T == 0) return lastError();
  int width = P % 32 == 0 ? 32 : 1;  // each warp's 32 lanes are 32 p of one (b, head)
  DISPATCH_N(N, (k_ssd_scan_bwd<NM><<<gridFor(n, 128), 128, 0, s>>>(dx, ddt, dA, dBm, dCm, dD, dDtBias, scratch, dy, x, dt, A, Bm, Cm,
                                                                    D, dtBias, segStart, B, T, H, P, G, N, width)));
  return lastError();
}

cudaError_t m1_gated_rmsnorm(float* out, const float* y, const float* z, const float* w, int64_t n, int64_t D, int64_t group, float eps,
                             cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  k_gated_rmsnorm<<<(unsigned)(n / group), kThreads, 0, s>>>(out, nullptr, y, z, w, D, group, eps);
  return lastError();
}
cudaError_t m1_gated_rmsnorm_bwd(float* dy, float* dz, float* dw, float* rstd, const float* dout, const float* y, const float* z,
                                 const float* w, int64_t n, int64_t D, int64_t group, float eps, cudaStream_t s) {
  if (n > 0) {
    k_gated_rmsnorm<<<(unsigned)(n / group), kThreads, 0, s>>>(nullptr, rstd, y, z, w, D, group, eps);
    k_gated_rmsnorm_bwd<<<(unsigned)(n / group), kThreads, 0, s>>>(dy, dz, rstd, dout, y, z, w, D, group);
  }
  launchColSum(n / D, D, GatedRmsNormDwTerm{dw, rstd, dout, y, z, D, group}, s);
  return lastError();
}

cudaError_t m1_log_softmax(float* out, const float* x, int64_t rows, int64_t V, cudaStream_t s) {
  if (rows == 0) return cudaSuccess;
  k_log_softmax<<<(unsigned)rows, kThreads * 2, 0, s>>>(out, x, V);
  return lastError();
}
cudaError_t m1_gather_logprobs(float* out, const float* x, const int* targets, int64_t rows, int64_t V, cudaStream_t s) {
  if (rows == 0) return cudaSuccess;
  k_gather_logprobs<<<(unsigned)rows, kThreads * 2, 0, s>>>(out, x, targets, V);
  return lastError();
}
int64_t m1_argmax_parts(int64_t rows, int64_t V) {
  // about 4 blocks per multiprocessor in all (132 on the H200), each part at least 4096 logits
  int64_t parts = std::max<int64_t>(1, std::min<int64_t>((528 + rows - 1) / std::max<int64_t>(rows, 1), 64));
  return std::max<int64_t>(1, std::min<int64_t>(parts, (V + 4095) / 4096));
}
int64_t m1_argmax_scratch_bytes(int64_t rows, int64_t V) { return rows * m1_argmax_parts(rows, V) * (int64_t)sizeof(ArgmaxPart); }
cudaError_t m1_argmax_rows(int* ids, float* logprobs, const float* x, int64_t rows, int64_t V, void* scratch, cudaStream_t s) {
  if (rows == 0) return cudaSuccess;
  const int64_t parts = m1_argmax_parts(rows, V), span = (V + parts - 1) / parts;
  auto* p = static_cast<ArgmaxPart*>(scratch);
  k_argmax_part<<<dim3((unsigned)rows, (unsigned)parts), kThreads * 2, 0, s>>>(p, x, V, span);
  k_argmax_combine<<<(unsigned)((rows + 7) / 8), kThreads, 0, s>>>(ids, logprobs, p, rows, (int)parts);
  return lastError();
}
cudaError_t m1_cross_entropy(float* rowLoss, float* dl, const float* x, const int* targets, const int* mask, int64_t rows, int64_t V,
                             float inv, cudaStream_t s) {
  if (rows == 0) return cudaSuccess;
  k_cross_entropy<<<(unsigned)rows, kThreads * 2, 0, s>>>(rowLoss, dl, x, targets, mask, V, inv);
  return lastError();
}

cudaError_t m1_softmax_chunk_stats(float* stats, const float* x, const float* other, const int* targets, int64_t rows, int64_t Vc,
                                  float scale, int64_t vocabOffset, cudaStream_t s) {
  if (rows == 0 || Vc == 0) return cudaSuccess;
  const int64_t nv = (Vc / 4 + kChunkThreads - 1) / kChunkThreads;  // float4s per thread
  if (nv <= 8 && fourWide(Vc, {x, other})) {  // the row in registers (Vc ≤ 16384)
    const float4 *x4 = reinterpret_cast<const float4*>(x), *o4 = reinterpret_cast<const float4*>(other);
    if (nv <= 1) k_softmax_chunk_stats4<1><<<(unsigned)rows, kChunkThreads, 0, s>>>(stats, x4, o4, targets, Vc, scale, vocabOffset);
    else if (nv <= 2) k_softmax_chunk_stats4<2><<<(unsigned)rows, kChunkThreads, 0, s>>>(stats, x4, o4, targets, Vc, scale, vocabOffset);
    else if (nv <= 4) k_softmax_chunk_stats4<4><<<(unsigned)rows, kChunkThreads, 0, s>>>(stats, x4, o4, targets, Vc, scale, vocabOffset);
    else k_softmax_chunk_stats4<8><<<(unsigned)rows, kChunkThreads, 0, s>>>(stats, x4, o4, targets, Vc, scale, vocabOffset);
    return lastError();
  }
  k_softmax_chunk_stats<<<(unsigned)rows, kThreads * 2, 0, s>>>(stats, x, other, targets, Vc, scale, vocabOffset);
  return lastError();
}
cudaError_t m1_softmax_chunk_grad(float* dl, const float* x, const float* coefs, const float* other, const int* targets, int64_t rows,
                                 int64_t Vc, float scale, int64_t vocabOffset, cudaStream_t s) {
  if (rows == 0 || Vc == 0) return cudaSuccess;
  if (fourWide(Vc, {dl, x, other})) {  // in float4s
    const RowTiles t = rowTiles(rows, Vc / 4);
    k_softmax_chunk_grad_tiles<true><<<t.grid, t.block, 0, s>>>(dl, x, coefs, other, targets, rows, Vc, scale, vocabOffset);
  } else {
    const RowTiles t = rowTiles(rows, Vc);
    k_softmax_chunk_grad_tiles<false><<<t.grid, t.block, 0, s>>>(dl, x, coefs, other, targets, rows, Vc, scale, vocabOffset);
  }
  return lastError();
}

cudaError_t m1_adamw(float* w, void* paramOut, int paramBf16, const float* grad, float* m, float* v, int64_t n, float b1, float b2,
                     float eps, float decay, float stepSize, float sqrtBc2, float* bad, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  auto aligned = [](const void* p, uintptr_t a) { return ((uintptr_t)p & (a - 1)) == 0; };
  const bool vec = n >= 4 && aligned(w, 16) && aligned(grad, 16) && aligned(m, 16) && aligned(v, 16) &&
                   (!paramOut || aligned(paramOut, paramBf16 ? 8 : 16));
  if (vec) k_adamw_vec4<<<gridFor(n >> 2), kThreads, 0, s>>>(w, paramOut, paramBf16, grad, m, v, n, b1, b2, eps, decay, stepSize, sqrtBc2, bad);
  else k_adamw<<<gridFor(n), kThreads, 0, s>>>(w, paramOut, paramBf16, grad, m, v, n, b1, b2, eps, decay, stepSize, sqrtBc2, bad);
  return lastError();
}

}  // extern "C"
