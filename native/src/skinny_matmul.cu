// Skinny products on Hopper: Y [nb][M, N] = X [M, K] · W_bᵀ for bf16 weights W_b [N, K] (row-major, nb = 1, or 2 for
// gate and up at a fixed distance) and at most 64 activation rows — the decode step's products. At 64 rows a product
// does 64 multiply-adds per weight byte read: its time is the time to stream W from memory, and what loses time is a
// kernel that leaves SMs idle or cannot keep enough bytes in flight to cover the memory's latency.
//
//   - a CTA (one warpgroup, 128 threads) owns TN = 128 or 256 weight rows (output columns) and one of `parts` equal
//     slices of K; the grid is tiles × parts CTAs, so that even a [3072 × 3072] weight is spread over every SM;
//   - K goes in chunks of 64 (one 128-byte row of the 128-byte swizzle) through ~200 KiB of shared-memory stages, each
//     filled by two TMA tile loads (cp.async.bulk.tensor: the activation's [Mbox × 64] chunk, Mbox = M rounded up to 8,
//     rows past M zero-filled by the TMA, and the weight's [TN × 64] chunk) that complete on the stage's mbarrier; one
//     thread issues them, 8 (tile 128) or 5 (tile 256) chunks ahead, so 112 or 128 KiB of weights are in flight per CTA;
//   - each chunk is 4 wgmma m64nTNk16 (A = the activation chunk, B = the weight chunk, both K-major from shared memory,
//     f32 accumulators: TN / 2 a thread); activation rows past Mbox hold stale shared memory, which only reaches output
//     rows that are not written (row i of Y reads row i of X alone);
//   - the K slices' partial sums meet through distributed shared memory: the CTAs of one tile form a cluster of
//     `parts` CTAs, each stages its f32 partial in its own (now idle) stage memory, and after a cluster barrier CTA r
//     adds, for its 1/parts of the tile's elements, the partials of ranks 0, 1, …, parts − 1 in that order (the same
//     sums whichever CTA finishes first: deterministic) and writes them as f32 (optionally added to C) or bf16.
// TN and parts are chosen by the matmul timing (matmul.cpp) against cuBLASLt's candidates, per shape.
#include <cooperative_groups.h>
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "flash_attention.h"
#include "runtime.h"
#include "skinny_matmul.h"
#include "wgmma.cuh"

namespace {

constexpr int kSkThreads = 128;               // one warpgroup
constexpr int kSkRows = 64;                   // activation rows: wgmma's M
constexpr int kSkChunk = 64;                  // K elements a stage: one 128-byte swizzled row
constexpr uint32_t kSkXBytes = kSkRows * 128;  // a stage's activation block (8 KiB, 1024-byte aligned)

template <int TN, int ST>
struct SkLayout {
  static constexpr uint32_t wBytes = TN * 128;                 // a stage's weight block
  static constexpr uint32_t stageBytes = kSkXBytes + wBytes;   // a multiple of 1024: every block stays aligned
  static constexpr int stages = ST;
  static constexpr int pitch = TN + 4;                         // floats a row of the staged partial (16-byte rows)
  static constexpr size_t smem = (size_t)stages * stageBytes + 1024 + 8 * stages;  // + alignment, mbarriers
  static_assert((size_t)kSkRows * pitch * sizeof(float) <= (size_t)stages * stageBytes, "the partial fits in the stages");
  static_assert(smem <= 227 * 1024, "one CTA an SM");
};

#ifdef M1_WGMMA
__device__ __forceinline__ void mbarExpectTx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
/** TMA tile loads into this CTA's shared memory, completing `bytes` of the mbarrier's transaction count */
__device__ __forceinline__ void tmaLoad2d(uint32_t dst, const CUtensorMap* map, int c0, int c1, uint32_t bar) {
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
               "l"(map), "r"(c0), "r"(c1), "r"(bar)
               : "memory");
}
/** the same tile of W pulled into L2 only (no shared memory, no barrier) */
__device__ __forceinline__ void tmaPrefetch3d(const CUtensorMap* map, int c0, int c1, int c2) {
  asm volatile("cp.async.bulk.prefetch.tensor.3d.L2.global.tile [%0, {%1, %2, %3}];\n" ::"l"(map), "r"(c0), "r"(c1), "r"(c2) : "memory");
}
__device__ __forceinline__ void tmaLoad3d(uint32_t dst, const CUtensorMap* map, int c0, int c1, int c2, uint32_t bar) {
  asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
               "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
               : "memory");
}
template <int NR>
__device__ __forceinline__ void pinAcc(float (&d)[NR]) {
#pragma unroll
  for (int i = 0; i < NR; i++) asm volatile("" : "+f"(d[i])::"memory");
}
template <int TN>
__device__ __forceinline__ void wgmmaTile(float (&d)[TN / 2], uint64_t a, uint64_t b);
template <>
__device__ __forceinline__ void wgmmaTile<128>(float (&d)[64], uint64_t a, uint64_t b) { wgmmaSS(d, a, b, 1); }
template <>
__device__ __forceinline__ void wgmmaTile<256>(float (&d)[128], uint64_t a, uint64_t b) { wgmmaSS256(d, a, b, 1); }
#endif

