// Shared by the CUDA tests: the two backends, the availability gate, and comparison helpers.
import { expect } from 'vitest';
import type { Backend } from '../../src/backend/backend.js';
import { CpuBackend } from '../../src/backend/cpu/index.js';
import { cudaAvailability, CudaBackend } from '../../src/backend/cuda/index.js';
import type { DType, Tensor } from '../../src/backend/tensor.js';
import { Rng } from '../../src/util/rng.js';

const avail = cudaAvailability();
export const available = avail.available;
export const skipReason = avail.available ? '' : avail.reason;
if (!avail.available) console.log(`CUDA tests skipped: ${avail.reason}`);

export const cpu = new CpuBackend();
export const gpu: CudaBackend | null = avail.available ? new CudaBackend() : null;

/** a pair of tensors with equal values on both backends */
export interface Pair { c: Tensor; g: Tensor; data: Float32Array }

export function rand(shape: number[], seed: number, scale = 1, dtype: DType = 'f32'): Pair {
  const rng = new Rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = rng.normal() * scale;
  return { c: cpu.fromArray(data, shape, dtype), g: gpu!.fromArray(data, shape, dtype), data };
}
export function uniform(shape: number[], seed: number, lo: number, hi: number): Pair {
  const rng = new Rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = lo + (hi - lo) * rng.uniform();
  return { c: cpu.fromArray(data, shape), g: gpu!.fromArray(data, shape), data };
}
/**
 * rand(shape) viewed one element into a larger buffer (rowSlice + reshape on both backends): the data's device
 * address is 4 (f32) or 2 (bf16) bytes past a 16-byte boundary, so the kernels' 16-byte-load paths do not apply
 */
export function misaligned(shape: number[], seed: number, scale = 1, dtype: DType = 'f32'): Pair {
  const n = shape.reduce((a, b) => a * b, 1);
  const base = rand([n + 1], seed, scale, dtype);
  const view = (be: Backend, t: Tensor) => be.reshape(be.rowSlice(t, 1, n + 1), shape);
  return { c: view(cpu, base.c), g: view(gpu!, base.g), data: base.data.subarray(1) };
}
export function ints(n: number, seed: number, hi: number): Int32Array {
  const rng = new Rng(seed);
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.floor(rng.uniform() * hi);
  return a;
}

/**
 * max |got − want| ≤ rtol · max(|want|_∞, 1e-3): a relative error on the tensor's scale (elementwise
 * relative error is meaningless near zero crossings). Also checks the shapes and that no NaN slipped in.
 */
export function expectClose(be: Backend, got: Tensor, want: Tensor, rtol: number, what: string, floor = 1e-3): void {
  expect(got.shape, `${what}: shape`).toEqual(want.shape);
  closeArrays(be.read(got), cpu.read(want), rtol, what, floor);
}
/** `floor`: the smallest scale (a quantity that is exactly 0 in exact arithmetic is compared on the scale of the terms that cancel) */
export function closeArrays(a: ArrayLike<number>, b: ArrayLike<number>, rtol: number, what: string, floor = 1e-3): void {
  expect(a.length, `${what}: length`).toBe(b.length);
  let scale = floor, err = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]!));
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= err)) err = Number.isNaN(d) ? Infinity : d;
  }
  expect(err / scale, `${what}: max error ${err.toExponential(2)} on scale ${scale.toExponential(2)}`).toBeLessThanOrEqual(rtol);
}
