import type { Backend } from '../backend.js';
import { shapeSize, type DType, type Tensor } from '../tensor.js';

/** CPU tensor: a contiguous f32 array (values already rounded to the storage dtype). */
export class CpuTensor implements Tensor {
  readonly size: number;
  private _data: Float32Array | null;

  constructor(
    readonly backend: Backend,
    data: Float32Array,
    readonly shape: readonly number[],
    readonly dtype: DType = 'f32',
  ) {
    this.size = shapeSize(shape);
    if (data.length !== this.size) {
      throw new Error(`tensor data has ${data.length} elements but shape [${shape.join(', ')}] needs ${this.size}`);
    }
    this._data = data;
  }

  get data(): Float32Array {
    if (this._data === null) throw new Error('tensor used after dispose()');
    return this._data;
  }

  dispose(): void {
    this._data = null;
  }
}

/** the f32 array behind a CPU tensor (throws for tensors of another backend) */
export function dataOf(t: Tensor): Float32Array {
  if (!(t instanceof CpuTensor)) throw new Error(`expected a cpu tensor, got one of backend '${t.backend.name}'`);
  return t.data;
}
