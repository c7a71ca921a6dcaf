/**
 * Symbolic equality through @cortex-js/compute-engine 0.27 (chosen on evidence: LIBRARY-CHOICE.md),
 * run in a worker thread under a hard time budget.
 *
 * Why a worker: the CAS is synchronous and some inputs (huge powers, deep simplification) can run
 * for seconds or loop; a check on the main thread could hang a whole evaluation run. The grader stays
 * synchronous: the main thread posts the pair, then blocks in `Atomics.wait` on a SharedArrayBuffer
 * for at most `budgetMs`. If the worker has not answered by then it is terminated (the answer counts
 * as not equal, reason "timeout") and a fresh worker is started on the next call. Before the worker
 * is asked at all, inputs longer than MAX_CAS_CHARS or with exponent towers are refused.
 *
 * Verdict rule inside the worker (compute-engine with tolerance 0):
 * - `isEqual` true → equal;
 * - constants it did not prove equal: equal only if their double values agree to 1e-12 relative;
 *   values below 1e-250 (1/2004!, which underflows) are never compared by floating point;
 * - expressions with free variables: evaluated at 4 fixed points in (0.3, 2.4), then (if fewer than
 *   2 were finite, e.g. factorials) at integers 2, 3, 5, 7 (identity testing); every finite point
 *   must agree to 1e-9 relative. Limitation: double precision cannot see a difference smaller than
 *   1e-9 of the magnitude ((x+1)^{200} vs (x+1)^{200}+1 passes); no benchmark answer is like that.
 */
import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

export type CasVerdict = 'equal' | 'different' | 'unknown' | 'invalid' | 'timeout' | 'refused';

export interface CasResult {
  verdict: CasVerdict;
  /** seconds spent, including the wait */
  seconds: number;
}

/** refuse longer inputs: parse + compare time grows with length, and no benchmark answer is longer */
export const MAX_CAS_CHARS = 400;
/** default per-comparison budget */
export const DEFAULT_CAS_BUDGET_MS = 2000;
/** the first call also waits for the worker to load the library */
const STARTUP_BUDGET_MS = 30_000;
const PAYLOAD_BYTES = 4096;

