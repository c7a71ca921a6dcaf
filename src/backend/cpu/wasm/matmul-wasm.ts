// The CPU matmul's fast path: C[M,N] (+)= A[M,K] · B[K,N] in WebAssembly SIMD (matmul.wat: 4×8
// register tiles of f32x4 accumulators, the remainders one element at a time). Every element is the
// sum over k in order, in f32 with separate multiply and add roundings, whatever tile or thread
// computes it, so results do not depend on how rows are split across worker threads.
import { WASM_BASE64 } from './matmul.wasm.js';

export type MatmulNN = (a: Float32Array, b: Float32Array, c: Float32Array, M: number, N: number, K: number, accumulate: boolean) => void;

/** most bytes (A + B + C) one call may copy into the instance's memory; larger products use the JS kernel */
export const WASM_MAX_BYTES = 1 << 30;

/**
 * A matmul on a WebAssembly instance of its own (its memory grows to the largest product seen), or
 * null where WebAssembly SIMD is unavailable. Self-contained: the worker threads run its source.
 */
export function createWasmMatmul(base64: string): MatmulNN | null {
  let exports: { memory: WebAssembly.Memory; matmulNN: (...args: number[]) => void };
  try {
    const bytes = Uint8Array.from(atob(base64), (ch) => ch.charCodeAt(0));
    exports = new WebAssembly.Instance(new WebAssembly.Module(bytes), {}).exports as typeof exports;
  } catch {
    return null;
  }
  const mem = exports.memory, kernel = exports.matmulNN;
  return (a, b, c, M, N, K, accumulate) => {
    const cOff = M * K + K * N, need = (cOff + M * N) * 4;
    if (need > mem.buffer.byteLength) mem.grow(Math.ceil((need - mem.buffer.byteLength) / 65536));
    const f = new Float32Array(mem.buffer);
    f.set(a.subarray(0, M * K), 0);
    f.set(b.subarray(0, K * N), M * K);
    if (accumulate) f.set(c.subarray(0, M * N), cOff);
    kernel(0, M * K * 4, cOff * 4, M, N, K, accumulate ? 1 : 0);
    c.set(f.subarray(cOff, cOff + M * N));
  };
}

let cached: MatmulNN | null | undefined;

/** this thread's instance (null: no WebAssembly SIMD here, or M1_CPU_WASM=0) */
export function wasmMatmul(): MatmulNN | null {
  if (cached === undefined) cached = process.env['M1_CPU_WASM'] === '0' ? null : createWasmMatmul(WASM_BASE64);
  return cached;
}
