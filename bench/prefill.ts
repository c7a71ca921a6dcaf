// npm run bench:prefill — prefill speed of the M1-3B and Llama-3.2-3B shapes at 8k–32k prompts (issue 7).
//
// Method. Each point is the engine's prefill of B prompts of length L (src/infer/engine.ts, Engine.prefill):
// model.forward over [B, L] with the decode state pools and a StateWrite, so every attention layer writes
// its K/V into paged blocks and every Mamba layer its conv + SSM state into a slot; then the last
// position's hidden row is split off and multiplied by the LM head, and the device argmax of those
// logits (greedy sampling's read-back) ends the point, which also synchronises. Weights are zero bf16
// made on the device: the time of a forward does not depend on the values. Reported is the median of
// --repeats timed runs after one untimed warm-up. FLOPs are counted, not measured:
//   matmul    = 2 · (Σ *proj.weight params) · B·L  +  2 · V·D · B   (LM head on the last position only, as the engine)
//   attention = Σ over attention layers of 2 · B · L² · Hq · Dh   (QKᵀ and PV, causal half)
// Roofline time = (matmul + attention FLOPs) / --tflops; the Mamba scans, norms and elementwise ops are
// not in it. Peak memory: see PeakMemory in common.ts (device allocator high-water mark, or host RSS).
import { Command } from 'commander';
import { createBackend } from '../src/backend/registry.js';
import type { Backend } from '../src/backend/backend.js';
import type { Tensor } from '../src/backend/tensor.js';
import type { CausalLM } from '../src/model/model.js';
import { plainSeqInfo, type LayerState, type StateWrite } from '../src/model/module.js';
import { emptyCache, GiB, matmulParams, PeakMemory, presetConfig, sync, table, writeResult, zeroModel } from './common.js';
import { OpProfiler } from './op-profile.js';
import { lastPositions } from '../src/infer/engine.js';

const list = (v: string) => v.split(',').map((x) => Number(x.trim()));
const program = new Command()
  .option('--backend <name>', 'cpu | cuda', 'cuda')
  .option('--models <list>', 'which of m1-3b, llama-3.2-3b to run', (v: string) => v.split(','), ['m1-3b', 'llama-3.2-3b'])
  .option('--preset-m1 <name>', 'preset of the hybrid shape (tiny / small for a CPU check)', 'm1-3b')
  .option('--preset-llama <name>', 'preset of the transformer shape (tiny / small for a CPU check)', 'llama-3.2-3b')
  .option('--lengths <list>', 'prompt lengths', list, [8192, 16384, 32768])
  .option('--batch <n>', 'prompts per prefill (rows of one forward)', Number, 1)
  .option('--repeats <n>', 'timed runs per point (median reported)', Number, 3)
  .option('--block-size <n>', 'KV block size', Number, 16)
  .option('--kv-dtype <d>', 'KV cache dtype (the Engine allocates f32 pools)', 'f32')
  .option('--tflops <n>', 'bf16 matmul peak of the roofline, TFLOP/s (measured on the H200)', Number, 790)
  .option('--budget-s <n>', 'stop measuring new points after this many seconds per model', Number, 1e9)
  .option('--profile', 'time every op of one more run (a sync around each op) at --profile-length and print where it goes')
  .option('--profile-length <n>', 'prompt length of the profile (default: the first of --lengths)', Number)
  .option('--matmul-precision <p>', 'f32 × f32 products (the attention forward): highest = f32 kernels | high | medium = bf16 tensor cores', 'medium')
  .option('--name <s>', 'results file name', 'prefill')
  .parse(process.argv);
const o = program.opts<{
  backend: string; models: string[]; presetM1: string; presetLlama: string; lengths: number[]; batch: number; repeats: number;
  blockSize: number; kvDtype: string; tflops: number; budgetS: number; profile?: boolean; profileLength?: number; name: string;
  matmulPrecision: string;
}>();

