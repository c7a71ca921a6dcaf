// Tiled (FlashAttention-2 style) causal GQA attention, forward and backward, f32 in / f32 out /
// f32 FMA compute. Same semantics as m1_attention / m1_attention_bwd (kernels.h), which dispatch
// here when m1_flash_attention_handles() says so and keep their one-warp-per-query kernels for the
// other head dims.
//
// Shapes: q/out/dout/dq [B, T, Hq, Dh], k/v/dk/dv [B, T, Hkv, Dh], lse [B, Hq, T] (natural log),
// segments [B*T] or null (key s is visible to query t iff s ≤ t and segments agree).
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

extern "C" {

/**
 * 1 when the tiled kernels cover this call: Dh ∈ {64, 128}, Hq and B within the grid's y/z limits,
 * and every pointer in `vec4Ptrs` (the tensors the kernels move as float4) 16-byte aligned.
 */
int m1_flash_attention_handles(int B, int Hq, int Dh, const void* const* vec4Ptrs, int nPtrs);

cudaError_t m1_flash_attention(float* out, float* lse, const float* q, const float* k, const float* v, const int* segments,
                               int B, int T, int Hq, int Hkv, int Dh, float scale, cudaStream_t s);

/**
 * The forward with bf16 tensor-core products (flash_attention_tc.cu): q, k, v and P rounded to bf16,
 * f32 accumulation and softmax; k and v are first copied to bf16 scratch from the caching allocator
 * (m1Alloc). Same shapes, outputs and requirements as m1_flash_attention.
 */
cudaError_t m1_flash_attention_bf16(float* out, float* lse, const float* q, const float* k, const float* v, const int* segments,
                                    int B, int T, int Hq, int Hkv, int Dh, float scale, cudaStream_t s);

/** Dbuf[b, h, t] = dout_t · out_t (f32), laid out like lse [B, Hq, T]: the D of the backward */
cudaError_t m1_flash_attention_rowdot(float* Dbuf, const float* dout, const float* out, int B, int T, int Hq, int Dh, cudaStream_t s);

/** Dbuf: scratch of B*Hq*T floats (D = rowsum(dout ∘ out), laid out like lse) */
cudaError_t m1_flash_attention_bwd(float* dq, float* dk, float* dv, float* Dbuf, const float* dout, const float* q, const float* k,
                                   const float* v, const float* out, const float* lse, const int* segments,
                                   int B, int T, int Hq, int Hkv, int Dh, float scale, cudaStream_t s);

/**
 * The backward with bf16 tensor-core products (flash_attention_tc.cu): D = rowsum(dout ∘ out) in f32,
 * then q, k, v, dout rounded to bf16 copies (m1Alloc scratch); S, dP, dQ, dK, dV products in bf16 with
 * f32 accumulation, P and dS in f32 before their own rounding. Same shapes and outputs as m1_flash_attention_bwd.
 * One kernel per 64-key tile (FlashAttention-2): dk and dv are deterministic; dq is summed over the key tiles
 * with atomic adds, so its last bits can differ from run to run.
 */
cudaError_t m1_flash_attention_bwd_bf16(float* dq, float* dk, float* dv, float* Dbuf, const float* dout, const float* q, const float* k,
                                        const float* v, const float* out, const float* lse, const int* segments,
                                        int B, int T, int Hq, int Hkv, int Dh, float scale, cudaStream_t s);

}  // extern "C"

/**
 * Opt a kernel into `bytes` of dynamic shared memory (above the 48 KiB default) and the largest
 * shared-memory carveout (several blocks per SM need it, not a default that favours L1), once per process.
 */
template <typename Kernel>
inline cudaError_t m1AllowSmem(Kernel kernel, size_t bytes, bool& done) {
  if (done) return cudaSuccess;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
  if (e == cudaSuccess) e = cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, (int)cudaSharedmemCarveoutMaxShared);
  if (e == cudaSuccess) done = true;
  return e;
}
