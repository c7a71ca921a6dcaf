import type { Backend } from './backend.js';

/** Storage dtypes. Compute is always f32; bf16/f16 are how weights live on disk (and on the GPU). */
export type DType = 'f32' | 'bf16' | 'f16';

/**
 * A tensor is an opaque handle owned by one backend. Shapes are row-major, last dimension fastest.
 * The CPU backend keeps an f32 array; the CUDA backend keeps a device pointer. Code above the backend
 * layer never touches the storage directly: it calls backend ops, or `backend.read()` to copy out.
 */
export interface Tensor {
  readonly shape: readonly number[];
  /** number of elements */
  readonly size: number;
  /** storage dtype (what the tensor is saved as); compute is f32 */
  readonly dtype: DType;
  readonly backend: Backend;
  /** release the storage now; using the tensor afterwards throws */
  dispose(): void;
}

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`invalid dimension ${d} in shape [${shape.join(', ')}]`);
    n *= d;
  }
  return n;
}

/** checks a rowSlice's range; the view's shape and the elements per row */
export function rowSliceShape(t: Tensor, r0: number, r1: number): { shape: number[]; rowSize: number } {
  const R = t.shape[0];
  if (R === undefined) throw new Error('rowSlice: a scalar has no rows');
  if (!(Number.isInteger(r0) && Number.isInteger(r1) && 0 <= r0 && r0 <= r1 && r1 <= R)) {
    throw new Error(`rowSlice: rows [${r0}, ${r1}) are not a range inside the ${R} rows of ${shapeString(t.shape)}`);
  }
  const rest = t.shape.slice(1);
  return { shape: [r1 - r0, ...rest], rowSize: rest.reduce((a, b) => a * b, 1) };
}

export function shapeString(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function assertShape(t: Tensor, shape: readonly number[], what: string): void {
  if (!sameShape(t.shape, shape)) {
    throw new Error(`${what}: expected shape ${shapeString(shape)}, got ${shapeString(t.shape)}`);
  }
}
