// npm run bench:decode — decode speed of the M1-3B and Llama-3.2-3B shapes (issue 7), our engine's
// model.step for both, with the roofline of every point.
//
// Method. A decode step for B sequences at context L costs the same whatever the token values, so each
// point times `model.step` (+ the device argmax that greedy sampling needs, or the device sampler,
// be.sampleRows, with --temperature / --top-p) on state pools whose
// sequences are all at context L: KV blocks allocated and mapped, Mamba state slots in place. The
// step time is measured at several contexts; the latency of "prompt P + G generated tokens" is the
// sum of the step times over L = P .. P+G−1, interpolated linearly between the measured contexts
// (prefill excluded; it is reported separately by bench:prefill). Points whose KV cache does not fit
// in memory are reported as such, as a real server would have to shrink the batch there.
// The Mamba-1 decode states (SSM state and conv window) are kept in bf16 by default (--ssm-dtype), as the reference
// (mamba_ssm) and the engine keep them for a bf16 model; --ssm-dtype f32 measures the unrounded recurrence. The
// roofline counts the states' bytes in the dtype they are stored in.
import { Command } from 'commander';
import { choiceFlag } from '../src/cli/options.js';
import { createBackend } from '../src/backend/registry.js';
import type { Backend, StepGraph } from '../src/backend/backend.js';
import { loadModel } from '../src/model/checkpoint.js';
import type { CausalLM } from '../src/model/model.js';
import type { DecodeInfo, LayerState } from '../src/model/module.js';
import { emptyCache, presetConfig, randomModel, sync, table, writeResult, zeroModel } from './common.js';
import { OpProfiler } from './op-profile.js';
import type { SampleRowsArgs } from '../src/backend/backend.js';
import type { Tensor } from '../src/backend/tensor.js';
import { normalArray, Rng } from '../src/util/rng.js';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { renderDecodeReport, type DecodeResult } from './decode-report.js';

const list = (v: string) => v.split(',').map((x) => Number(x.trim()));
type BlockOrder = 'contiguous' | 'interleaved' | 'shuffled';
/**
 * Replaces each attention layer's zero K and V caches with N(0, 1) bf16 values: rows gathered on the device (the
 * embedding op) from one random block, in a random row order, so no cache-sized array is made on the host.
 */
