import type { DType } from './tensor.js';

// Bit-level conversions between f32 and the 16-bit storage formats. Round-to-nearest-even, as
// PyTorch and the safetensors ecosystem do, so that a bf16 file round-trips bit-exactly.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x007fffff) !== 0) return ((bits >>> 16) | 0x0040) & 0xffff; // NaN stays NaN
  const rounding = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + rounding) >>> 16) & 0xffff;
}

export function bf16BitsToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0]!;
}

export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x007fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / NaN
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow → inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow → ±0
    mant |= 0x00800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let m = mant >>> shift;
    if (rest > half || (rest === half && (m & 1))) m += 1;
    return sign | m;
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (m & 1))) {
    m += 1;
    if (m === 0x400) { m = 0; e += 1; if (e >= 0x1f) return sign | 0x7c00; }
  }
  return sign | (e << 10) | m;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** x rounded to f32, then to the nearest bf16 (as a device's f32 → bf16 store) */
export function f32ToBf16Value(x: number): number {
  return bf16BitsToF32(f32ToBf16Bits(x));
}

/** round every value of `a` in place to what `dtype` can hold */
export function roundToDType(a: Float32Array, dtype: DType): void {
  if (dtype === 'f32') return;
  if (dtype === 'bf16') {
    for (let i = 0; i < a.length; i++) a[i] = bf16BitsToF32(f32ToBf16Bits(a[i]!));
  } else {
    for (let i = 0; i < a.length; i++) a[i] = f16BitsToF32(f32ToF16Bits(a[i]!));
  }
}

export function bytesPerElement(dtype: DType): number {
  return dtype === 'f32' ? 4 : 2;
}
