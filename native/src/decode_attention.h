// Split-K ("flash-decoding") paged attention for one decode token per sequence.
#pragma once
#include <cstddef>
#include <cuda_runtime.h>

extern "C" {

/**
 * Bytes of device scratch that m1_decode_attention needs for these sizes (0: none, either because
 * all keys fit one chunk or because the shape takes the one-warp-per-head fallback kernel).
 * maxSeqLen: the largest seqLens[i] of the batch.
 */
size_t m1_decode_attention_scratch_bytes(int n, int Hq, int Hkv, int Dh, int cacheBf16, int maxSeqLen);

/**
 * out [n, Hq, Dh] = softmax(scale · q kᵀ) v over the seqLens[i] cached tokens of each sequence,
 * read from the paged caches [numBlocks, blockSize, Hkv, Dh] through blockTables [n, maxBlocks].
 * q [n, Hq, Dh] f32; caches f32 or bf16 (cacheBf16). Sequences with seqLens[i] = 0 give zeros.
 * scratch: a device buffer of m1_decode_attention_scratch_bytes(...) bytes (may be null when that is 0).
 * Head dims that are not a multiple of 8 (or above 256, or caches not 16-byte aligned) go to the
 * older one-warp-per-(sequence, q head) kernel m1_paged_decode.
 */
cudaError_t m1_decode_attention(float* out, void* scratch, const float* q, const void* kCache, const void* vCache, int cacheBf16,
                                const int* blockTables, int maxBlocks, const int* seqLens, int maxSeqLen, int n, int Hq, int Hkv,
                                int Dh, int blockSize, float scale, cudaStream_t s);

}  // extern "C"