function fillRandomKv(be: Backend, states: LayerState[], seed: number): void {
  const rng = new Rng(seed);
  const blocks = new Map<number, Tensor>();
  try {
    states.forEach((st, i) => {
      if (st.kind !== 'attention') return;
      const fresh = [st.kCache, st.vCache].map((c) => {
        const D = c.shape[c.shape.length - 1]!, rows = c.size / D;
        let block = blocks.get(D);
        if (!block) blocks.set(D, (block = be.fromArray(normalArray(rng, (1 << 22) - ((1 << 22) % D), 1), [Math.floor((1 << 22) / D), D])));
        const k = block.shape[0]!, ids = new Int32Array(rows);
        for (let r = 0; r < rows; r++) ids[r] = rng.int(k);
        return be.tidy(() => be.reshape(be.cast(be.embedding(block, ids), c.dtype), c.shape));
      });
      st.kCache.dispose();
      st.vCache.dispose();
      states[i] = { kind: 'attention', kCache: fresh[0]!, vCache: fresh[1]! };
    });
  } finally {
    for (const b of blocks.values()) b.dispose();
  }
}
const program = new Command()
  .option('--llama <dir>', 'transformer model folder (m1 init --arch llama --preset llama-3.2-3b)')
  .option('--m1 <dir>', 'hybrid model folder (m1 init --arch m1 --preset m1-3b)')
  .option('--zero-weights', 'instead of folders: the llama-3.2-3b / m1-3b preset shapes with zero bf16 weights made on the device (quick to build; zeros draw less power in the products than real values, so this is the optimistic case)')
  .option('--random-weights', 'instead of folders: the preset shapes with random bf16 weights (bench/common randomModel: ordinary scales, as real weights)')
  .option('--backend <name>', 'cpu | cuda', 'cuda')
  .option('--batches <list>', 'batch sizes', list, [8, 16, 32, 64, 128, 256, 512])
  .option('--contexts <list>', 'contexts at which step time is measured', list, [256, 1024, 2048, 4096])
  .option('--prompt <n>', 'prompt length of the latency figures', Number, 256)
  .option('--gen <n>', 'generated tokens of the latency figures', Number, 4096)
  .option('--length-batch <n>', 'batch of the length sweep', Number, 128)
  .option('--lengths <list>', 'generated lengths of the length sweep', list, [4096, 8192, 16384, 20480])
  .option('--steps <n>', 'timed steps per point', Number, 8)
  .option('--block-size <n>', 'KV block size', Number, 16)
  .option('--kv-fill <fill>', 'what the KV cache holds before timing: zero (as allocated) or random (N(0, 1) bf16 values, as a real cache: moving zeros can be cheaper than moving data)', choiceFlag('--kv-fill', ['zero', 'random'] as const), 'zero' as 'zero' | 'random')
  .option('--block-order <order>', 'where each sequence\'s KV blocks lie in the pool: contiguous (sequence b owns one run), interleaved (block j of every sequence, then block j + 1: the order an engine allocates them in when its sequences grow in step) or shuffled (a random permutation: a long-running pool)', choiceFlag('--block-order', ['contiguous', 'interleaved', 'shuffled'] as const), 'contiguous' as BlockOrder)
  .option('--mem-gib <n>', 'device memory the KV cache + state may take', Number, 120)
  .option('--bandwidth <tbps>', 'memory bandwidth of the roofline, TB/s (measured copy on the H200)', Number, 4.3)
  .option('--tflops <n>', 'bf16 matmul peak of the roofline, TFLOP/s (measured on the H200)', Number, 790)
  .option('--ssm-dtype <dtype>', 'storage of the Mamba-1 decode states (SSM and conv), bf16 or f32 (bf16: the reference\'s, and the engine\'s default for bf16 weights)', choiceFlag('--ssm-dtype', ['bf16', 'f32'] as const), 'bf16' as 'bf16' | 'f32')
  .option('--name <s>', 'results file name', 'decode')
  .option('--models <list>', 'which of m1-3b, llama-3.2-3b to run', (v: string) => v.split(','), ['m1-3b', 'llama-3.2-3b'])
  .option('--budget-s <n>', 'stop measuring new points after this many seconds per model', Number, 1e9)
  .option('--warmup-s <n>', 'seconds of untimed steps before the first point of each model (GPU clocks ramp up from idle)', Number, 3)
  .option('--graphs', 'record each point\'s step once as a CUDA graph and replay it (the engine\'s `graphs` option)')
  .option('--profile', 'after each point, time every op of a few more steps (a sync around each op) and print where the step goes')
  .option('--temperature <t>', 'sample every step with be.sampleRows at this temperature (seeded uniforms) instead of the greedy argmaxRows', Number)
  .option('--top-p <p>', 'top-p of that sampling (implies sampling, at temperature 1 unless given; with --zero-weights the logits are flat, so top-p < 1 rows go to the host fallback)', Number)
  .option('--report <json>', 'only redraw the HTML page of a results file of this bench (written beside it) and exit')
  .parse(process.argv);
const o = program.opts<{
  llama?: string; m1?: string; zeroWeights?: boolean; randomWeights?: boolean; backend: string; batches: number[]; contexts: number[]; prompt: number; gen: number;
  lengthBatch: number; lengths: number[]; steps: number; blockSize: number; memGib: number; bandwidth: number; tflops: number; name: string;
  budgetS: number; models: string[]; profile?: boolean; warmupS: number; graphs?: boolean; temperature?: number; topP?: number;
  report?: string; ssmDtype: 'bf16' | 'f32'; blockOrder: BlockOrder; kvFill: 'zero' | 'random';
}>();

/** the page beside a results file (same name, .html), written to a temporary file and renamed */
function writeReport(jsonPath: string, r: DecodeResult): string {
  const path = jsonPath.replace(/\.json$/, '') + '.html';
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, renderDecodeReport(r));
  renameSync(tmp, path);
  return path;
}

