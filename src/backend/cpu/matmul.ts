// Blocked f32 matmul kernels for the CPU backend. matmulGeneral runs the WebAssembly SIMD kernel
// (wasm/matmul.wat, C = A·B with B as [K, N], f32 sums) where WebAssembly SIMD is available, and
// the JavaScript kernel below (f64 register accumulators) otherwise or for products over 1 GiB.
//
// Everything is reduced to one kernel, C[M, N] (+)= A[M, K] · B[N, K]ᵀ ("NT"): both operands are then
// read along contiguous rows, and a 4×4 register block does 16 multiply-adds for every 8 loads.
// Other layouts are first transposed into NT form (an O(MK) or O(KN) copy against O(MKN) work).
// Blocking over K keeps a panel of B rows in L1/L2 while all rows of A stream past it.
import { matmulNNParallel, matmulNTParallel } from './parallel.js';
import { WASM_MAX_BYTES, wasmMatmul } from './wasm/matmul-wasm.js';

export const K_BLOCK = 256;
/** rows from which x·Wᵀ goes to the WebAssembly kernel despite transposing W: at N = K = 3072 the transpose costs as much as ~100 rows of product (bench:cpu, 2026-11-28) */
const WASM_MIN_ROWS_TRANSPOSED = 128;
/** …for weights of at least this many elements (smaller ones transpose in microseconds) */
const WASM_TRANSPOSE_ELEMS = 1 << 18;
export const N_BLOCK = 64;

/** C[M,N] (+)= A[M,K] · Bt[N,K]ᵀ, all row-major and contiguous */
export function matmulNT(
  a: Float32Array, bt: Float32Array, c: Float32Array,
  M: number, N: number, K: number, accumulate: boolean,
): void {
  if (!accumulate) c.fill(0, 0, M * N);
  if (M === 0 || N === 0 || K === 0) return;
  for (let k0 = 0; k0 < K; k0 += K_BLOCK) {
    const k1 = Math.min(K, k0 + K_BLOCK);
    for (let n0 = 0; n0 < N; n0 += N_BLOCK) {
      const n1 = Math.min(N, n0 + N_BLOCK);
      let m = 0;
      for (; m + 4 <= M; m += 4) {
        const a0 = m * K, a1 = a0 + K, a2 = a1 + K, a3 = a2 + K;
        let n = n0;
        for (; n + 4 <= n1; n += 4) {
          const b0 = n * K, b1 = b0 + K, b2 = b1 + K, b3 = b2 + K;
          let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
          let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
          for (let k = k0; k < k1; k++) {
            const x0 = a[a0 + k]!, x1 = a[a1 + k]!, x2 = a[a2 + k]!, x3 = a[a3 + k]!;
            const y0 = bt[b0 + k]!, y1 = bt[b1 + k]!, y2 = bt[b2 + k]!, y3 = bt[b3 + k]!;
            c00 += x0 * y0; c01 += x0 * y1; c02 += x0 * y2; c03 += x0 * y3;
            c10 += x1 * y0; c11 += x1 * y1; c12 += x1 * y2; c13 += x1 * y3;
            c20 += x2 * y0; c21 += x2 * y1; c22 += x2 * y2; c23 += x2 * y3;
            c30 += x3 * y0; c31 += x3 * y1; c32 += x3 * y2; c33 += x3 * y3;
          }
          let o = m * N + n;
          c[o] += c00; c[o + 1] += c01; c[o + 2] += c02; c[o + 3] += c03; o += N;
          c[o] += c10; c[o + 1] += c11; c[o + 2] += c12; c[o + 3] += c13; o += N;
          c[o] += c20; c[o + 1] += c21; c[o + 2] += c22; c[o + 3] += c23; o += N;
          c[o] += c30; c[o + 1] += c31; c[o + 2] += c32; c[o + 3] += c33;
        }
        for (; n < n1; n++) {
          const b0 = n * K;
          let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
          for (let k = k0; k < k1; k++) {
            const y = bt[b0 + k]!;
            s0 += a[a0 + k]! * y; s1 += a[a1 + k]! * y; s2 += a[a2 + k]! * y; s3 += a[a3 + k]! * y;
          }
          c[m * N + n] += s0; c[(m + 1) * N + n] += s1; c[(m + 2) * N + n] += s2; c[(m + 3) * N + n] += s3;
        }
      }
      for (; m < M; m++) {
        const a0 = m * K;
        let n = n0;
        for (; n + 4 <= n1; n += 4) {
          const b0 = n * K, b1 = b0 + K, b2 = b1 + K, b3 = b2 + K;
          let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
          for (let k = k0; k < k1; k++) {
            const x = a[a0 + k]!;
            s0 += x * bt[b0 + k]!; s1 += x * bt[b1 + k]!; s2 += x * bt[b2 + k]!; s3 += x * bt[b3 + k]!;
          }
          const o = m * N + n;
          c[o] += s0; c[o + 1] += s1; c[o + 2] += s2; c[o + 3] += s3;
        }
        for (; n < n1; n++) {
          const b0 = n * K;
          let s = 0;
          for (let k = k0; k < k1; k++) s += a[a0 + k]! * bt[b0 + k]!;
          c[m * N + n] += s;
        }
      }
    }
  }
}

/** out[C, R] = in[R, C]ᵀ, in 32×32 tiles */
export function transpose2d(src: Float32Array, rows: number, cols: number): Float32Array {
  const dst = new Float32Array(rows * cols);
  const T = 32;
  for (let r0 = 0; r0 < rows; r0 += T) {
    const r1 = Math.min(rows, r0 + T);
    for (let c0 = 0; c0 < cols; c0 += T) {
      const c1 = Math.min(cols, c0 + T);
      for (let r = r0; r < r1; r++) {
        for (let c = c0; c < c1; c++) dst[c * rows + r] = src[r * cols + c]!;
      }
    }
  }
  return dst;
}

/** General C (+)= op(A) · op(B) over 2-D views; see Backend.matmul for the conventions. */
export function matmulGeneral(
  a: Float32Array, aRows: number, aCols: number, transA: boolean,
  b: Float32Array, bRows: number, bCols: number, transB: boolean,
  c: Float32Array, accumulate: boolean,
): { M: number; N: number; K: number } {
  const M = transA ? aCols : aRows;
  const K = transA ? aRows : aCols;
  const Kb = transB ? bCols : bRows;
  const N = transB ? bRows : bCols;
  if (K !== Kb) throw new Error(`matmul: inner dimensions differ (${K} vs ${Kb})`);
  const am = transA ? transpose2d(a, aRows, aCols) : a;
  // B given as [N, K] (x·Wᵀ) must be transposed for the WebAssembly kernel: O(N·K) that only pays off
  // against O(M·N·K) when M is not small; a few rows through a large weight stay on the JavaScript NT kernel
  const transposeTooCostly = transB && M < WASM_MIN_ROWS_TRANSPOSED && N * K >= WASM_TRANSPOSE_ELEMS;
  if (wasmMatmul() !== null && !transposeTooCostly && (M * K + K * N + M * N) * 4 <= WASM_MAX_BYTES) {
    // the WebAssembly SIMD kernel wants B as [K, N]
    matmulNNParallel(am, transB ? transpose2d(b, bRows, bCols) : b, c, M, N, K, accumulate);
    return { M, N, K };
  }
  const bt = transB ? b : transpose2d(b, bRows, bCols);
  matmulNTParallel(am, bt, c, M, N, K, accumulate);
  return { M, N, K };
}