/**
 * blockIdx.x = tile · parts + part (a cluster of `parts` CTAs along x: one tile); tile = b · tilesPerB + column tile.
 * chunks: K / 64 rounded up; xBoxBytes: the activation box's bytes (Mbox · 128); C [nb][M, N] with cBatch elements
 * between the nb outputs.
 */
template <int TN, int ST>
__global__ void __launch_bounds__(kSkThreads, 1)
k_skinny_matmul(const __grid_constant__ CUtensorMap tmX, const __grid_constant__ CUtensorMap tmW, void* __restrict__ C, int M, int N,
                int chunks, int parts, int cBf16, int accumulate, long long cBatch, uint32_t xBoxBytes, int prefetch) {
#ifdef M1_WGMMA
  using L = SkLayout<TN, ST>;
  extern __shared__ uint8_t skRaw[];
  const uint32_t rawAddr = (uint32_t)__cvta_generic_to_shared(skRaw);
  const uint32_t base = (rawAddr + 1023u) & ~1023u, bars = base + L::stages * L::stageBytes;
  const int tid = threadIdx.x;
  const int part = (int)(blockIdx.x % (unsigned)parts), tile = (int)(blockIdx.x / (unsigned)parts);
  const int tilesPerB = (N + TN - 1) / TN, b = tile / tilesPerB, n0 = (tile % tilesPerB) * TN;
  const int c0 = (int)((long long)part * chunks / parts), n = (int)((long long)(part + 1) * chunks / parts) - c0;  // ≥ 1: parts ≤ chunks
  const uint32_t tx = xBoxBytes + L::wBytes;
  const auto issue = [&](int i) {  // chunk i of this slice into stage i mod L::stages
    const uint32_t st = base + (uint32_t)(i % L::stages) * L::stageBytes, bar = bars + 8u * (uint32_t)(i % L::stages);
    const int k = (c0 + i) * kSkChunk;
    mbarExpectTx(bar, tx);
    tmaLoad2d(st, &tmX, k, 0, bar);
    tmaLoad3d(st + kSkXBytes, &tmW, k, n0, b, bar);
  };
  // Launched as a programmatic dependent (PDL) of the kernel before it, this CTA may run while that kernel still does:
  // it pulls its first chunks of W into L2 (only into L2, which is coherent: safe even where that kernel writes W),
  // then waits for that kernel's results (griddepcontrol.wait: a no-op in an ordinary launch) before it reads X or
  // writes C.
  if (tid == 0) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(&tmW) : "memory");
    if (prefetch)
      for (int i = 0; i < L::stages && i < n; i++) tmaPrefetch3d(&tmW, (c0 + i) * kSkChunk, n0, b);
    for (int s = 0; s < L::stages; s++) mbarInit(bars + 8u * (uint32_t)s, 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  if (tid == 0)
    for (int i = 0; i < L::stages && i < n; i++) issue(i);
  __syncthreads();
  float acc[TN / 2];
#pragma unroll
  for (int i = 0; i < TN / 2; i++) acc[i] = 0.f;
  for (int i = 0; i < n; i++) {
    const uint32_t st = base + (uint32_t)(i % L::stages) * L::stageBytes;
    mbarWait(bars + 8u * (uint32_t)(i % L::stages), (uint32_t)(i / L::stages) & 1u);
    wgFence();
#pragma unroll
    for (int kk = 0; kk < 4; kk++) wgmmaTile<TN>(acc, wgDesc(st + 32u * kk), wgDesc(st + kSkXBytes + 32u * kk));
    wgCommit();
    wgWaitAll();
    pinAcc(acc);
    if (tid == 0 && i + L::stages < n) issue(i + L::stages);  // the stage was read by the wgmma just waited for
  }
  // every issued chunk has landed and been read: the stages are free for the partial, f32 [64][pitch]
  float* stage = reinterpret_cast<float*>(skRaw + (base - rawAddr));
  const int warp = tid >> 5, lane = tid & 31, r0 = 16 * warp + (lane >> 2), cq = 2 * (lane & 3);
#pragma unroll
  for (int j = 0; j < TN / 8; j++) {
    *reinterpret_cast<float2*>(stage + r0 * L::pitch + 8 * j + cq) = make_float2(acc[4 * j], acc[4 * j + 1]);
    *reinterpret_cast<float2*>(stage + (r0 + 8) * L::pitch + 8 * j + cq) = make_float2(acc[4 * j + 2], acc[4 * j + 3]);
  }
  cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
  if (parts > 1) cluster.sync();  // every rank's partial staged (release / acquire across the cluster)
  else __syncthreads();
  constexpr int per = TN / 4;  // float4 units a row
  const int units = M * per, u0 = (int)((long long)part * units / parts), u1 = (int)((long long)(part + 1) * units / parts);
  for (int u = u0 + tid; u < u1; u += kSkThreads) {
    const int row = u / per, col = n0 + 4 * (u % per);
    if (col >= N) continue;
    float* mine = stage + row * L::pitch + 4 * (u % per);
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int q = 0; q < parts; q++) {
      const float4 v = *reinterpret_cast<const float4*>(parts > 1 ? cluster.map_shared_rank(mine, (unsigned)q) : mine);
      sum.x += v.x;
      sum.y += v.y;
      sum.z += v.z;
      sum.w += v.w;
    }
    const long long at = (long long)b * cBatch + (long long)row * N + col;  // N % 4 == 0: 16-byte (8-byte bf16) aligned
    if (cBf16) {
      __nv_bfloat162 lo = __floats2bfloat162_rn(sum.x, sum.y), hi = __floats2bfloat162_rn(sum.z, sum.w);
      uint2 w;
      w.x = *reinterpret_cast<uint32_t*>(&lo);
      w.y = *reinterpret_cast<uint32_t*>(&hi);
      *reinterpret_cast<uint2*>(static_cast<__nv_bfloat16*>(C) + at) = w;
    } else {
      float4* dst = reinterpret_cast<float4*>(static_cast<float*>(C) + at);
      if (accumulate) {
        const float4 o = *dst;
        sum.x += o.x;
        sum.y += o.y;
        sum.z += o.z;
        sum.w += o.w;
      }
      *dst = sum;
    }
  }
  if (parts > 1) cluster.sync();  // no CTA leaves while another still reads its shared memory
