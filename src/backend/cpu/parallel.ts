// Work split over worker threads: the row-parallel matmul, and any kernel that runs over a range
// of independent tasks (attention per (row, kv head)). The operands are copied into
// SharedArrayBuffers that the workers map; each thread runs the same kernel source on its own band
// of output rows / tasks, so results are bit-identical to the single-threaded ones (every output
// element is the same sum in the same order). The main thread takes a band too, then blocks on an
// Atomics counter, which keeps the Backend ops synchronous.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { attentionBackwardTasks, attentionForwardTasks, gatherKvPanels } from './attention-kernels.js';
import { selectiveScanBackwardTasks, selectiveScanForwardTasks } from './scan-kernels.js';
import { K_BLOCK, N_BLOCK, matmulNT } from './matmul.js';
import { createWasmMatmul, wasmMatmul } from './wasm/matmul-wasm.js';
import { WASM_BASE64 } from './wasm/matmul.wasm.js';

/** below this many multiply-adds the hand-off costs more than it saves */
const MIN_WORK = 1 << 22;

/** kernels over a task range: (arrays..., scalars..., lo, hi) */
const TASK_KERNELS = { attentionForwardTasks, attentionBackwardTasks, selectiveScanForwardTasks, selectiveScanBackwardTasks } as const;
export type TaskKernel = keyof typeof TASK_KERNELS;

// The worker runs the kernels' own source (Function.prototype.toString), so it needs no separate
// file: this works from the compiled dist/ and from TypeScript under a test runner alike.
const workerSource = (): string => `
const { parentPort } = require('node:worker_threads');
const K_BLOCK = ${K_BLOCK}, N_BLOCK = ${N_BLOCK};
const matmulNT = ${matmulNT.toString()};
const createWasmMatmul = ${createWasmMatmul.toString()};
const gatherKvPanels = ${gatherKvPanels.toString()};
const wasmMM = createWasmMatmul('${WASM_BASE64}');
const tasks = { ${Object.entries(TASK_KERNELS).map(([k, f]) => `${k}: ${f.toString()}`).join(',\n')} };
parentPort.on('message', (m) => {
  if (m.kind === 'matmulNN') {
    const a = new Float32Array(m.a, m.r0 * m.K * 4, (m.r1 - m.r0) * m.K);
    const b = new Float32Array(m.b, 0, m.K * m.N);
    const c = new Float32Array(m.c, m.r0 * m.N * 4, (m.r1 - m.r0) * m.N);
    wasmMM(a, b, c, m.r1 - m.r0, m.N, m.K, m.accumulate);
  } else if (m.kind === 'matmul') {
    const a = new Float32Array(m.a, m.r0 * m.K * 4, (m.r1 - m.r0) * m.K);
    const bt = new Float32Array(m.b, 0, m.N * m.K);
    const c = new Float32Array(m.c, m.r0 * m.N * 4, (m.r1 - m.r0) * m.N);
    matmulNT(a, bt, c, m.r1 - m.r0, m.N, m.K, m.accumulate);
  } else {
    const arrays = m.arrays.map(([buf, type, n]) => type === 1 ? new Int32Array(buf, 0, n) : type === 2 ? new Float64Array(buf, 0, n) : new Float32Array(buf, 0, n));
    tasks[m.kernel](...arrays, ...m.scalars, m.lo, m.hi);
  }
  const done = new Int32Array(m.done);
  Atomics.add(done, 0, 1);
  Atomics.notify(done, 0);
});
`;

type Shared = Float32Array | Int32Array | Float64Array;

class Pool {
  private readonly workers: Worker[] = [];
  private shared = { a: new SharedArrayBuffer(4), bt: new SharedArrayBuffer(4), c: new SharedArrayBuffer(4) };
  /** buffers of runTasks, by argument position */
  private taskBufs: SharedArrayBuffer[] = [];
  private readonly done = new SharedArrayBuffer(4);

  constructor(readonly threads: number) {
    for (let i = 0; i < threads - 1; i++) {
      const w = new Worker(workerSource(), { eval: true });
      w.unref(); // idle workers must not keep the process alive
      this.workers.push(w);
    }
  }

  private buffer(name: 'a' | 'bt' | 'c', floats: number): SharedArrayBuffer {
    if (this.shared[name].byteLength < floats * 4) this.shared[name] = new SharedArrayBuffer(Math.max(floats * 4, this.shared[name].byteLength * 2));
    return this.shared[name];
  }

