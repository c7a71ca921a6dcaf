// Matmuls through cuBLASLt. Row-major C = op(A)·op(B) is computed as the column-major product
// Cᵀ = op(B)ᵀ·op(A)ᵀ: a row-major [r, c] buffer read column-major is its transpose, so no data moves.
// Descriptors and the algorithm are cached per problem shape: after the first call of a shape, a
// matmul allocates nothing and makes no heuristic query. The algorithm: the heuristic's first choice,
// or — for skinny products (at most kTuneMaxRows activation rows and kTuneMaxOutBytes of output: the decode
// step's up to batch 256), on their first call outside a graph capture — the fastest of the heuristic's first
// kTuneCandidates and of their K-split variants (2–8 parts), timed on the device from a cold L2.
// M1_MATMUL_TUNE=0 turns this off; =verbose prints each choice; =all times every shape (the training step's too);
// =nosplit offers no K splits; tokens combine (all,verbose). C is f32, or bf16 (cBf16: the f32 sums rounded to nearest in
// the epilogue, for a product whose output feeds bf16 consumers; not accumulated into). A skinny product is timed once per power-of-two bucket
// of its row count (the first count seen in the bucket); the bucket's other counts reuse that choice. H200, decode steps with graphs: M1-3B batch 8 / 64 /
// 256 3.20 / 3.84 / 5.91 → 3.12 / 3.71 / 5.78 ms with timing (eighth session); the K splits, same call: 3.13 / 3.74
// / 5.88 → 3.01 / 3.57 / 5.75 ms (ninth). At batch 512 the timed choice was no faster (9.19 → 9.21 ms); the row
// limit leaves those products to the heuristic. Training (M1_MATMUL_TUNE=all, what bench:train sets): 0.751 →
// 0.740 s a step.
#include <cublasLt.h>
#include <cuda_bf16.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <map>
#include <tuple>
#include <vector>

#include "kernels.h"
#include "runtime.h"

namespace {

void checkLt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw std::runtime_error(std::string("cuBLASLt ") + what + " failed with status " + std::to_string((int)s));
}

constexpr size_t kWorkspaceBytes = 32u << 20;
constexpr int kTuneCandidates = 8;
constexpr size_t kTuneMaxOutBytes = 64u << 20;
constexpr long long kTuneMaxRows = 256;  // rows of the activation (Lt's n): decode batches up to 256

// (bf16, tf32, cBf16, transa, transb, m, n, k, lda, ldb, strideA): a plan's problem; with n replaced by its row bucket (and
// strideA by 1 when nonzero), a timing's. strideA ≠ 0: a batch of two products sharing Lt's B (our activation), Lt's A
// (our weight) at A and A + strideA elements, the outputs one after the other (m1MatmulPair)
using ShapeKey = std::tuple<bool, bool, bool, bool, bool, long long, long long, long long, long long, long long, long long>;

/** the power-of-two bucket (b/2, b] of n activation rows: one timing serves every row count of a bucket */
long long rowBucket(long long n) {
  long long b = 1;
  while (b < n) b <<= 1;
  return b;
}

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  std::vector<cublasLtMatmulAlgo_t> candidates;  // the heuristic's choices, best first, until timed
  std::vector<int> splits;                        // each candidate's K split (1: as the heuristic gave it)
  int chosenSplit = 1;
  int batch = 1;                                  // 2: a pair (strideA ≠ 0)
  long long kDim = 0;                             // the product's inner size (for the timing's report)
  bool unavailable = false;                       // a pair cuBLASLt has no algorithm for
  bool bucketed = false;                          // a skinny product: its timing is kept for its row bucket
  ShapeKey bucket{};
};

struct Lt {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::map<ShapeKey, Plan> plans;
  // skinny products: the algorithm timed for the first row count of each bucket, reused (when cublasLtMatmulAlgoCheck
  // accepts it) by the bucket's other row counts — a decode batch that shrinks request by request times each product
  // once per power of two, not once per batch size
  std::map<ShapeKey, cublasLtMatmulAlgo_t> tuned;
};

