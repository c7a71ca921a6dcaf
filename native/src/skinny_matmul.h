// The skinny-product kernel (skinny_matmul.cu): Y = X · Wᵀ for at most 64 activation rows on Hopper, TMA-fed wgmma with K
// split over a cluster. matmul.cpp offers it to the matmul timing next to cuBLASLt's candidates.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

/** compute capability 9.x and the driver's tensor-map encoder reachable */
bool m1SkinnyAvailable();
/** the shapes the kernel takes: 1 ≤ M ≤ 64 rows, N a multiple of 4, K ≥ 64 and a multiple of 8 */
bool m1SkinnyShapeOk(long long M, long long N, long long K);
/** the kernel's launches so far in this process (tests: that a forced product ran on it) */
long long m1SkinnyLaunches();
/** K in 64-element chunks (a K split has at most this many parts) */
int m1SkinnyChunks(long long K);
/**
 * C[b] (+)= X [M, K] · W_bᵀ, b < nb (1 or 2), W_b = W + b · wStride elements, each [N, K] bf16 row-major; C [nb][M, N] f32
 * (accumulate: added to) or bf16. tile: 128 or 256 weight rows a CTA; parts: K split over a cluster of 1–8 CTAs. X, W and
 * C 16-byte aligned. cudaErrorInvalidValue (nothing launched) for anything else.
 */
cudaError_t m1_skinny_matmul(const __nv_bfloat16* X, long long M, long long K, const __nv_bfloat16* W, long long N, int nb, long long wStride,
                             void* C, bool cBf16, bool accumulate, int tile, int parts, cudaStream_t s);
