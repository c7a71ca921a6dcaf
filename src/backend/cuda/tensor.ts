// Device tensors. A tensor owns a reference to a Storage (one allocator block); reshape makes views
// that share it. The block goes back to the addon's caching allocator when the last tensor using it
// is disposed, or, as a safety net, when all of them have been garbage collected.
import type { Backend } from '../backend.js';
import { shapeSize, type DType, type Tensor } from '../tensor.js';
import type { M1Cuda } from './addon.js';

/** how values sit in device memory: f16 tensors are held as f32 (rounded to f16 values at upload) */
export type Storage = 'f32' | 'bf16';

export function storageOf(dtype: DType): Storage {
  return dtype === 'bf16' ? 'bf16' : 'f32';
}

export class DeviceBuffer {
  private refs = 0;
  constructor(
    private readonly addon: M1Cuda,
    public ptr: number,
    readonly bytes: number,
  ) {}
  retain(): void {
    this.refs++;
  }
  release(): void {
    if (--this.refs === 0 && this.ptr !== 0) {
      this.addon.free(this.ptr);
      this.ptr = 0;
    }
  }
}

/** open `tidy` scopes: every tensor made while one is open is listed in the innermost */
export const tidyScopes: CudaTensor[][] = [];

// Held value: the buffer (not the tensor), so the registry keeps nothing alive that it watches.
const registry = new FinalizationRegistry<DeviceBuffer>((buf) => buf.release());

export class CudaTensor implements Tensor {
  readonly size: number;
  readonly storage: Storage;
  private buf: DeviceBuffer | null;

  constructor(
    readonly backend: Backend,
    buf: DeviceBuffer,
    readonly shape: readonly number[],
    readonly dtype: DType,
    /** elements from the buffer's start to this tensor's first (a row-slice view) */
    readonly offset = 0,
  ) {
    this.size = shapeSize(shape);
    this.storage = storageOf(dtype);
    this.buf = buf;
    buf.retain();
    registry.register(this, buf, this);
    tidyScopes[tidyScopes.length - 1]?.push(this);
  }

  get buffer(): DeviceBuffer {
    if (this.buf === null) throw new Error('tensor used after dispose()');
    return this.buf;
  }
  /** device address of the first element */
  get ptr(): number {
    return this.buffer.ptr + this.offset * this.elemBytes;
  }
  get elemBytes(): number {
    return this.storage === 'bf16' ? 2 : 4;
  }
  get disposed(): boolean {
    return this.buf === null;
  }

  dispose(): void {
    if (this.buf === null) return;
    registry.unregister(this);
    const b = this.buf;
    this.buf = null;
    b.release();
  }
}
