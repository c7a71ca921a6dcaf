// Tensor-core building blocks on mma.sync.m16n8k16 (bf16 operands, f32 accumulation) and ldmatrix, shared by
// the attention kernels. Fragment layout (lane = 4·gid + quad): A (16 × 16, row-major) a0 = (row gid, k 2quad..+1),
// a1 = (row gid + 8, same k), a2 = (row gid, k 2quad + 8..+9), a3 = (row gid + 8, k + 8); B (16 × 8) b0 = (k 2quad..+1,
// n gid), b1 = (k 2quad + 8..+9, n gid); C (16 × 8) c0, c1 = (row gid, n 2quad, +1), c2, c3 = (row gid + 8, same n).
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
__device__ __forceinline__ uint32_t ld32(const __nv_bfloat16* p) { return *reinterpret_cast<const uint32_t*>(p); }

/**
 * The B operand of an m16n8k16 product from a row-major [k][n] bf16 tile: ldmatrix.trans of the two
 * 8 × 8 blocks at rows k0..k0+7 and k0+8..k0+15, columns n0..n0+7 — lanes 0–15 give the row addresses
 * (row k0 + lane), every lane receives {rows k0 + 2·quad, +1; column n0 + gid} and the same 8 rows on.
 */
__device__ __forceinline__ void ldB_trans(uint32_t& b0, uint32_t& b1, const __nv_bfloat16* rowPtr) {
  const uint32_t addr = (uint32_t)__cvta_generic_to_shared(rowPtr);
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(b0), "=r"(b1) : "r"(addr));
}

/**
 * The B operands of two consecutive k-steps from a row-major [n][k] bf16 tile (rows = the product's n, e.g.
 * keys of K for Q·Kᵀ): one ldmatrix.x4 of the 8 × 8 blocks at columns k0, k0 + 8, k0 + 16, k0 + 24 of rows
 * n0..n0+7. `tile` points at (row n0, column k0); lane l gives the address of row n0 + (l & 7), block l / 8.
 * b0, b1: k-step k0 (columns 2·quad..+1 and +8 of row n0 + gid); b2, b3: k-step k0 + 16 — what two pairs of
 * 32-bit loads gave, in one instruction.
 */
template <int LD>
__device__ __forceinline__ void ldB2steps(uint32_t& b0, uint32_t& b1, uint32_t& b2, uint32_t& b3, const __nv_bfloat16* tile, int lane) {
  const uint32_t addr = (uint32_t)__cvta_generic_to_shared(tile + (lane & 7) * LD + 8 * (lane >> 3));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(b0), "=r"(b1), "=r"(b2), "=r"(b3) : "r"(addr));
}

/**
 * The B operands of two adjacent n-tiles from a row-major [k][n] bf16 tile, by one ldmatrix.x4.trans: `tile`
 * points at (row k0, column n0); lanes 0–15 give rows k0..k0+15 at column n0, lanes 16–31 the same rows at
 * column n0 + 8. b0, b1: n-tile n0 (as ldB_trans); b2, b3: n-tile n0 + 8.
 */
template <int LD>
__device__ __forceinline__ void ldB_trans2tiles(uint32_t& b0, uint32_t& b1, uint32_t& b2, uint32_t& b3, const __nv_bfloat16* tile, int lane) {
  const uint32_t addr = (uint32_t)__cvta_generic_to_shared(tile + (lane & 15) * LD + 8 * (lane >> 4));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(b0), "=r"(b1), "=r"(b2), "=r"(b3) : "r"(addr));
}

/** d += a · b for one m16n8k16 tile (a: 4 regs of bf16 pairs, b: 2, d: 4 floats) */
__device__ __forceinline__ void mma16816(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/**
 * The A operand (16 m × 16 k) of an m16n8k16 product from a row-major [m][k] bf16 tile by one ldmatrix.x4:
 * `tile` points at (row m0, column k0); lane l gives the address of row m0 + (l & 15), column k0 + 8·(l / 16).
 */
template <int LD>
__device__ __forceinline__ void ldA4(uint32_t* a, const __nv_bfloat16* tile, int lane) {
  const uint32_t addr = (uint32_t)__cvta_generic_to_shared(tile + (lane & 15) * LD + 8 * (lane >> 4));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(addr));
}

/** the C fragments of n-tiles 2kk, 2kk + 1 (f32) as the A fragment of k-step kk of the next product */
__device__ __forceinline__ void cToA(uint32_t* a, const float* c0, const float* c1) {
  a[0] = pack2(c0[0], c0[1]);
  a[1] = pack2(c0[2], c0[3]);
  a[2] = pack2(c1[0], c1[1]);
  a[3] = pack2(c1[2], c1[3]);
}

/** acc[d] += A · X for n-tiles d of a row-major [16 k][DH] bf16 block starting at `rows` (ldmatrix.trans) */
template <int DH>
__device__ __forceinline__ void mmaRowsTrans(float (*acc)[4], const uint32_t* a, const __nv_bfloat16* rows, int lane) {
  const __nv_bfloat16* r = rows + (lane & 15) * (DH + 8);
#pragma unroll
  for (int d = 0; d < DH / 8; d++) {
    uint32_t b0, b1;
    ldB_trans(b0, b1, r + 8 * d);
    mma16816(acc[d], a, b0, b1);
  }
}
