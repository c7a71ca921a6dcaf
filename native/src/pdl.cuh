// Programmatic dependent launch (Hopper): a kernel that calls pdlTrigger() lets a dependent kernel launched with
// cudaLaunchAttributeProgrammaticStreamSerialization (the skinny products, skinny_matmul.cu) start before it ends; that
// kernel waits for this one's results itself (griddepcontrol.wait) before it reads them. For any other next kernel the
// call changes nothing. Called by the decode step's kernels that run right before a weight product.
#pragma once

__device__ __forceinline__ void pdlTrigger() {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