  /** block until `dispatched` workers have reported */
  private wait(dispatched: number, what: string): void {
    const done = new Int32Array(this.done);
    const deadline = Date.now() + this.timeoutMs;
    for (let seen = Atomics.load(done, 0); seen < dispatched; seen = Atomics.load(done, 0)) {
      // a worker that died cannot report it while this thread blocks: give up after the deadline
      if (Date.now() > deadline) throw new Error(`cpu ${what}: worker threads did not answer within ${this.timeoutMs} ms (set M1_THREADS=1 to run single-threaded)`);
      Atomics.wait(done, 0, seen, 100);
    }
  }

  /**
   * C[M,N] (+)= A[M,K] · B with output rows split across the threads, in bands of whole 4-row tiles:
   * 'matmul' is the JavaScript kernel with B as Bt [N, K], 'matmulNN' the WebAssembly one with B as
   * [K, N]; `mine` runs this thread's band with the same kernel.
   */
  private banded(kind: 'matmul' | 'matmulNN', mine: (a: Float32Array, b: Float32Array, c: Float32Array, rows: number) => void,
    a: Float32Array, b: Float32Array, c: Float32Array, M: number, N: number, K: number, accumulate: boolean): void {
    const sa = this.buffer('a', M * K), sb = this.buffer('bt', N * K), sc = this.buffer('c', M * N);
    new Float32Array(sa, 0, M * K).set(a.subarray(0, M * K));
    new Float32Array(sb, 0, N * K).set(b.subarray(0, N * K));
    const cShared = new Float32Array(sc, 0, M * N);
    if (accumulate) cShared.set(c.subarray(0, M * N));
    Atomics.store(new Int32Array(this.done), 0, 0);
    const band = Math.ceil(M / (this.workers.length + 1) / 4) * 4;
    let dispatched = 0;
    for (let i = 0; i < this.workers.length; i++) {
      const r0 = (i + 1) * band, r1 = Math.min(M, r0 + band);
      if (r0 >= r1) break;
      this.workers[i]!.postMessage({ kind, a: sa, b: sb, c: sc, done: this.done, r0, r1, N, K, accumulate });
      dispatched++;
    }
    const rows = Math.min(M, band);
    mine(new Float32Array(sa, 0, rows * K), new Float32Array(sb, 0, N * K), new Float32Array(sc, 0, rows * N), rows);
    this.wait(dispatched, 'matmul');
    c.set(cShared);
  }

  /** C[M,N] (+)= A[M,K] · Bt[N,K]ᵀ (JavaScript kernel) with output rows split across the threads */
  matmulNT(a: Float32Array, bt: Float32Array, c: Float32Array, M: number, N: number, K: number, accumulate: boolean): void {
    this.banded('matmul', (a0, b0, c0, rows) => matmulNT(a0, b0, c0, rows, N, K, accumulate), a, bt, c, M, N, K, accumulate);
  }

  /** C[M,N] (+)= A[M,K] · B[K,N] (WebAssembly SIMD on every thread) with output rows split across the threads */
  matmulNN(mm: (a: Float32Array, b: Float32Array, c: Float32Array, M: number, N: number, K: number, acc: boolean) => void,
    a: Float32Array, b: Float32Array, c: Float32Array, M: number, N: number, K: number, accumulate: boolean): void {
    this.banded('matmulNN', (a0, b0, c0, rows) => mm(a0, b0, c0, rows, N, K, accumulate), a, b, c, M, N, K, accumulate);
  }

