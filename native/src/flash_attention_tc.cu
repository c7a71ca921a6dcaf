// Tiled causal GQA attention forward on the tensor cores (bf16 operands, f32 accumulation and f32
// softmax): the path of m1_attention when the caller asks for bf16 products (the backend's
// "medium" f32 matmul precision, as autocast runs attention in bf16). Same semantics, shapes and
// outputs (out, lse) as k_flash_fwd in flash_attention.cu, whose f32 SIMT kernel stays the default.
//
// Work split: a block of 4 warps takes 64 queries of one (b, head); warp w owns query rows
// 16w..16w+15 from start to end, so the steps inside a key tile need only __syncwarp:
//   1. the block loads the 64-key K and V tiles (f32 → bf16) into shared memory;
//   2. S_w [16 × 64] = Q_w · Kᵀ with wmma 16×16×16 fragments (K read as a col-major B operand: no
//      transpose), stored f32 to the warp's rows of a shared S tile;
//   3. two lanes per row apply scale and mask, update the running max / sum (online softmax) and
//      write P = exp(S − m) as bf16;
//   4. PV_w [16 × Dh] = P_w · V (wmma), stored f32 over the same shared tile;
//   5. each lane rescales its half row of O (registers) and adds PV.
// Shared memory at Dh = 128: Q, K, V bf16 [64][136] (17 KiB each) + S/PV f32 [64][132] (33 KiB) +
// P bf16 [64][72] (9 KiB) = 93 KiB: two blocks per SM. Row strides are padded (+8 bf16 / +4 f32) so
// the fragment loads do not all hit one bank, and keep every fragment pointer 32-byte aligned.
#include <cuda_bf16.h>
#include <math_constants.h>
#include <mma.h>

#include "flash_attention.h"