Lt& lt() {
  static Lt* inst = [] {
    auto* l = new Lt();
    checkLt(cublasLtCreate(&l->handle), "create");
    m1Check(cudaMalloc(&l->workspace, kWorkspaceBytes), "cudaMalloc(cuBLASLt workspace)");
    return l;
  }();
  return *inst;
}

Plan& planFor(bool bf16, bool tf32, bool cBf16, bool ta, bool tb, long long m, long long n, long long k, long long lda, long long ldb,
             long long strideA = 0) {
  Lt& L = lt();
  const ShapeKey key = std::make_tuple(bf16, tf32, cBf16, ta, tb, m, n, k, lda, ldb, strideA);
  auto it = L.plans.find(key);
  if (it != L.plans.end()) return it->second;
  Plan p;
  p.batch = strideA != 0 ? 2 : 1;
  p.kDim = k;
  cudaDataType_t ab = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  checkLt(cublasLtMatmulDescCreate(&p.op, tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc");
  cublasOperation_t opA = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opB = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  checkLt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &opA, sizeof(opA)), "transa");
  checkLt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &opB, sizeof(opB)), "transb");
  // stored (pre-op) shapes, column-major
  checkLt(cublasLtMatrixLayoutCreate(&p.a, ab, ta ? k : m, ta ? m : k, lda), "layout A");
  checkLt(cublasLtMatrixLayoutCreate(&p.b, ab, tb ? n : k, tb ? k : n, ldb), "layout B");
  checkLt(cublasLtMatrixLayoutCreate(&p.c, cBf16 ? CUDA_R_16BF : CUDA_R_32F, m, n, m), "layout C");
  if (strideA != 0) {  // the pair: two A matrices, B shared (stride 0), the two C one after the other
    const int32_t two = 2;
    const int64_t sa = strideA, sb = 0, sc = m * n;
    for (cublasLtMatrixLayout_t l : {p.a, p.b, p.c})
      checkLt(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &two, sizeof(two)), "batch count");
    checkLt(cublasLtMatrixLayoutSetAttribute(p.a, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sa, sizeof(sa)), "batch stride A");
    checkLt(cublasLtMatrixLayoutSetAttribute(p.b, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sb, sizeof(sb)), "batch stride B");
    checkLt(cublasLtMatrixLayoutSetAttribute(p.c, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sc, sizeof(sc)), "batch stride C");
  }
  cublasLtMatmulPreference_t pref;
  checkLt(cublasLtMatmulPreferenceCreate(&pref), "preference");
  size_t ws = kWorkspaceBytes;
  checkLt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)), "workspace pref");
  cublasLtMatmulHeuristicResult_t res[kTuneCandidates]{};
  int found = 0;
  const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(L.handle, p.op, p.a, p.b, p.c, p.c, pref, kTuneCandidates, res, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (strideA != 0 && (hs != CUBLAS_STATUS_SUCCESS || found == 0)) {  // no batched algorithm: the caller runs two products
    p.unavailable = true;
    return L.plans.emplace(key, p).first->second;
  }
  checkLt(hs, "heuristic");
  if (found == 0) throw std::runtime_error("cuBLASLt found no algorithm for this matmul shape");
  p.algo = res[0].algo;
  const char* env = std::getenv("M1_MATMUL_TUNE");
  const bool off = env && std::strcmp(env, "0") == 0, all = env && std::strstr(env, "all") != nullptr;
  const bool skinny = n <= kTuneMaxRows && (size_t)m * n * sizeof(float) <= kTuneMaxOutBytes;
  if (!off && skinny) {
    p.bucketed = true;
    p.bucket = std::make_tuple(bf16, tf32, cBf16, ta, tb, m, rowBucket(n), k, lda, ldb, strideA != 0 ? 1LL : 0LL);
    auto t = L.tuned.find(p.bucket);
    if (t != L.tuned.end()) {
      cublasLtMatmulHeuristicResult_t chk{};
      if (cublasLtMatmulAlgoCheck(L.handle, p.op, p.a, p.b, p.c, p.c, &t->second, &chk) == CUBLAS_STATUS_SUCCESS &&
          chk.workspaceSize <= kWorkspaceBytes) {
        p.algo = t->second;  // timed for another row count of this bucket: no timing of its own
        return L.plans.emplace(key, p).first->second;
      }
    }
  }
  if (!off && (all || skinny)) {
    for (int i = 0; i < found; i++) {
      p.candidates.push_back(res[i].algo);
      p.splits.push_back(1);
    }
    // Skinny products (few activation rows) leave most SMs idle with the heuristic's tiles: the output is a
    // handful of tiles, each walking all of K. The heuristic offers no K split for them, so each candidate
    // that supports one is also offered split 2–8 ways over K (sums reduced in the workspace), if
    // cublasLtMatmulAlgoCheck accepts it within the workspace; the timing below picks among all of them.
    if (skinny && !(env && std::strstr(env, "nosplit") != nullptr)) {
      for (int i = 0; i < found; i++) {
        int32_t sk = 0;
        uint32_t mask = 0;
        size_t w = 0;
        if (cublasLtMatmulAlgoCapGetAttribute(&res[i].algo, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &sk, sizeof(sk), &w) != CUBLAS_STATUS_SUCCESS || !sk) continue;
        if (cublasLtMatmulAlgoCapGetAttribute(&res[i].algo, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK, &mask, sizeof(mask), &w) != CUBLAS_STATUS_SUCCESS) continue;
        uint32_t scheme = (mask & CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE) ? CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE
                          : (mask & CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE) ? CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE
                          : (mask & CUBLASLT_REDUCTION_SCHEME_INPLACE) ? CUBLASLT_REDUCTION_SCHEME_INPLACE : 0u;
        if (!scheme) continue;
        for (uint32_t parts : {2u, 3u, 4u, 6u, 8u}) {
          if ((long long)parts * 256 > k) break;  // at least 256 of K per part
          cublasLtMatmulAlgo_t a = res[i].algo;
          if (cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &parts, sizeof(parts)) != CUBLAS_STATUS_SUCCESS) continue;
          if (cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme, sizeof(scheme)) != CUBLAS_STATUS_SUCCESS) continue;
          cublasLtMatmulHeuristicResult_t chk{};
          if (cublasLtMatmulAlgoCheck(L.handle, p.op, p.a, p.b, p.c, p.c, &a, &chk) != CUBLAS_STATUS_SUCCESS || chk.workspaceSize > kWorkspaceBytes) continue;
          p.candidates.push_back(a);
          p.splits.push_back((int)parts);
        }
      }
    }
    if (p.candidates.size() < 2) {
      p.candidates.clear();
      p.splits.clear();
    }
  }
  return L.plans.emplace(key, p).first->second;
}