// --temperature / --top-p: the step's tokens come from be.sampleRows (uniforms from a seeded Rng), and
// the rows it had to compute on the host (its kernels' declines) are counted
const sampling = o.temperature !== undefined || o.topP !== undefined;
const sampleRng = new Rng(1234);
let sampledRows = 0, sampledOnHost = 0, pointRows = 0, pointOnHost = 0;
function pick(be: Backend, logits: Tensor): unknown {
  if (!sampling) return be.argmaxRows(logits);
  const V = logits.shape[logits.shape.length - 1]!, n = logits.size / V;
  const args: SampleRowsArgs = {
    logitsRow: Int32Array.from({ length: n }, (_, i) => i), temperature: new Float64Array(n).fill(o.temperature ?? 1),
    topP: new Float64Array(n).fill(o.topP ?? 1), topK: new Int32Array(n).fill(-1), minP: new Float64Array(n),
    uniform: Float64Array.from({ length: n }, () => sampleRng.uniform()),
  };
  const r = be.sampleRows!(be.reshape(logits, [n, V]), args);
  sampledRows += n;
  sampledOnHost += r.fallbackRows;
  pointRows += n;
  pointOnHost += r.fallbackRows;
  return r;
}
/** the sampling counts of the point just measured (for its progress line) */
function samplingNote(): string {
  if (!sampling) return '';
  const note = `, sampled (T ${o.temperature ?? 1}, top-p ${o.topP ?? 1}): ${pointOnHost} of ${pointRows} rows on the host`;
  pointRows = pointOnHost = 0;
  return note;
}

let profiler: OpProfiler | null = null;
/** the backend's allocator statistics where it has them (cuda): each point's peak device memory */
let memory: { memoryStats?: () => { peakReservedBytes: number }; resetPeakMemory?: () => void } = {};
const profiles: Record<string, unknown>[] = [];

interface Shape {
  weightBytes: number; // bytes of every weight read once per step (the embedding lookup reads B rows: excluded; the tied LM head is read whole)
  matmulParams: number; // weights multiplied per token (incl. the LM head)
  attnLayers: number; kvHeads: number; qHeads: number; headDim: number;
  stateBytesPerSeq: number; // Mamba conv + SSM state, read and written each step
  kvBytesPerToken: number; // all attention layers, K and V
}

function shapeOf(model: CausalLM): Shape {
  const l = model.cfg.llama;
  let weightBytes = 0, matmulParams = 0;
  for (const [k, p] of model.params()) {
    const bytes = p.value.size * (p.value.dtype === 'f32' ? 4 : 2);
    weightBytes += bytes;
    if (p.value.shape.length === 2 || p.value.shape.length === 3) matmulParams += p.value.size;
    if (k === 'model.embed_tokens.weight' && model.lmHead !== model.embed) weightBytes -= bytes; // untied: lookup only
  }
  const attnLayers = model.kinds.filter((k) => k === 'attention').length;
  const m = model.cfg.mamba;
  let stateBytesPerSeq = 0;
  if (m) {
    const mambaLayers = model.kinds.length - attnLayers;
    const per = m.version === 1 ? m.mamba1.dInner * (m.mamba1.dState + m.mamba1.dConv - 1)
      : m.mamba2.nHeads * m.mamba2.headDim * m.mamba2.dState + (2 * m.mamba2.dXb + m.mamba2.nGroups * m.mamba2.dState) * (m.mamba2.dConv - 1);
    // both Mamba-1 states are stored in --ssm-dtype (StatePoolSizes.ssmDType); Mamba-2 keeps f32
    stateBytesPerSeq = mambaLayers * per * (m.version === 1 && o.ssmDtype === 'bf16' ? 2 : 4);
  }
  return {
    weightBytes, matmulParams, attnLayers, kvHeads: l.numKvHeads, qHeads: l.numHeads, headDim: l.headDim,
    stateBytesPerSeq, kvBytesPerToken: attnLayers * 2 * l.numKvHeads * l.headDim * 2,
  };
}

function roofline(s: Shape, B: number, L: number, bw: number, tf: number): { bytes: number; flops: number; seconds: number } {
  const bytes = s.weightBytes + B * L * s.kvBytesPerToken + 2 * B * s.stateBytesPerSeq;
  const flops = 2 * s.matmulParams * B + 4 * B * L * s.qHeads * s.headDim * s.attnLayers;
  return { bytes, flops, seconds: Math.max(bytes / (bw * 1e12), flops / (tf * 1e12)) };
}

/**
 * time one decode step of B sequences all at context L; null when the KV cache does not fit. peakBytes: the most device
 * memory the allocator held during the point (weights, the state pool, activations, the graph's pool), where the
 * backend reports it
 */