  /**
   * kernel(arrays..., scalars..., lo, hi) over tasks [0, tasks), split in contiguous ranges. Every
   * array is copied into shared memory; those listed in `outputs` (argument positions) are copied
   * back afterwards (the kernel must write every element of them).
   */
  runTasks(kernel: TaskKernel, arrays: Shared[], outputs: number[], scalars: number[], tasks: number): void {
    const views = arrays.map((arr, i) => {
      const bytes = Math.max(4, arr.byteLength);
      if ((this.taskBufs[i]?.byteLength ?? 0) < bytes) this.taskBufs[i] = new SharedArrayBuffer(Math.max(bytes, 2 * (this.taskBufs[i]?.byteLength ?? 0)));
      const buf = this.taskBufs[i]!;
      const view = arr instanceof Int32Array ? new Int32Array(buf, 0, arr.length)
        : arr instanceof Float64Array ? new Float64Array(buf, 0, arr.length) : new Float32Array(buf, 0, arr.length);
      if (!outputs.includes(i)) view.set(arr as never);
      return view;
    });
    Atomics.store(new Int32Array(this.done), 0, 0);
    const parts = this.workers.length + 1, band = Math.ceil(tasks / parts);
    const spec = views.map((v, i) => [this.taskBufs[i]!, v instanceof Int32Array ? 1 : v instanceof Float64Array ? 2 : 0, v.length] as const);
    let dispatched = 0;
    for (let i = 0; i < this.workers.length; i++) {
      const lo = (i + 1) * band, hi = Math.min(tasks, lo + band);
      if (lo >= hi) break;
      this.workers[i]!.postMessage({ kind: 'tasks', kernel, arrays: spec, scalars, lo, hi, done: this.done });
      dispatched++;
    }
    (TASK_KERNELS[kernel] as (...a: unknown[]) => void)(...views, ...scalars, 0, Math.min(tasks, band));
    this.wait(dispatched, kernel);
    for (const i of outputs) (arrays[i] as Float32Array).set(views[i] as never);
  }

  timeoutMs = 600_000;

  /** a small product through the workers, with a short deadline: false when they do not work here */
  selfTest(): boolean {
    const M = 4 * this.threads, N = 5, K = 3;
    const a = Float32Array.from({ length: M * K }, (_, i) => i % 7), bt = Float32Array.from({ length: N * K }, (_, i) => i % 5);
    const c = new Float32Array(M * N), ref = new Float32Array(M * N);
    const saved = this.timeoutMs;
    this.timeoutMs = 5000;
    try {
      this.matmulNT(a, bt, c, M, N, K, false);
    } catch {
      return false;
    } finally {
      this.timeoutMs = saved;
    }
    matmulNT(a, bt, ref, M, N, K, false);
    return c.every((v, i) => v === ref[i]);
  }

  close(): void {
    for (const w of this.workers) void w.terminate();
  }
}

let pool: Pool | null | undefined;

/** threads for the CPU matmul: M1_THREADS, else the cores available (at most 8); 1 turns it off */
export function cpuThreads(): number {
  const env = process.env['M1_THREADS'];
  if (env !== undefined && /^\d+$/.test(env)) return Math.max(1, Number(env));
  return Math.max(1, Math.min(8, availableParallelism()));
}

function thePool(): Pool | null {
  if (pool === undefined) {
    pool = cpuThreads() > 1 ? new Pool(cpuThreads()) : null;
    if (pool && !pool.selfTest()) {
      pool.close();
      pool = null; // worker threads unusable here: stay single-threaded
    }
  }
  return pool;
}

/**
 * kernel(arrays..., scalars..., lo, hi) over tasks [0, tasks): on the worker pool when `work`
 * (multiply-adds, roughly) is large enough, else on this thread. See Pool.runTasks.
 */
export function runTasksParallel(kernel: TaskKernel, arrays: Shared[], outputs: number[], scalars: number[], tasks: number, work: number): void {
  const p = tasks >= 2 && work >= MIN_WORK ? thePool() : null;
  if (p) p.runTasks(kernel, arrays, outputs, scalars, tasks);
  else (TASK_KERNELS[kernel] as (...a: unknown[]) => void)(...arrays, ...scalars, 0, tasks);
}

/** C (+)= A · B (B as [K, N]) with the WebAssembly kernel, on the worker pool when the product is large enough */
export function matmulNNParallel(a: Float32Array, b: Float32Array, c: Float32Array, M: number, N: number, K: number, accumulate: boolean): void {
  const mm = wasmMatmul();
  if (!mm) throw new Error('matmulNNParallel: WebAssembly SIMD is not available');
  const p = M >= 8 && M * N * K >= MIN_WORK ? thePool() : null;
  if (p) p.matmulNN(mm, a, b, c, M, N, K, accumulate);
  else mm(a, b, c, M, N, K, accumulate);
}

/** C (+)= A · Btᵀ, on the worker pool when the product is large enough */
export function matmulNTParallel(a: Float32Array, bt: Float32Array, c: Float32Array, M: number, N: number, K: number, accumulate: boolean): void {
  if (M >= 8 && M * N * K >= MIN_WORK) {
    const p = thePool();
    if (p) {
      p.matmulNT(a, bt, c, M, N, K, accumulate);
      return;
    }
  }
  matmulNT(a, bt, c, M, N, K, accumulate);
}