/**
 * Times each candidate algorithm on this product (into a scratch output, so C is untouched: accumulating
 * calls stay correct) and keeps the fastest: one warm-up run each, then the minimum of 3 timed runs, each after an L2 flush.
 * Not during a graph capture (the timing synchronizes); the plan keeps the heuristic's choice until a call
 * outside a capture tunes it. A candidate that fails to run is skipped.
 */
void tune(Plan& p, const void* B, const void* A, long long M, long long N, cudaStream_t s) {
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(s, &cap) != cudaSuccess || cap != cudaStreamCaptureStatusNone) return;
  Lt& L = lt();
  // each timed run starts with a cold L2 (twice its size overwritten first), as in a model step where the
  // weights stream from memory; back-to-back runs would find the weights in L2 and favour other algorithms
  int dev = 0, l2 = 0;
  m1Check(cudaGetDevice(&dev), "tune device");
  m1Check(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev), "tune L2 size");
  const size_t flushBytes = 2 * (size_t)l2;
  void* flush = m1Alloc(flushBytes);
  void* out = m1Alloc(sizeof(float) * (size_t)M * (size_t)N * p.batch);  // room for an f32 or a bf16 output
  cudaEvent_t e0, e1;
  m1Check(cudaEventCreate(&e0), "tune event");
  m1Check(cudaEventCreate(&e1), "tune event");
  const float alpha = 1.f, beta = 0.f;
  float best = 1e30f, first = -1.f;
  int bestIdx = -1, idx = -1;
  for (const cublasLtMatmulAlgo_t& algo : p.candidates) {
    idx++;
    auto run = [&] { return cublasLtMatmul(L.handle, p.op, &alpha, B, p.a, A, p.b, &beta, out, p.c, out, p.c, &algo, L.workspace, kWorkspaceBytes, s); };
    if (run() != CUBLAS_STATUS_SUCCESS) continue;
    float t = 1e30f;
    for (int r = 0; r < 3; r++) {
      m1Check(cudaMemsetAsync(flush, r, flushBytes, s), "tune L2 flush");
      m1Check(cudaEventRecord(e0, s), "tune event");
      const cublasStatus_t st = run();
      m1Check(cudaEventRecord(e1, s), "tune event");
      m1Check(cudaEventSynchronize(e1), "tune event");
      float ms = 0.f;
      m1Check(cudaEventElapsedTime(&ms, e0, e1), "tune event");
      if (st == CUBLAS_STATUS_SUCCESS && ms < t) t = ms;
    }
    if (idx == 0) first = t;
    if (t < best) {
      best = t;
      bestIdx = idx;
      p.algo = algo;
      p.chosenSplit = p.splits[idx];
    }
  }
  if (p.bucketed) L.tuned[p.bucket] = p.algo;
  const char* env = std::getenv("M1_MATMUL_TUNE");
  if (env && std::strstr(env, "verbose") != nullptr) {
    int32_t id = -1;
    uint32_t tile = 0, stages = 0;
    size_t w = 0;
    (void)cublasLtMatmulAlgoConfigGetAttribute(&p.algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof(id), &w);
    (void)cublasLtMatmulAlgoConfigGetAttribute(&p.algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile), &w);
    (void)cublasLtMatmulAlgoConfigGetAttribute(&p.algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof(stages), &w);
    std::fprintf(stderr, "m1 matmul timing: rows %lld × cols %lld × k %lld%s: %zu candidates, heuristic's first %.1f µs, chose #%d %.1f µs (algo %d, tile %u, stages %u, K split %d)\n",
                 M, N, p.kDim, p.batch == 2 ? " (pair)" : "", p.candidates.size(), first * 1e3f, bestIdx, best * 1e3f, id, tile, stages, p.chosenSplit);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  m1Free(out);
  m1Free(flush);
  p.candidates.clear();
  p.splits.clear();
}

}  // namespace