function stepTime(be: Backend, model: CausalLM, s: Shape, B: number, L: number, warmupS = 0): { secs: number; peakBytes: number | null } | null {
  const bs = o.blockSize;
  const blocksPerSeq = Math.ceil((L + o.steps + 4) / bs);
  const kvBytes = s.attnLayers > 0 ? B * blocksPerSeq * bs * s.kvBytesPerToken : 0;
  if (kvBytes + B * s.stateBytesPerSeq > o.memGib * 2 ** 30) return null;
  memory.resetPeakMemory?.();
  // tidy: a pool that fails to allocate half-way must not leak what it did allocate
  const states = be.tidy(() => model.allocateState({ slots: B, kvBlocks: Math.max(1, B * blocksPerSeq), blockSize: bs, kvDType: 'bf16', ssmDType: o.ssmDtype }));
  let graph: StepGraph | null = null;
  // the pool is freed whatever happens (an out-of-memory step must not leave the next point less memory)
  try {
    if (o.kvFill === 'random') fillRandomKv(be, states, B * 7 + L);
    // row b of the table: sequence b's blocks, by --block-order
    const blockTables = new Int32Array(B * blocksPerSeq);
    for (let b = 0; b < B; b++) {
      for (let j = 0; j < blocksPerSeq; j++) blockTables[b * blocksPerSeq + j] = o.blockOrder === 'contiguous' ? b * blocksPerSeq + j : j * B + b;
    }
    if (o.blockOrder === 'shuffled') {
      const rng = new Rng(B * 131 + L), perm = Int32Array.from({ length: B * blocksPerSeq }, (_, i) => i);
      for (let i = perm.length - 1; i > 0; i--) {
        const k = rng.int(i + 1);
        [perm[i], perm[k]] = [perm[k]!, perm[i]!];
      }
      for (let i = 0; i < blockTables.length; i++) blockTables[i] = perm[blockTables[i]!]!;
    }
    const info: DecodeInfo = {
      n: B, slots: Int32Array.from({ length: B }, (_, i) => i), positions: new Int32Array(B), slotMapping: new Int32Array(B),
      blockTables, maxBlocks: blocksPerSeq, seqLens: new Int32Array(B),
    };
    const ids = Int32Array.from({ length: B }, (_, i) => (i * 7919) % model.vocabSize);
    const setPos = (pos: number) => {
      for (let i = 0; i < B; i++) {
        info.positions[i] = pos;
        info.seqLens[i] = pos + 1;
        info.slotMapping[i] = blockTables[i * blocksPerSeq + Math.floor(pos / bs)]! * bs + (pos % bs);
      }
    };
    const inputs = [ids, info.slots, info.positions, info.slotMapping, info.blockTables, info.seqLens];
    let eagerDone = false;
    const run = (pos: number) => {
      setPos(pos);
      if (o.graphs) {
        // recorded at the second step of the point (full block-table width), replayed after; the first
        // runs eagerly, as the engine's does (one-time work, such as a new shape's matmul plan, is not captured)
        if (!graph && !eagerDone) {
          eagerDone = true;
          return be.tidy(() => pick(be, model.step(ids, states, info)));
        }
        const logits = graph ? graph.replay(inputs) : (graph = be.captureStepGraph!(inputs, () => be.tidy(() => model.step(ids, states, info)))).output;
        return be.tidy(() => pick(be, logits));
      }
      // greedy (or sampled) on the device; its copy back synchronises. tidy frees the step's activations at once.
      return be.tidy(() => pick(be, model.step(ids, states, info)));
    };
    if (profiler) profiler.enabled = false;
    const tw = performance.now();
    do run(L - 2); while ((performance.now() - tw) / 1000 < warmupS);
    run(L - 1);
    const t0 = performance.now();
    for (let k = 0; k < o.steps; k++) run(L + k);
    const secs = (performance.now() - t0) / 1000 / o.steps;
    const peakBytes = memory.memoryStats?.().peakReservedBytes ?? null;
    if (profiler) {
      // host time: how long JavaScript takes to issue one step (the GPU runs behind it); if it is close to
      // the step time, the step is launch-bound
      let host = 0;
      for (let k = 0; k < o.steps; k++) {
        setPos(L + k);
        sync(be);
        const th = performance.now();
        be.tidy(() => {
          model.step(ids, states, info);
          host += performance.now() - th;
          sync(be);
        });
      }
      profiler.reset();
      profiler.enabled = true;
      for (let k = 0; k < o.steps; k++) run(L + k);
      profiler.enabled = false;
      const ops = profiler.top().map((e) => ({ op: e.op, callsPerStep: e.calls / o.steps, msPerStep: (1000 * e.seconds) / o.steps }));
      const total = ops.reduce((a, e) => a + e.msPerStep, 0);
      profiles.push({ model: model.cfg.mamba ? 'm1' : 'llama', batch: B, context: L, stepMs: secs * 1000, hostIssueMs: host / o.steps, profiledSumMs: total, ops });
      process.stderr.write(`profile B=${B} L=${L}: step ${(secs * 1000).toFixed(2)} ms, host issue ${(host / o.steps).toFixed(2)} ms, sum of synced ops ${total.toFixed(2)} ms\n`);
      for (const e of ops.slice(0, 18)) process.stderr.write(`  ${e.msPerStep.toFixed(3).padStart(8)} ms  ${String(e.callsPerStep).padStart(4)}×  ${e.op}\n`);
    }
    return { secs, peakBytes };
  } finally {
    (graph as StepGraph | null)?.dispose();
    for (const st of states) for (const t of Object.values(st)) if (typeof t === 'object') (t as { dispose(): void }).dispose();
  }
}

