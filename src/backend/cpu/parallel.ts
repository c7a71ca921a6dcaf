// Row-parallel matmul over worker threads. The operands are copied into SharedArrayBuffers that the
// workers map; each worker computes a contiguous band of output rows with the same NT kernel as the
// main thread, so the result is bit-identical to the single-threaded one (every output element is the
// same sum in the same order). The main thread takes a band too, then blocks on an Atomics counter,
// which keeps Backend.matmul synchronous.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { K_BLOCK, N_BLOCK, matmulNT } from './matmul.js';

/** below this many multiply-adds the hand-off costs more than it saves */
const MIN_WORK = 1 << 22;

// The worker runs the kernel's own source (Function.prototype.toString), so it needs no separate
// file: this works from the compiled dist/ and from TypeScript under a test runner alike.
const workerSource = (): string => `
const { parentPort } = require('node:worker_threads');
const K_BLOCK = ${K_BLOCK}, N_BLOCK = ${N_BLOCK};
const matmulNT = ${matmulNT.toString()};
parentPort.on('message', (m) => {
  const a = new Float32Array(m.a, m.r0 * m.K * 4, (m.r1 - m.r0) * m.K);
  const bt = new Float32Array(m.bt, 0, m.N * m.K);
  const c = new Float32Array(m.c, m.r0 * m.N * 4, (m.r1 - m.r0) * m.N);
  matmulNT(a, bt, c, m.r1 - m.r0, m.N, m.K, m.accumulate);
  const done = new Int32Array(m.done);
  Atomics.add(done, 0, 1);
  Atomics.notify(done, 0);
});
`;

class Pool {
  private readonly workers: Worker[] = [];
  private shared = { a: new SharedArrayBuffer(4), bt: new SharedArrayBuffer(4), c: new SharedArrayBuffer(4) };
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

  /** C[M,N] (+)= A[M,K] · Bt[N,K]ᵀ with output rows split across the threads */
  matmulNT(a: Float32Array, bt: Float32Array, c: Float32Array, M: number, N: number, K: number, accumulate: boolean): void {
    const sa = this.buffer('a', M * K), sb = this.buffer('bt', N * K), sc = this.buffer('c', M * N);
    new Float32Array(sa, 0, M * K).set(a.subarray(0, M * K));
    new Float32Array(sb, 0, N * K).set(bt.subarray(0, N * K));
    const cShared = new Float32Array(sc, 0, M * N);
    if (accumulate) cShared.set(c.subarray(0, M * N));
    const done = new Int32Array(this.done);
    Atomics.store(done, 0, 0);
    const parts = this.workers.length + 1;
    const band = Math.ceil(M / parts / 4) * 4; // multiples of the 4-row register tile
    let dispatched = 0;
    for (let i = 0; i < this.workers.length; i++) {
      const r0 = (i + 1) * band, r1 = Math.min(M, r0 + band);
      if (r0 >= r1) break;
      this.workers[i]!.postMessage({ a: sa, bt: sb, c: sc, done: this.done, r0, r1, N, K, accumulate });
      dispatched++;
    }
    const mine = Math.min(M, band);
    matmulNT(new Float32Array(sa, 0, mine * K), new Float32Array(sb, 0, N * K), new Float32Array(sc, 0, mine * N), mine, N, K, accumulate);
    const deadline = Date.now() + this.timeoutMs;
    for (let seen = Atomics.load(done, 0); seen < dispatched; seen = Atomics.load(done, 0)) {
      // a worker that died cannot report it while this thread blocks: give up after the deadline
      if (Date.now() > deadline) throw new Error(`cpu matmul: worker threads did not answer within ${this.timeoutMs} ms (set M1_THREADS=1 to run single-threaded)`);
      Atomics.wait(done, 0, seen, 100);
    }
    c.set(cShared);
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

/** C (+)= A · Btᵀ, on the worker pool when the product is large enough */
export function matmulNTParallel(a: Float32Array, bt: Float32Array, c: Float32Array, M: number, N: number, K: number, accumulate: boolean): void {
  if (M >= 8 && M * N * K >= MIN_WORK) {
    if (pool === undefined) {
      pool = cpuThreads() > 1 ? new Pool(cpuThreads()) : null;
      if (pool && !pool.selfTest()) {
        pool.close();
        pool = null; // worker threads unusable here: stay single-threaded
      }
    }
    if (pool) {
      pool.matmulNT(a, bt, c, M, N, K, accumulate);
      return;
    }
  }
  matmulNT(a, bt, c, M, N, K, accumulate);
}