for (const [k, v] of [['--batch', o.batch], ['--repeats', o.repeats], ['--block-size', o.blockSize], ...o.lengths.map((l) => ['--lengths', l] as const)] as const) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${k} must be a positive integer, got ${v}`);
}
if (o.kvDtype !== 'f32' && o.kvDtype !== 'bf16') throw new Error(`--kv-dtype must be f32 or bf16, got "${o.kvDtype}"`);
for (const m of o.models) if (m !== 'm1-3b' && m !== 'llama-3.2-3b') throw new Error(`--models: unknown model "${m}" (m1-3b, llama-3.2-3b)`);

interface Flops { matmul: number; attention: number }

function flopsOf(model: CausalLM, B: number, L: number): Flops {
  const mm = matmulParams(model);
  const l = model.cfg.llama;
  const attnLayers = model.kinds.filter((k) => k === 'attention').length;
  return { matmul: 2 * mm.stack * B * L + 2 * mm.head * B, attention: attnLayers * 2 * B * L * L * l.numHeads * l.headDim };
}

function disposeStates(states: LayerState[]): void {
  for (const st of states) for (const t of Object.values(st)) if (typeof t === 'object') (t as Tensor).dispose();
}

/** one engine prefill of B rows of L tokens into fresh state; ends with the device argmax (a sync) */
function prefillOnce(be: Backend, model: CausalLM, ids: Int32Array, B: number, L: number, states: LayerState[], stateWrite: StateWrite): void {
  const D = model.hiddenSize;
  be.tidy(() => {
    // as Engine.prefill: the forward in its own tidy, state written in place into pools made outside
    const hidden = be.tidy(() => model.forward(ids, plainSeqInfo(B, L), { states, stateWrite }).hidden);
    const last = lastPositions(be, hidden, B, L, D);
    const logits = model.logits(last);
    be.argmaxRows(logits);
    logits.dispose();
    last.dispose();
  });
}

async function main() {
  const inner = await createBackend(o.backend, { matmulPrecision: o.matmulPrecision });
  const profiler = o.profile ? new OpProfiler(inner) : null;
  if (profiler) profiler.enabled = false;
  const be = profiler ? profiler.be : inner;
  const mem = new PeakMemory(inner);
  const profileLength = o.profileLength ?? o.lengths[0]!;
  const method = [
    'engine prefill path: model.forward(ids [B, L], states + stateWrite) → split off the last position → LM head → device argmax (sync)',
    'zero bf16 weights made on the device; KV pools ' + o.kvDtype + ', block size ' + o.blockSize,
    `--matmul-precision ${o.matmulPrecision}: ${o.matmulPrecision === 'medium' ? 'attention forward on the tensor cores (bf16 q, k, v, P; f32 softmax)' : 'attention forward in f32'}; weight matmuls are bf16 either way`,
    `time: median of ${o.repeats} timed runs after 1 warm-up, wall clock around the whole prefill`,
    'matmul FLOPs = 2·(Σ *proj.weight)·B·L + 2·V·D·B (LM head on the last position only, as the engine)',
    'attention FLOPs = Σ_attn layers 2·B·L²·Hq·Dh (QKᵀ + PV, causal half)',
    `roofline = (matmul + attention FLOPs) / ${o.tflops} TFLOP/s; "of roofline" = roofline / measured time`,
    `peak memory: ${mem.source}`,
  ];
  process.stdout.write(method.map((m) => `# ${m}\n`).join(''));
  const rows: (string | number)[][] = [];
  const points: Record<string, unknown>[] = [];
  const profiles: Record<string, unknown>[] = [];
  const presets: Record<string, string> = { 'm1-3b': o.presetM1, 'llama-3.2-3b': o.presetLlama };
  for (const name of o.models) {
    const arch = name === 'm1-3b' ? 'm1' : 'llama';
    const label = presets[name] === name ? name : `${arch}:${presets[name]}`;
    const t0 = performance.now();
    const model = zeroModel(be, presetConfig(arch, presets[name]!));
    sync(inner);
    process.stderr.write(`built ${label} (zero weights) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    const started = performance.now();
    for (const L of o.lengths) {
      const B = o.batch;
      if (L >= model.cfg.llama.maxPositionEmbeddings) {
        rows.push([label, L, `longer than max_position_embeddings ${model.cfg.llama.maxPositionEmbeddings}`, '', '', '', '', '', '', '']);
        points.push({ model: label, length: L, batch: B, skipped: 'longer than max_position_embeddings' });
        continue;
      }
      if ((performance.now() - started) / 1000 > o.budgetS) {
        rows.push([label, L, 'skipped (time budget)', '', '', '', '', '', '', '']);
        points.push({ model: label, length: L, batch: B, skipped: 'time budget' });
        continue;
      }
      const bs = o.blockSize, blocksPerSeq = Math.ceil(L / bs);
      const ids = Int32Array.from({ length: B * L }, (_, i) => (i * 7919 + 13) % model.vocabSize);
      const stateWrite: StateWrite = { slots: Int32Array.from({ length: B }, (_, b) => b), slotMapping: new Int32Array(B * L) };
      for (let b = 0; b < B; b++) for (let t = 0; t < L; t++) stateWrite.slotMapping[b * L + t] = b * blocksPerSeq * bs + t;
      let states: LayerState[] = [];
      const times: number[] = [];
      let peak: number | null = null;
      try {
        states = be.tidy(() => model.allocateState({ slots: B, kvBlocks: B * blocksPerSeq, blockSize: bs, kvDType: o.kvDtype as 'f32' | 'bf16' }));
        sync(inner);
        mem.reset();
        prefillOnce(be, model, ids, B, L, states, stateWrite);
        for (let r = 0; r < o.repeats; r++) {
          const ts = performance.now();
          prefillOnce(be, model, ids, B, L, states, stateWrite);
          times.push((performance.now() - ts) / 1000);
        }
        peak = mem.peak();
        if (profiler && L === profileLength) {
          profiler.reset();
          profiler.enabled = true;
          prefillOnce(be, model, ids, B, L, states, stateWrite);
          profiler.enabled = false;
          const ops = profiler.top().map((e) => ({ op: e.op, calls: e.calls, ms: 1000 * e.seconds }));
          const total = ops.reduce((a, e) => a + e.ms, 0);
          const median = [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
          profiles.push({ model: label, length: L, batch: B, prefillMs: 1000 * median, profiledSumMs: total, ops });
          process.stderr.write(`profile ${label} L=${L}: prefill ${(1000 * median).toFixed(1)} ms, sum of synced ops ${total.toFixed(1)} ms\n`);
          for (const e of ops.slice(0, 24)) process.stderr.write(`  ${e.ms.toFixed(2).padStart(10)} ms  ${String(e.calls).padStart(5)}×  ${e.op}\n`);
        }
      } catch (e) {
        if (!/out of memory/i.test((e as Error).message)) throw e;
        rows.push([label, L, 'out of memory', '', '', '', '', '', '', '']);
        points.push({ model: label, length: L, batch: B, fits: false, error: (e as Error).message.split('\n')[0] });
        process.stderr.write(`${label} L=${L}: out of memory\n`);
        continue;
      } finally {
        if (profiler) profiler.enabled = false;
        disposeStates(states);
        emptyCache(inner);
      }
      times.sort((a, b) => a - b);
      const secs = times[Math.floor(times.length / 2)]!;
      const f = flopsOf(model, B, L);
      const roof = (f.matmul + f.attention) / (o.tflops * 1e12);
      const tokS = (B * L) / secs;
      rows.push([label, L, secs.toFixed(3), tokS, f.matmul / 1e12, f.attention / 1e12, roof * 1000, `${((100 * roof) / secs).toFixed(1)}%`, peak === null ? 'not measured' : peak / GiB]);
      points.push({
        model: label, length: L, batch: B, fits: true, seconds: secs, times, tokensPerS: tokS, matmulFlops: f.matmul, attentionFlops: f.attention,
        rooflineSeconds: roof, rooflineFraction: roof / secs, matmulRooflineSeconds: f.matmul / (o.tflops * 1e12), peakBytes: peak,
      });
      process.stderr.write(`${label} L=${L}: ${secs.toFixed(3)} s, ${tokS.toFixed(0)} tok/s, ${((100 * roof) / secs).toFixed(1)}% of roofline\n`);
    }
    model.params().forEach(([, p]) => p.value.dispose());
    emptyCache(inner);
  }
  console.log(`\nprefill, batch ${o.batch} (${o.backend})`);
  console.log(table(['model', 'prompt', 'seconds', 'tokens/s', 'matmul TFLOP', 'attn TFLOP', 'roofline ms', 'of roofline', o.backend === 'cpu' ? 'RSS GiB' : 'peak GiB'], rows));
  const path = writeResult(`${o.name}-${o.backend}`, { backend: o.backend, options: o, method, points, ...(profiles.length ? { profiles } : {}) });
  console.log(`\nwrote ${path}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