/** Σ over contexts P..P+G−1 of the step time, linear between measured contexts (flat beyond the ends) */
function integrate(points: [number, number][], P: number, G: number): number {
  const at = (L: number) => {
    if (L <= points[0]![0]) return points[0]![1];
    for (let i = 1; i < points.length; i++) {
      const [l0, t0] = points[i - 1]!, [l1, t1] = points[i]!;
      if (L <= l1) return t0 + ((t1 - t0) * (L - l0)) / (l1 - l0);
    }
    const n = points.length;
    const [l0, t0] = points[n - 2]!, [l1, t1] = points[n - 1]!;
    return t1 + ((t1 - t0) * (L - l1)) / (l1 - l0); // extrapolate the last slope (KV reads grow linearly)
  };
  let s = 0;
  for (let L = P; L < P + G; L += 16) s += at(L + 8) * Math.min(16, P + G - L);
  return s;
}

/** a usage error: printed as its message alone (other errors keep their stack) */
class UsageError extends Error {}
function fail(msg: string): never {
  throw new UsageError(msg);
}

async function main() {
  if (o.report) {
    let r: DecodeResult;
    try {
      r = JSON.parse(readFileSync(o.report, 'utf8')) as DecodeResult;
    } catch (e) {
      fail(`--report ${o.report}: ${(e as Error).message}`);
    }
    for (const k of ['options', 'points', 'batchSweep', 'lengthSweep'] as const) {
      if (!r[k]) fail(`--report ${o.report}: not a bench:decode result (no "${k}")`);
    }
    console.log(`wrote ${writeReport(o.report, r)}`);
    return;
  }
  if (o.zeroWeights && o.randomWeights) fail('--zero-weights and --random-weights exclude each other');
  if (o.graphs && o.profile) fail('--graphs and --profile cannot be combined (the profiler times ops one by one; a graph runs them as one launch)');
  const inner = await createBackend(o.backend);
  if (o.graphs && !inner.captureStepGraph) fail(`--graphs: the ${o.backend} backend cannot record graphs (use --backend cuda)`);
  if (sampling && !inner.sampleRows) fail(`--temperature / --top-p: the ${o.backend} backend has no sampleRows`);
  if (o.profile) profiler = new OpProfiler(inner);
  memory = inner as typeof memory;
  const be = profiler ? profiler.be : inner;
  const result: Record<string, unknown> = { backend: o.backend, options: o, method: 'step time measured at contexts, latency integrated over the generated length; prefill excluded' };
  const perModel: Record<string, { shape: Shape; points: Record<number, [number, number][]> }> = {};
  const rows: (string | number)[][] = [];
  const pointsJson: Record<string, unknown>[] = [];
  for (const [name, dir] of ([['m1-3b', o.m1], ['llama-3.2-3b', o.llama]] as const).filter(([n]) => o.models.includes(n))) {
    const t0 = performance.now();
    const cfg = () => presetConfig(name === 'm1-3b' ? 'm1' : 'llama', name);
    const model = o.zeroWeights ? zeroModel(be, cfg()) : o.randomWeights ? randomModel(be, cfg(), 1)
      : loadModel(dir ?? fail(`--${name.startsWith('m1') ? 'm1' : 'llama'}, --zero-weights or --random-weights is required`), be).model;
    process.stderr.write(`${o.zeroWeights || o.randomWeights ? 'built' : 'loaded'} ${name} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    const s = shapeOf(model);
    const points: Record<number, [number, number][]> = {};
    const batches = [...new Set([...o.batches, o.lengthBatch])].sort((a, b) => a - b);
    const contexts = [...new Set([...o.contexts, ...o.lengths.map((g) => o.prompt + g)])].sort((a, b) => a - b);
    const started = performance.now();
    for (const B of batches) {
      points[B] = [];
      for (const L of contexts) {
        if (B !== o.lengthBatch && L > Math.max(...o.contexts)) continue;
        if ((performance.now() - started) / 1000 > o.budgetS) {
          rows.push([name, B, L, 'skipped (time budget)', '', '', '', '', '']);
          pointsJson.push({ model: name, batch: B, context: L, skipped: 'time budget' });
          continue;
        }
        let timed: { secs: number; peakBytes: number | null } | null;
        try {
          timed = stepTime(be, model, s, B, L, B === batches[0] && L === contexts[0] ? o.warmupS : 0);
        } catch (e) {
          if (!/out of memory/i.test((e as Error).message)) throw e;
          timed = null; // the allocator could not place the cache: the same verdict as the estimate
          const ms = (be as { memoryStats?: () => unknown }).memoryStats?.();
          process.stderr.write(`${name} B=${B} L=${L}: out of memory (${(e as Error).message.split('\n')[0]}); allocator ${JSON.stringify(ms)}\n`);
        }
        emptyCache(be);
        const roof = roofline(s, B, L, o.bandwidth, o.tflops);
        if (timed === null) {
          rows.push([name, B, L, 'no fit', '', '', '', '', '']);
          pointsJson.push({ model: name, batch: B, context: L, fits: false });
          continue;
        }
        const { secs, peakBytes } = timed;
        points[B].push([L, secs]);
        const frac = roof.seconds / secs;
        const peak = peakBytes === null ? '-' : (peakBytes / 2 ** 30).toFixed(1);
        rows.push([name, B, L, secs * 1000, B / secs, roof.bytes / 1e9, roof.seconds * 1000, `${(100 * frac).toFixed(0)}%`, peak]);
        pointsJson.push({ model: name, batch: B, context: L, fits: true, stepMs: secs * 1000, tokensPerS: B / secs, bytes: roof.bytes, flops: roof.flops, rooflineMs: roof.seconds * 1000, rooflineFraction: frac, peakBytes });
        process.stderr.write(`${name} B=${B} L=${L}: ${(secs * 1000).toFixed(2)} ms/step, ${(B / secs).toFixed(0)} tok/s, ${(100 * frac).toFixed(0)}% of roofline, peak ${peak} GiB${samplingNote()}\n`);
      }
    }
    perModel[name] = { shape: s, points };
    model.params().forEach(([, p]) => p.value.dispose());
    emptyCache(be);
  }
  console.log(`decode step (${o.backend}, ${o.ssmDtype} Mamba states); roofline = max(bytes / ${o.bandwidth} TB/s, FLOPs / ${o.tflops} TFLOP/s); peak GiB: the most device memory the allocator held during the point, weights included`);
  console.log(table(['model', 'batch', 'context', 'ms/step', 'tokens/s', 'GB/step', 'roofline ms', 'of roofline', 'peak GiB'], rows));

  const latency = (name: string, B: number, G: number) => {
    const pts = perModel[name]!.points[B] ?? [];
    const maxCtx = o.prompt + G;
    // a point whose largest context did not fit cannot be integrated honestly
    if (pts.length < 2 || pts[pts.length - 1]![0] < Math.min(maxCtx, Math.max(...o.contexts)) * 0.99) return null;
    return integrate(pts, o.prompt, G);
  };
  const batchRows: (string | number)[][] = [];
  const batchJson: Record<string, unknown>[] = [];
  // A batch whose cache does not fit is what a server meets as a queue: the requests run in waves of the
  // largest measured batch that does fit (the slowest wave sets the pace; no preemption modelled).
  const waves = (name: string, B: number): { batch: number; waves: number; seconds: number } | null => {
    if (!perModel[name]) return null;
    for (const b of [...o.batches].filter((x) => x < B).sort((x, y) => y - x)) {
      const s = latency(name, b, o.gen);
      if (s !== null) return { batch: b, waves: Math.ceil(B / b), seconds: Math.ceil(B / b) * s };
    }
    return null;
  };
  const waveRows: (string | number)[][] = [];
  for (const B of o.batches) {
    const a = perModel['llama-3.2-3b'] ? latency('llama-3.2-3b', B, o.gen) : null, b = perModel['m1-3b'] ? latency('m1-3b', B, o.gen) : null;
    batchRows.push([B, a === null ? 'no fit' : a, b === null ? 'no fit' : b, a !== null && b !== null ? `×${(a / b).toFixed(2)}` : '-', b === null ? '-' : (B * o.gen) / b]);
    const wa = a === null && b !== null ? waves('llama-3.2-3b', B) : null;
    if (wa && b !== null) waveRows.push([B, `${wa.waves} × ${wa.batch}`, wa.seconds, b, `×${(wa.seconds / b).toFixed(2)}`]);
    batchJson.push({ batch: B, gen: o.gen, llamaSeconds: a, m1Seconds: b, speedup: a !== null && b !== null ? a / b : null, m1TokensPerS: b === null ? null : (B * o.gen) / b, ...(wa && b !== null ? { llamaWaves: wa, speedupWaves: wa.seconds / b } : {}) });
  }
  console.log(`\nlatency of prompt ${o.prompt} + ${o.gen} generated tokens vs batch (seconds; M1 paper Fig. 1: ×1.11 … ×3.01)`);
  console.log(table(['batch', 'llama-3.2-3b s', 'm1-3b s', 'M1 speedup', 'm1 tokens/s'], batchRows));
  if (waveRows.length) {
    console.log(`\nwhere Llama's cache does not fit: its requests served in waves of the largest batch that fits (measured above), against M1 at the full batch`);
    console.log(table(['requests', 'llama waves', 'llama-3.2-3b s', 'm1-3b s', 'M1 speedup'], waveRows));
  }
  const lenRows: (string | number)[][] = [];
  const lenJson: Record<string, unknown>[] = [];
  for (const G of o.lengths) {
    const a = perModel['llama-3.2-3b'] ? latency('llama-3.2-3b', o.lengthBatch, G) : null, b = perModel['m1-3b'] ? latency('m1-3b', o.lengthBatch, G) : null;
    lenRows.push([G, a === null ? 'no fit' : a, b === null ? 'no fit' : b, a !== null && b !== null ? `×${(a / b).toFixed(2)}` : '-']);
    lenJson.push({ batch: o.lengthBatch, gen: G, llamaSeconds: a, m1Seconds: b, speedup: a !== null && b !== null ? a / b : null });
  }
  console.log(`\nlatency vs generated length at batch ${o.lengthBatch} (M1 paper Fig. 2: ×2.15 … ×2.64)`);
  console.log(table(['generated', 'llama-3.2-3b s', 'm1-3b s', 'M1 speedup'], lenRows));
  const path = writeResult(`${o.name}-${o.backend}`, { ...result, points: pointsJson, ...(profiles.length ? { profiles } : {}), batchSweep: batchJson, lengthSweep: lenJson, shapes: Object.fromEntries(Object.entries(perModel).map(([k, v]) => [k, v.shape])) });
  if (sampling) console.log(`\nsampled with be.sampleRows (T ${o.temperature ?? 1}, top-p ${o.topP ?? 1}): ${sampledOnHost} of ${sampledRows} rows fell back to the host`);
  const html = writeReport(path, { date: new Date().toISOString(), backend: o.backend, options: o, points: pointsJson as DecodeResult['points'], batchSweep: batchJson as DecodeResult['batchSweep'], lengthSweep: lenJson as DecodeResult['lengthSweep'] });
  console.log(`\nwrote ${path}\nwrote ${html}`);
}

main().catch((e) => {
  console.error(e instanceof UsageError ? `bench:decode: ${e.message}` : e);
  process.exit(1);
});
