// cp.async (sm_80+): 16-byte global → shared copies that run while the issuing threads go on, waited for
// per commit group. Shared by the kernel files that stage tiles through shared memory.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

/** 16 bytes global → shared, asynchronously (L2 only: `.cg`); `valid` false writes 16 zero bytes (src is not read) */
__device__ __forceinline__ void cpAsync16(void* dst, const void* src, bool valid) {
  const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0));
}
/** 8 bytes global → shared, asynchronously (through L1: `.ca`, the only cache mode below 16 bytes); `valid` false writes zeros */
__device__ __forceinline__ void cpAsync8(void* dst, const void* src, bool valid) {
  const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 8 : 0));
}
/** closes the group of this thread's copies issued since the last commit */
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
/** waits until at most one of this thread's groups is still in flight (the newest) */
__device__ __forceinline__ void cpAsyncWaitOne() { asm volatile("cp.async.wait_group 1;\n" ::); }
/** waits for all of this thread's groups */
__device__ __forceinline__ void cpAsyncWaitAll() { asm volatile("cp.async.wait_group 0;\n" ::); }