#endif
}

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                 const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

/** the driver's cuTensorMapEncodeTiled through the runtime (no link against libcuda); null where there is none */
EncodeTiled encoder() {
  static const EncodeTiled fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return static_cast<EncodeTiled>(nullptr);
    }
    return reinterpret_cast<EncodeTiled>(p);
  }();
  return fn;
}

/** programmatic dependent launch, unless M1_PDL=0 (A/B runs) */
bool pdlOn() {
  static const bool on = [] {
    const char* e = std::getenv("M1_PDL");
    return !(e && e[0] == '0');
  }();
  return on;
}

/** A/B switches (diagnosis): M1_SKINNY_STAGES=few (4 / 3 stages instead of 8 / 5), M1_SKINNY_PREFETCH=0 */
bool envIs(const char* name, const char* value) {
  const char* e = std::getenv(name);
  return e && std::strcmp(e, value) == 0;
}

template <int TN, int ST>
cudaError_t launch(const CUtensorMap& tmX, const CUtensorMap& tmW, void* C, int M, int N, int nb, int chunks, int parts, bool cBf16, bool accumulate,
                   long long cBatch, uint32_t xBoxBytes, cudaStream_t s) {
  static bool ready = false;
  cudaError_t e = m1AllowSmem(k_skinny_matmul<TN, ST>, SkLayout<TN, ST>::smem, ready);
  if (e != cudaSuccess) return e;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3((unsigned)(nb * ((N + TN - 1) / TN) * parts));
  cfg.blockDim = dim3(kSkThreads);
  cfg.dynamicSmemBytes = SkLayout<TN, ST>::smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[2];
  unsigned na = 0;
  if (pdlOn()) {  // may start before the previous kernel ends (see the kernel's prologue)
    attr[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[na++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (parts > 1) {
    attr[na].id = cudaLaunchAttributeClusterDimension;
    attr[na].val.clusterDim.x = (unsigned)parts;
    attr[na].val.clusterDim.y = 1;
    attr[na++].val.clusterDim.z = 1;
  }
  cfg.attrs = attr;
  cfg.numAttrs = na;
  static const int prefetch = envIs("M1_SKINNY_PREFETCH", "0") ? 0 : 1;
  return cudaLaunchKernelEx(&cfg, k_skinny_matmul<TN, ST>, tmX, tmW, C, M, N, chunks, parts, (int)cBf16, (int)accumulate, cBatch, xBoxBytes, prefetch);
}

long long gSkinnyLaunches = 0;

}  // namespace

long long m1SkinnyLaunches() { return gSkinnyLaunches; }

bool m1SkinnyAvailable() {
  static const bool on = [] {
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    return major == 9 && encoder() != nullptr;
  }();
  return on;
}

bool m1SkinnyShapeOk(long long M, long long N, long long K) {
  return M >= 1 && M <= kSkRows && N >= 4 && N % 4 == 0 && K >= kSkChunk && K % 8 == 0 && N <= (1LL << 30) && K <= (1LL << 30);
}

int m1SkinnyChunks(long long K) { return (int)((K + kSkChunk - 1) / kSkChunk); }

cudaError_t m1_skinny_matmul(const __nv_bfloat16* X, long long M, long long K, const __nv_bfloat16* W, long long N, int nb, long long wStride,
                             void* C, bool cBf16, bool accumulate, int tile, int parts, cudaStream_t s) {
  const int chunks = m1SkinnyChunks(K);
  if (!m1SkinnyAvailable() || !m1SkinnyShapeOk(M, N, K) || (nb != 1 && nb != 2) || (tile != 128 && tile != 256) || parts < 1 || parts > 8 ||
      parts > chunks || (cBf16 && accumulate) || (reinterpret_cast<uintptr_t>(X) | reinterpret_cast<uintptr_t>(W) | reinterpret_cast<uintptr_t>(C)) % 16 != 0 ||
      (nb == 2 && (wStride % 8 != 0 || wStride < N * K || wStride * 2 >= (1LL << 40))))
    return cudaErrorInvalidValue;
  const EncodeTiled enc = encoder();
  const uint32_t mBox = (uint32_t)((M + 7) / 8 * 8);
  CUtensorMap tmX, tmW;
  {
    const cuuint64_t dims[2] = {(cuuint64_t)K, (cuuint64_t)M}, strides[1] = {(cuuint64_t)K * 2};
    const cuuint32_t box[2] = {(cuuint32_t)kSkChunk, mBox}, unit[2] = {1, 1};
    if (enc(&tmX, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<__nv_bfloat16*>(X), dims, strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE,
            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS)
      return cudaErrorInvalidValue;
  }
  {
    const long long bStride = nb == 2 ? wStride : N * K;
    const cuuint64_t dims[3] = {(cuuint64_t)K, (cuuint64_t)N, (cuuint64_t)nb}, strides[2] = {(cuuint64_t)K * 2, (cuuint64_t)bStride * 2};
    const cuuint32_t box[3] = {(cuuint32_t)kSkChunk, (cuuint32_t)tile, 1}, unit[3] = {1, 1, 1};
    if (enc(&tmW, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<__nv_bfloat16*>(W), dims, strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE,
            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS)
      return cudaErrorInvalidValue;
  }
  const long long cBatch = M * N;
  const uint32_t xBytes = mBox * 128u;
  gSkinnyLaunches++;
  static const bool few = envIs("M1_SKINNY_STAGES", "few");
  if (tile == 128)
    return few ? launch<128, 4>(tmX, tmW, C, (int)M, (int)N, nb, chunks, parts, cBf16, accumulate, cBatch, xBytes, s)
               : launch<128, 8>(tmX, tmW, C, (int)M, (int)N, nb, chunks, parts, cBf16, accumulate, cBatch, xBytes, s);
  return few ? launch<256, 3>(tmX, tmW, C, (int)M, (int)N, nb, chunks, parts, cBf16, accumulate, cBatch, xBytes, s)
             : launch<256, 5>(tmX, tmW, C, (int)M, (int)N, nb, chunks, parts, cBf16, accumulate, cBatch, xBytes, s);
}