void m1Matmul(const void* A, bool aBf16, long long aRows, long long aCols, bool transA, const void* B, bool bBf16, long long bRows,
              long long bCols, bool transB, void* C, bool cBf16, bool accumulate, int f32Precision) {
  long long M = transA ? aCols : aRows, K = transA ? aRows : aCols, N = transB ? bRows : bCols;
  cudaStream_t s = m1Stream();
  if (cBf16 && accumulate) throw std::runtime_error("matmul: a bf16 output cannot be accumulated into");
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate) m1Check(cudaMemsetAsync(C, 0, (cBf16 ? 2 : sizeof(float)) * M * N, s), "matmul zero fill");
    return;
  }
  bool bothF32 = !aBf16 && !bBf16;
  bool bf16 = !bothF32 || f32Precision == 2;
  bool tf32 = bothF32 && f32Precision == 1;
  void* scratch[2] = {nullptr, nullptr};
  // round each f32 operand of a bf16 product (the activation; both for "medium") to bf16: the tensor cores' input
  if (bf16 && !aBf16) {
    scratch[0] = m1Alloc(sizeof(__nv_bfloat16) * aRows * aCols);
    m1Check(m1_cast_f32_bf16(scratch[0], (const float*)A, aRows * aCols, s), "matmul operand cast");
    A = scratch[0];
  }
  if (bf16 && !bBf16) {
    scratch[1] = m1Alloc(sizeof(__nv_bfloat16) * bRows * bCols);
    m1Check(m1_cast_f32_bf16(scratch[1], (const float*)B, bRows * bCols, s), "matmul operand cast");
    B = scratch[1];
  }
  // column-major view: Lt's A is our B (stored [bCols × bRows]), Lt's B is our A (stored [aCols × aRows])
  Plan& p = planFor(bf16, tf32, cBf16, transB, transA, N, M, K, bCols, aCols);
  if (!p.candidates.empty()) tune(p, B, A, M, N, s);
  float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
  Lt& L = lt();
  cublasStatus_t st = cublasLtMatmul(L.handle, p.op, &alpha, B, p.a, A, p.b, &beta, C, p.c, C, p.c, &p.algo, L.workspace,
                                     kWorkspaceBytes, s);
  for (void* q : scratch) if (q) m1Free(q);
  checkLt(st, "matmul");
}

