// Launchers of the m1cuda kernels (kernels.cu), called by the Node-API layer (addon.cpp).
//
// Conventions: every pointer is a device pointer; activations are f32 ([..] shapes in comments
// are row-major); `bf16` arguments point at __nv_bfloat16 storage, passed as void* so this header
// needs no CUDA headers. Host index data (token ids, slots, segment starts, block tables) has been
// uploaded by the caller as int32. Launchers enqueue on `stream` and return the launch error.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

extern "C" {

// ---------- memory / elementwise ----------
cudaError_t m1_cast_f32_bf16(void* dst, const float* src, int64_t n, cudaStream_t s);
cudaError_t m1_cast_bf16_f32(float* dst, const void* src, int64_t n, cudaStream_t s);
cudaError_t m1_fill_f32(float* dst, float v, int64_t n, cudaStream_t s);
cudaError_t m1_fill_bf16(void* dst, float v, int64_t n, cudaStream_t s);
cudaError_t m1_add(float* out, const float* a, const float* b, int64_t n, cudaStream_t s);
cudaError_t m1_axpy(float* dst, const float* src, float alpha, int64_t n, cudaStream_t s);
cudaError_t m1_scale(float* x, float a, int64_t n, cudaStream_t s);
cudaError_t m1_mul(float* out, const float* a, const float* b, int64_t n, cudaStream_t s);
cudaError_t m1_neg_exp(float* out, const float* a, int64_t n, cudaStream_t s);
cudaError_t m1_add_bias(float* out, const float* x, const float* bias, int64_t rows, int64_t C, cudaStream_t s);
cudaError_t m1_sum_rows(float* out, const float* x, int64_t rows, int64_t C, cudaStream_t s);
/** partial sums of squares into `partials` (double[nPartials]); returns nPartials via *count */
/**
 * Σx² of each of nT tensors (device pointers xs[t], sizes[t], f32 or bf16 by bf16[t]; host arrays) into out[t] (device, f64);
 * partials: nT · m1_sum_squares_each_partials() doubles of scratch
 */
int m1_sum_squares_each_partials();
cudaError_t m1_sum_squares_each(double* out, double* partials, const void* const* xs, const int64_t* sizes, const int* bf16, int nT,
                                cudaStream_t s);

// ---------- layout ----------
/** dst[r, dstOff + j] = src[r, srcOff + j] for j < width (any element size in {2, 4}) */
cudaError_t m1_copy_cols(void* dst, int64_t dstStride, int64_t dstOff, const void* src, int64_t srcStride, int64_t srcOff,
                         int64_t rows, int64_t width, int elemBytes, cudaStream_t s);
/** m1_copy_cols from f32 columns to bf16 ones, rounded to nearest */
cudaError_t m1_copy_cols_bf16(void* dst, int64_t dstStride, int64_t dstOff, const float* src, int64_t srcStride, int64_t srcOff, int64_t rows,
                              int64_t width, cudaStream_t s);
cudaError_t m1_repeat_groups(float* out, const float* x, int64_t rows, int64_t inWidth, int64_t width, int64_t repeat, cudaStream_t s);
cudaError_t m1_repeat_groups_bwd(float* dx, const float* dy, int64_t rows, int64_t outWidth, int64_t width, int64_t repeat, cudaStream_t s);

// ---------- embedding / norms / MLP ----------
cudaError_t m1_embedding(float* out, const void* table, int tableBf16, const int* ids, int64_t n, int64_t D, cudaStream_t s);
cudaError_t m1_embedding_bwd(float* dTable, const int* ids, const float* dy, int64_t n, int64_t D, cudaStream_t s);
cudaError_t m1_rmsnorm_bwd(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd, const float* res,
                           int64_t rows, int64_t D, cudaStream_t s);
/** h = silu(gate)·up from f32 or bf16 gate and up (inBf16), stored f32 or bf16 (outBf16) */
cudaError_t m1_swiglu(void* h, int outBf16, const void* gate, const void* up, int inBf16, int64_t n, cudaStream_t s);
/**
 * h = x + r (r may be null: h is then not written), y = rmsnorm(h)·w in f32 or bf16 (outBf16), w f32 or bf16 (wBf16),
 * read directly; rstd (may be null) [rows]: each row's 1 / rms(h), for the backward
 */
cudaError_t m1_add_rmsnorm(float* h, void* y, int outBf16, float* rstd, const float* x, const float* r, const void* w, int wBf16,
                           int64_t rows, int64_t D, float eps, cudaStream_t s);
cudaError_t m1_swiglu_bwd(void* dGate, void* dUp, int outBf16, const float* dh, const float* gate, const float* up, int64_t n, cudaStream_t s);

// ---------- attention ----------
cudaError_t m1_rope(float* out, const float* x, const int* pos, const float* invFreq, int64_t n, int64_t H, int64_t Dh,
                    int inverse, cudaStream_t s);
/** bf16 ≠ 0: the tiled head dims (64, 128) run their products in bf16 on the tensor cores (the f32 kernels otherwise) */
cudaError_t m1_attention(float* out, float* lse, const float* q, const float* k, const float* v, const int* segments,
                         int B, int T, int Hq, int Hkv, int Dh, float scale, int bf16, cudaStream_t s);
cudaError_t m1_attention_bwd(float* dq, float* dk, float* dv, float* Dbuf, const float* dout, const float* q, const float* k,
                             const float* v, const float* out, const float* lse, const int* segments,
                             int B, int T, int Hq, int Hkv, int Dh, float scale, int bf16, cudaStream_t s);
cudaError_t m1_kv_cache_write(void* kCache, void* vCache, int cacheBf16, const float* k, const float* v, const int* slots,
                              int64_t n, int64_t row, cudaStream_t s);
cudaError_t m1_paged_decode(float* out, const float* q, const void* kCache, const void* vCache, int cacheBf16,
                            const int* blockTables, int maxBlocks, const int* seqLens, int n, int Hq, int Hkv, int Dh,
                            int blockSize, float scale, cudaStream_t s);

// ---------- Mamba ----------
/** segStart[b*T + t] = first position of t's segment in row b (null: 0 everywhere) */
cudaError_t m1_conv1d(float* y, const float* x, const float* w, const float* bias, const int* segStart,
                      int B, int T, int C, int K, int silu, cudaStream_t s);
cudaError_t m1_conv1d_state_out(float* convState, const float* x, const int* segStart, const int* slots,
                                int B, int T, int C, int K, cudaStream_t s);
cudaError_t m1_conv1d_step(float* y, const float* x, float* convState, const int* slots, const float* w, const float* bias,
                           int n, int C, int K, int silu, cudaStream_t s);
/** dx, dw [C, K] and dbias [C] (may be null) of the causal conv (+ SiLU when silu), in one pass over dy and x */
cudaError_t m1_conv1d_bwd(float* dx, float* dw, float* dbias, const float* dy, const float* x, const float* w, const float* bias,
                          const int* segStart, int B, int T, int C, int K, int silu, cudaStream_t s);

/** scratch of the forward's time chunks (0 when it runs as one chunk) */
int64_t m1_selective_scan_scratch_floats(int B, int T, int Di, int N);
/**
 * Checkpoints for the backward: the state entering each of its time chunks, [B, K, Di, N] (0 floats when it runs
 * as one chunk). m1_selective_scan writes them when ckpt is given; m1_selective_scan_bwd given them skips its
 * forward chunk pass and carry.
 */
int64_t m1_selective_scan_checkpoint_floats(int B, int T, int Di, int N, int G);
/** y: f32, or bf16 when yBf16 (rounded as stored: y feeds out_proj's bf16 product) */
cudaError_t m1_selective_scan(void* y, int yBf16, const float* x, const float* delta, const float* A, const float* Bm, const float* Cm,
                              const float* D, const float* z, const float* deltaBias, const int* segStart,
                              float* ssmState, const int* slots, float* scratch, float* ckpt, int B, int T, int Di, int N, int G,
                              cudaStream_t s);
cudaError_t m1_selective_scan_step(float* y, const float* x, const float* delta, const float* A, const float* Bm,
                                   const float* Cm, const float* D, const float* z, const float* deltaBias,
                                   float* ssmState, const int* slots, int n, int Di, int N, int G, cudaStream_t s);
/**
 * mamba1DecodeStep (backend.ts) in one kernel: proj [n, P] = z | x' | B' | C | δ rows, deltaLow [n, Di],
 * conv state [S, Di, K−1] and ssm state [S, Di, N] updated at slots. _handles: 1 when N ∈ {4, 8, 16, 32},
 * the groups divide evenly, P % 4 == 0 and every pointer in vec4Ptrs is 16-byte aligned.
 */
int m1_mamba1_decode_step_handles(int Di, int dXb, int N, int P, const void* const* vec4Ptrs, int nPtrs);
/**
 * y [n, Di] f32 or bf16 (outBf16); proj f32 or bf16 (projBf16: a bf16 in_proj output); dtBias, convW, convBias, D f32 or bf16 by the bits 1, 2, 4, 8 of wBf16; aLog [Di, N]
 * is A_log as stored (A = −exp(A_log) is taken in the kernel); convSt and ssmSt f32, or both bf16 when stBf16 (updated in
 * f32, stored rounded, y from the f32 values)
 */
cudaError_t m1_mamba1_decode_step(void* y, int outBf16, const void* proj, int projBf16, const float* deltaLow, const void* dtBias,
                                  void* convSt, const void* convW, const void* convBias, const float* aLog, const void* D, int wBf16,
                                  void* ssmSt, int stBf16, const int* slots, int nTok, int Di, int dXb, int N, int P, int K, cudaStream_t s);
/** the SSD backward's ckpt / hs: scratch of m1_scan_bwd_scratch_floats(B*H*P, T, N) floats */
int64_t m1_scan_bwd_scratch_floats(int64_t threads, int T, int N);
/** scratch of m1_selective_scan_bwd_scratch_floats floats; dA, dBm, dCm, dD, dDb zeroed by the launcher */
int64_t m1_selective_scan_bwd_scratch_floats(int B, int T, int Di, int N, int G);
cudaError_t m1_selective_scan_bwd(float* dx, float* ddelta, float* dA, float* dBm, float* dCm, float* dD, float* dz,
                                  float* dDb, float* scratch, const float* dy, const float* x, const float* delta,
                                  const float* A, const float* Bm, const float* Cm, const float* D, const float* z,
                                  const float* deltaBias, const int* segStart, const float* ckpt, int B, int T, int Di, int N,
                                  int G, cudaStream_t s);

cudaError_t m1_ssd_scan(float* y, const float* x, const float* dt, const float* A, const float* Bm, const float* Cm,
                        const float* D, const float* dtBias, const int* segStart, float* ssmState, const int* slots,
                        int B, int T, int H, int P, int G, int N, cudaStream_t s);
cudaError_t m1_ssd_scan_step(float* y, const float* x, const float* dt, const float* A, const float* Bm, const float* Cm,
                             const float* D, const float* dtBias, float* ssmState, const int* slots,
                             int n, int H, int P, int G, int N, cudaStream_t s);
cudaError_t m1_ssd_scan_bwd(float* dx, float* ddt, float* dA, float* dBm, float* dCm, float* dD, float* dDtBias,
                            float* scratch, const float* dy, const float* x, const float* dt, const float* A,
                            const float* Bm, const float* Cm, const float* D, const float* dtBias, const int* segStart,
                            int B, int T, int H, int P, int G, int N, cudaStream_t s);

cudaError_t m1_gated_rmsnorm(float* out, const float* y, const float* z, const float* w, int64_t n, int64_t D, int64_t group,
                             float eps, cudaStream_t s);
/** rstd: scratch [n / group] */
cudaError_t m1_gated_rmsnorm_bwd(float* dy, float* dz, float* dw, float* rstd, const float* dout, const float* y, const float* z,
                                 const float* w, int64_t n, int64_t D, int64_t group, float eps, cudaStream_t s);

// ---------- logits ----------
cudaError_t m1_log_softmax(float* out, const float* x, int64_t rows, int64_t V, cudaStream_t s);
/** scratch: m1_argmax_scratch_bytes(rows, V) bytes */
int64_t m1_argmax_scratch_bytes(int64_t rows, int64_t V);
cudaError_t m1_argmax_rows(int* ids, float* logprobs, const float* x, int64_t rows, int64_t V, void* scratch, cudaStream_t s);
cudaError_t m1_gather_logprobs(float* out, const float* x, const int* targets, int64_t rows, int64_t V, cudaStream_t s);
/** rowLoss[r] = lse − x[target] on rows with mask (0 elsewhere); dlogits = (softmax − onehot)·invCount on those rows */
cudaError_t m1_cross_entropy(float* rowLoss, float* dlogits, const float* x, const int* targets, const int* mask,
                             int64_t rows, int64_t V, float invCount, cudaStream_t s);

// ---------- training ----------
/** fused LM-head pass 1: stats [rows, 4] = (m, s, w, zt) merged with the logits chunk x [rows, Vc]; other, targets optional */
cudaError_t m1_softmax_chunk_stats(float* stats, const float* x, const float* other, const int* targets, int64_t rows, int64_t Vc,
                                  float scale, int64_t vocabOffset, cudaStream_t s);
/** fused LM-head pass 2: dl [rows, Vc] from x [rows, Vc] and coefs [rows, 4] = (lse, c0, c2, ct); other, targets optional */
cudaError_t m1_softmax_chunk_grad(float* dl, const float* x, const float* coefs, const float* other, const int* targets, int64_t rows,
                                 int64_t Vc, float scale, int64_t vocabOffset, cudaStream_t s);
/**
 * AdamW in place on w (f32: master or param); when paramOut != null it receives w rounded to bf16 (paramBf16) or f32.
 * bad (f32 [1] or null): something ≥ 1 is added when a stored weight is not finite (the stored, rounded value).
 */
cudaError_t m1_adamw(float* w, void* paramOut, int paramBf16, const float* grad, float* m, float* v, int64_t n, float b1, float b2,
                     float eps, float decay, float stepSize, float sqrtBc2, float* bad, cudaStream_t s);

}  // extern "C"