namespace {

using namespace nvcuda;

constexpr int kWarps = 4, kTile = 64;

template <int DH>
struct TcLayout {
  static constexpr int LDH = DH + 8;         // bf16 row stride of Q, K, V
  static constexpr int LDS = DH + 4;         // f32 row stride of S / PV (S uses its first 64 columns)
  static constexpr int LDP = kTile + 8;      // bf16 row stride of P
  static constexpr size_t qkv = (size_t)kTile * LDH * sizeof(__nv_bfloat16);
  static constexpr size_t s = (size_t)kTile * LDS * sizeof(float);
  static constexpr size_t p = (size_t)kTile * LDP * sizeof(__nv_bfloat16);
  static constexpr size_t bytes = 3 * qkv + s + p;
  static_assert(qkv % 32 == 0 && s % 32 == 0, "fragment pointers must stay 32-byte aligned");
};

/** ROWS × DH f32 rows (src row r at src + r·stride) into bf16 smem [ROWS][LDH]; rows ≥ valid are zeros */
template <int DH>
__device__ __forceinline__ void loadTileBf16(__nv_bfloat16* dst, const float* src, int64_t stride, int valid) {
  constexpr int C4 = DH / 4, LDH = TcLayout<DH>::LDH;
  for (int e = threadIdx.x; e < kTile * C4; e += kWarps * 32) {
    const int r = e / C4, c = (e % C4) * 4;
    float4 x = r < valid ? *reinterpret_cast<const float4*>(src + r * stride + c) : make_float4(0.f, 0.f, 0.f, 0.f);
    __nv_bfloat162 lo = __floats2bfloat162_rn(x.x, x.y), hi = __floats2bfloat162_rn(x.z, x.w);
    __nv_bfloat162* d = reinterpret_cast<__nv_bfloat162*>(dst + r * LDH + c);
    d[0] = lo;
    d[1] = hi;
  }
}

template <int DH>
__global__ void __launch_bounds__(kWarps * 32, 2)
k_flash_fwd_tc(float* __restrict__ out, float* __restrict__ lse, const float* __restrict__ q, const float* __restrict__ k,
               const float* __restrict__ v, const int* __restrict__ seg, int T, int Hq, int Hkv, float scale) {
  using L = TcLayout<DH>;
  constexpr int LDH = L::LDH, LDS = L::LDS, LDP = L::LDP, HALF = DH / 2;
  extern __shared__ float4 smem4[];
  unsigned char* base = reinterpret_cast<unsigned char*>(smem4);
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(base);
  __nv_bfloat16* Ks = reinterpret_cast<__nv_bfloat16*>(base + L::qkv);
  __nv_bfloat16* Vs = reinterpret_cast<__nv_bfloat16*>(base + 2 * L::qkv);
  float* Ss = reinterpret_cast<float*>(base + 3 * L::qkv);
  __nv_bfloat16* Ps = reinterpret_cast<__nv_bfloat16*>(base + 3 * L::qkv + L::s);
  __shared__ int qSeg[kTile], kSeg[kTile];

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kTile;  // the longest query tiles first
  const int h = blockIdx.y, b = blockIdx.z, g = h / (Hq / Hkv);
  const int nq = min(kTile, T - q0);
  const int64_t row0 = (int64_t)b * T, qStride = (int64_t)Hq * DH, kStride = (int64_t)Hkv * DH;

  loadTileBf16<DH>(Qs, q + (row0 + q0) * qStride + (int64_t)h * DH, qStride, nq);
  if (seg && threadIdx.x < kTile) qSeg[threadIdx.x] = threadIdx.x < nq ? seg[row0 + q0 + threadIdx.x] : 0;

  // lane pair (2i, 2i+1) owns row r = 16·warp + i; each lane half of its columns
  const int r = warp * 16 + (lane >> 1), half = lane & 1, t = q0 + r;
  float m = -CUDART_INF_F, l = 0.f, o[HALF];
#pragma unroll
  for (int d = 0; d < HALF; d++) o[d] = 0.f;
  float* Sw = Ss + warp * 16 * LDS;
  __nv_bfloat16* Pw = Ps + warp * 16 * LDP;
  const __nv_bfloat16* Qw = Qs + warp * 16 * LDH;

  const int lastQuery = q0 + nq - 1;
  for (int k0 = 0; k0 <= lastQuery; k0 += kTile) {
    const int nk = min(kTile, T - k0);
    __syncthreads();  // every warp is done with the previous K / V tiles (and Q, qSeg are visible)
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
    loadTileBf16<DH>(Ks, k + (row0 + k0) * kStride + (int64_t)g * DH, kStride, nk);
    loadTileBf16<DH>(Vs, v + (row0 + k0) * kStride + (int64_t)g * DH, kStride, nk);
    __syncthreads();

    // 2. S_w = Q_w · Kᵀ
#pragma unroll
    for (int n = 0; n < kTile / 16; n++) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int kk = 0; kk < DH / 16; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
        wmma::load_matrix_sync(fa, Qw + kk * 16, LDH);
        wmma::load_matrix_sync(fb, Ks + n * 16 * LDH + kk * 16, LDH);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(Sw + n * 16, acc, LDS, wmma::mem_row_major);
    }
    __syncwarp();

    // 3. online softmax over this lane's 32 columns; the pair combines with one shuffle
    const float* srow = Ss + r * LDS + half * 32;
    float sv[32], mx = -CUDART_INF_F;
#pragma unroll
    for (int j = 0; j < 32; j++) {
      const int c = half * 32 + j;
      const bool vis = k0 + c <= t && t < T && (!seg || kSeg[c] == qSeg[r]);
      sv[j] = vis ? srow[j] * scale : -CUDART_INF_F;
      mx = fmaxf(mx, sv[j]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float mNew = fmaxf(m, mx);
    const float baseM = mNew == -CUDART_INF_F ? 0.f : mNew;  // nothing visible yet: exp gives 0, not NaN
    const float corr = expf(m - baseM);
    float sum = 0.f;
    __nv_bfloat16* prow = Ps + r * LDP + half * 32;
#pragma unroll
    for (int j = 0; j < 32; j += 2) {
      const float e0 = expf(sv[j] - baseM), e1 = expf(sv[j + 1] - baseM);
      sum += e0 + e1;
      *reinterpret_cast<__nv_bfloat162*>(prow + j) = __floats2bfloat162_rn(e0, e1);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * corr + sum;
    m = mNew;
    __syncwarp();

    // 4. PV_w = P_w · V over the warp's rows of the shared tile (S is no longer needed)
#pragma unroll
    for (int n = 0; n < DH / 16; n++) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int kk = 0; kk < kTile / 16; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
        wmma::load_matrix_sync(fa, Pw + kk * 16, LDP);
        wmma::load_matrix_sync(fb, Vs + kk * 16 * LDH + n * 16, LDH);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(Sw + n * 16, acc, LDS, wmma::mem_row_major);
    }
    __syncwarp();

    // 5. O = O·corr + PV
    const float* pv = Ss + r * LDS + half * HALF;
#pragma unroll
    for (int d = 0; d < HALF; d++) o[d] = o[d] * corr + pv[d];
    __syncwarp();  // the next tile's S overwrites PV
  }

  if (t < T) {
    // l > 0: the diagonal key t is always visible and its tile never skipped
    const float inv = 1.f / l;
    float* orow = out + (row0 + t) * qStride + (int64_t)h * DH + half * HALF;
#pragma unroll
    for (int d = 0; d < HALF; d += 4) *reinterpret_cast<float4*>(orow + d) = make_float4(o[d] * inv, o[d + 1] * inv, o[d + 2] * inv, o[d + 3] * inv);
    if (half == 0) lse[((int64_t)b * Hq + h) * T + t] = m + logf(l);
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