/**
 * y1 = A·B1ᵀ and y2 = A·B2ᵀ (B1, B2 bf16 weights of one shape [bRows, bCols]: gate and up) as one cuBLASLt launch, a
 * batch of two whose weights are B1 and B1 + (B2 − B1): twice the output tiles of one product, so a skinny product
 * (decode) spreads over twice the SMs, and one launch instead of two. C holds the two outputs one after the other,
 * [2, aRows, bRows], the product with the lower-addressed weight first. Returns false, having done nothing, where it
 * does not apply (weights not both bf16 and 16-byte apart, the second below the first's end, cuBLASLt without a
 * batched algorithm, M1_MATMUL_PAIR=0): the caller runs two products.
 */
bool m1MatmulPair(const void* A, bool aBf16, long long aRows, long long aCols, const void* B1, const void* B2, bool bBf16, long long bRows,
                  long long bCols, void* C, bool cBf16, int f32Precision) {
  static const bool off = [] {
    const char* e = std::getenv("M1_MATMUL_PAIR");
    return e && std::strcmp(e, "0") == 0;
  }();
  if (off || !bBf16 || aCols != bCols || aRows == 0 || bRows == 0 || aCols == 0) return false;
  const char *lo = static_cast<const char*>(B1 < B2 ? B1 : B2), *hi = static_cast<const char*>(B1 < B2 ? B2 : B1);
  const long long gap = (long long)(hi - lo), bytes = bRows * bCols * (long long)sizeof(__nv_bfloat16);
  if (gap % 16 != 0 || gap < bytes || gap >= (1LL << 40)) return false;  // (2^40: TMA's largest stride)
  // column-major view as in m1Matmul (transB: Lt's A is the weight, transposed): m = bRows, n = aRows, k = aCols
  Plan& p = planFor(true, false, cBf16, true, false, bRows, aRows, aCols, bCols, aCols, gap / (long long)sizeof(__nv_bfloat16));
  if (p.unavailable) return false;
  cudaStream_t s = m1Stream();
  void* scratch = nullptr;
  if (!aBf16) {  // the activation rounded once for both products
    scratch = m1Alloc(sizeof(__nv_bfloat16) * aRows * aCols);
    m1Check(m1_cast_f32_bf16(scratch, (const float*)A, aRows * aCols, s), "matmul operand cast");
    A = scratch;
  }
  (void)f32Precision;  // bf16 weights: the product is bf16 at any precision
  if (!p.candidates.empty()) tune(p, lo, A, aRows, bRows, s);
  const float alpha = 1.f, beta = 0.f;
  Lt& L = lt();
  const cublasStatus_t st = cublasLtMatmul(L.handle, p.op, &alpha, lo, p.a, A, p.b, &beta, C, p.c, C, p.c, &p.algo, L.workspace,
                                           kWorkspaceBytes, s);
  if (scratch) m1Free(scratch);
  if (st != CUBLAS_STATUS_SUCCESS) {  // refused at launch (nothing ran): this pair runs as two products from now on
    p.unavailable = true;
    return false;
  }
  return true;
}
