// Per-op time of a backend, for finding where a step's time goes when no GPU profiler is at hand
// (the device machine has no Nsight Systems). Every backend method called from outside the backend is
// bracketed by synchronize(): the time of one entry is its launch + kernel(s) + one sync round trip
// (a few µs), so the sum over a step is larger than the un-profiled step time by about that per op.
// Calls a backend method makes on itself are counted inside their caller (a depth counter).
import type { Backend } from '../src/backend/backend.js';
import type { Tensor } from '../src/backend/tensor.js';
import { sync } from './common.js';

/** methods that are not ops: pass through untimed */
const UNTIMED = new Set(['tidy', 'synchronize', 'keep', 'dispose', 'emptyCache', 'name', 'constructor']);

export interface OpStat { op: string; calls: number; seconds: number }

export class OpProfiler {
  readonly be: Backend;
  private stats = new Map<string, OpStat>();
  private depth = 0;
  enabled = true;

  constructor(inner: Backend) {
    const self = this;
    this.be = new Proxy(inner, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver) as unknown;
        if (typeof v !== 'function' || typeof prop !== 'string' || UNTIMED.has(prop)) return v;
        return function (this: unknown, ...args: unknown[]) {
          if (!self.enabled || self.depth > 0) {
            self.depth++;
            try { return (v as (...a: unknown[]) => unknown).apply(receiver, args); } finally { self.depth--; }
          }
          sync(inner);
          const t0 = performance.now();
          self.depth++;
          try {
            return (v as (...a: unknown[]) => unknown).apply(receiver, args);
          } finally {
            self.depth--;
            sync(inner);
            self.record(opKey(prop, args), (performance.now() - t0) / 1000);
          }
        };
      },
    });
  }

  private record(op: string, s: number): void {
    const e = this.stats.get(op) ?? { op, calls: 0, seconds: 0 };
    e.calls++;
    e.seconds += s;
    this.stats.set(op, e);
  }

  reset(): void {
    this.stats.clear();
  }

  /** ops by total time, largest first */
  top(): OpStat[] {
    return [...this.stats.values()].sort((a, b) => b.seconds - a.seconds);
  }
}

function isTensor(x: unknown): x is Tensor {
  return typeof x === 'object' && x !== null && Array.isArray((x as { shape?: unknown }).shape);
}

/** matmuls are told apart by shape (which projection); everything else by name */
function opKey(op: string, args: unknown[]): string {
  if (op === 'matmul' && isTensor(args[0]) && isTensor(args[1])) {
    const o = (args[2] ?? {}) as { transA?: boolean; transB?: boolean };
    return `matmul ${args[0].shape.join('×')}${o.transA ? 'ᵀ' : ''} · ${args[1].shape.join('×')}${o.transB ? 'ᵀ' : ''}`;
  }
  return op;
}
