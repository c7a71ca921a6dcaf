// Shared between addon.cpp, matmul.cpp and the kernel files: the one stream, the caching allocator, the SM count.
#pragma once
#include <cstddef>
#include <stdexcept>
#include <string>
#include <cuda_runtime.h>

cudaStream_t m1Stream();
/** a device buffer of at least `bytes` from the caching allocator (cudaMalloc only on a miss) */
void* m1Alloc(size_t bytes);
/** back to the allocator's free list; stream-ordered reuse is safe because all work is on one stream */
void m1Free(void* p);

/** the current device's SM count, read once (132, an H200's, when it cannot be read) */
inline int m1SmCount() {
  static const int count = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || v <= 0) {
      (void)cudaGetLastError();
      v = 132;
    }
    return v;
  }();
  return count;
}

/** the current device's compute capability major version, read once (0 when it cannot be read) */
inline int m1ComputeMajor() {
  static const int major = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      (void)cudaGetLastError();
      v = 0;
    }
    return v;
  }();
  return major;
}

inline void m1Check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

/**
 * C (+)= op(A) · op(B) with row-major A [aRows, aCols], B [bRows, bCols], C [M, N] f32 — or bf16 (cBf16: the f32 sums
 * rounded to nearest, not accumulating).
 * bf16 operands: the f32 one is rounded to bf16 in a scratch buffer, product in fp32 (tensor cores).
 * f32 × f32, by `f32Precision` (torch.set_float32_matmul_precision's names): 0 "highest" CUBLAS_COMPUTE_32F (no
 * TF32: matches the CPU to f32 rounding), 1 "high" CUBLAS_COMPUTE_32F_FAST_TF32, 2 "medium" both operands rounded to
 * bf16 (the tensor cores' full rate, as autocast does for a weight gradient).
 */
void m1Matmul(const void* A, bool aBf16, long long aRows, long long aCols, bool transA, const void* B, bool bBf16, long long bRows,
              long long bCols, bool transB, void* C, bool cBf16, bool accumulate, int f32Precision);
/**
 * Two products of one activation A [aRows, aCols] with two bf16 weights of one shape [bRows, bCols] (y_i = A·B_iᵀ) as one
 * batched launch; C [2, aRows, bRows], the lower-addressed weight's product first. False (nothing done) where it does not
 * apply: the caller runs two m1Matmul (matmul.cpp says when).
 */
bool m1MatmulPair(const void* A, bool aBf16, long long aRows, long long aCols, const void* B1, const void* B2, bool bBf16, long long bRows,
                  long long bCols, void* C, bool cBf16, int f32Precision);