// Runs inside the worker (CommonJS eval context). Kept small: all LaTeX clean-up happens in TS.
const WORKER_SOURCE = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
const ctrl = new Int32Array(workerData.shared, 0, 4);
const bytes = new Uint8Array(workerData.shared, 16);
let ce = null;
const REAL_POINTS = [0.7310585, 1.3862944, 0.4142135, 2.0794415];
const INT_POINTS = [2, 3, 5, 7];
function reply(id, text) {
  const enc = new TextEncoder().encode(text).slice(0, bytes.length);
  bytes.set(enc);
  ctrl[2] = enc.length;
  ctrl[1] = id;
  Atomics.store(ctrl, 0, 1);
  Atomics.notify(ctrl, 0);
}
function numeric(expr) {
  let v;
  try { v = expr.N(); } catch (e) { return null; } // e.g. factorial of a non-integer

  const re = v.re, im = v.im;
  if (typeof re !== 'number' || !Number.isFinite(re)) return null;
  return [re, typeof im === 'number' && Number.isFinite(im) ? im : 0];
}
function close(x, y, relTol, floorOne) {
  const scale = Math.max(floorOne ? 1 : 0, Math.abs(x[0]), Math.abs(x[1]), Math.abs(y[0]), Math.abs(y[1]));
  return Math.abs(x[0] - y[0]) <= relTol * scale && Math.abs(x[1] - y[1]) <= relTol * scale;
}
function compare(msg) {
  const A = ce.parse(msg.a), B = ce.parse(msg.b);
  if (!A.isValid || !B.isValid) return 'invalid';
  if (msg.absTol !== undefined) {
    const x = numeric(A), y = numeric(B);
    if (x === null || y === null) return 'unknown';
    return Math.abs(x[0] - y[0]) <= msg.absTol * 1.01 && Math.abs(x[1] - y[1]) <= msg.absTol * 1.01 ? 'equal' : 'different';
  }
  const eq = A.isEqual(B);
  if (eq === true) return 'equal';
  const vars = Array.from(new Set([...A.unknowns, ...B.unknowns]));
  if (vars.length === 0) {
    // constants: exact comparison said no (or could not decide); a relative float check catches
    // equal irrationals it missed, but never equates values that underflow (1/2004! vs 1/2006!)
    const x = numeric(A), y = numeric(B);
    if (x === null || y === null) return 'unknown';
    const small = Math.min(Math.hypot(x[0], x[1]), Math.hypot(y[0], y[1]));
    if (small < 1e-250) return eq === false ? 'different' : 'unknown';
    return close(x, y, 1e-12, false) ? 'equal' : 'different';
  }
  // identity testing at fixed points: real points first, then integers (factorials, floor)
  for (const points of [REAL_POINTS, INT_POINTS]) {
    let finite = 0, differ = false;
    for (let p = 0; p < points.length && !differ; p++) {
      const sub = {};
      vars.forEach((v, j) => { sub[v] = ce.number(points[(p + j) % points.length] + (points === INT_POINTS ? j : 0.3 * j)); });
      const x = numeric(A.subs(sub)), y = numeric(B.subs(sub));
      if (x === null && y === null) continue;
      if (x === null || y === null || !close(x, y, 1e-9, true)) differ = true;
      else finite++;
    }
    if (differ) return 'different';
    if (finite >= 2) return 'equal';
  }
  return 'unknown';
}
import(workerData.ceUrl).then((mod) => {
  ce = new mod.ComputeEngine();
  ce.tolerance = 0; // the default 1e-10 absolute tolerance made 1/2^99 equal 1/2^98
  parentPort.on('message', (msg) => {
    let out;
    try { out = compare(msg); } catch (e) { out = 'invalid'; }
    reply(msg.id, out);
  });
  reply(0, 'ready');
}, (e) => reply(0, 'failed: ' + (e && e.message)));
`;

class CasWorker {
  private readonly worker: Worker;
  private readonly ctrl: Int32Array;
  private readonly bytes: Uint8Array;
  private nextId = 1;
  ready = false;

  constructor(ceUrl: string) {
    const shared = new SharedArrayBuffer(16 + PAYLOAD_BYTES);
    this.ctrl = new Int32Array(shared, 0, 4);
    this.bytes = new Uint8Array(shared, 16);
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { shared, ceUrl } });
    this.worker.unref(); // an idle grader must not keep the process alive
  }

  /** block until the worker answers request `id` or `ms` pass; null on timeout */
  private waitReply(id: number, ms: number): string | null {
    const deadline = performance.now() + ms;
    for (;;) {
      const left = deadline - performance.now();
      if (left <= 0) return null;
      Atomics.wait(this.ctrl, 0, 0, left);
      if (Atomics.load(this.ctrl, 0) === 1 && this.ctrl[1] === id) {
        const text = new TextDecoder().decode(this.bytes.slice(0, this.ctrl[2]!));
        Atomics.store(this.ctrl, 0, 0);
        return text;
      }
    }
  }

  /** wait for the library to load; returns null when ready, else what went wrong */
  start(): string | null {
    const reply = this.waitReply(0, STARTUP_BUDGET_MS);
    this.ready = reply === 'ready';
    return this.ready ? null : (reply ?? 'no reply within 30 s');
  }

  ask(a: string, b: string, budgetMs: number, absTol: number | undefined): string | null {
    const id = this.nextId++;
    Atomics.store(this.ctrl, 0, 0);
    this.worker.postMessage({ id, a, b, absTol });
    return this.waitReply(id, budgetMs);
  }

  kill(): void {
    void this.worker.terminate();
  }
}

let current: CasWorker | null = null;
let ceUrlCache: string | null = null;

/** file URL of compute-engine's ES module build (its CommonJS build exports nothing usable on Node 20) */
function computeEngineUrl(): string {
  const cjs = createRequire(import.meta.url).resolve('@cortex-js/compute-engine');
  return pathToFileURL(path.join(path.dirname(cjs), 'compute-engine.min.esm.js')).href;
}

function worker(): CasWorker {
  if (current !== null) return current;
  ceUrlCache ??= computeEngineUrl();
  const w = new CasWorker(ceUrlCache);
  const failure = w.start();
  if (failure !== null) {
    w.kill();
    throw new Error(`grader: the compute-engine worker did not start: ${failure}`);
  }
  current = w;
  return w;
}

/** refuse inputs the CAS could spend unbounded time on before it even starts */
export function casRefuses(latex: string): boolean {
  if (latex.length > MAX_CAS_CHARS) return true;
  // numeric exponent towers such as 10^{10^{10}}: exact evaluation is astronomically large
  if (/\d\s*\^\s*\{?\s*\d+\s*\^/.test(latex)) return true;
  // numeric powers with exponents of 5+ digits (2^{1009} is fine, 2^{123456} is not)
  if (/\^\s*\{?\s*\d{5,}/.test(latex)) return true;
  // integers with more than 300 digits
  if (/\d{300,}/.test(latex)) return true;
  return false;
}

/**
 * Are LaTeX expressions `a` and `b` equal? `absTol` switches to a numeric comparison with that
 * absolute tolerance (OlympiadBench `error` field).
 */
export function casEqual(a: string, b: string, budgetMs = DEFAULT_CAS_BUDGET_MS, absTol?: number): CasResult {
  const t0 = performance.now();
  if (casRefuses(a) || casRefuses(b)) return { verdict: 'refused', seconds: 0 };
  const w = worker();
  const out = w.ask(a, b, budgetMs, absTol);
  const seconds = (performance.now() - t0) / 1000;
  if (out === null) {
    w.kill();
    current = null;
    return { verdict: 'timeout', seconds };
  }
  return { verdict: out as CasVerdict, seconds };
}

/** stop the worker (tests; a long-lived process need not call it: the worker is unref'd) */
export function shutdownCas(): void {
  current?.kill();
  current = null;
}
