// npm run bench:train — one distillation step of the M1-3B shape against a frozen Llama-3.2-3B-shape
// teacher at sequence length 8192 (issue 7).
//
// Method. The step makes the calls the Trainer makes for the distill stage (Trainer.run +
// distillStage.microStep): zero the student's gradients; inside one tidy: teacher forward (no
// backward), student forward (saving, or with activation recomputation), the fused reverse-KL head
// (distillLoss, klWeight 1), student backward from the head's dHidden; then global-norm clipping, the
// AdamW step (f32 master weights and moments, M1's β = (0.9, 0.95), wd 0.1) and the Trainer's
// weight-finiteness check. One difference, for memory: the head is called once per slice of
// --head-rows rows (a mask selecting the slice, the step's token count as the normalizer, rowChunk =
// the slice), each call in its own tidy, and the slices' dHidden are summed. That is the same loss and
// gradient as one call (each row's terms are computed by exactly one call); one call would keep every
// vocabulary chunk's temporaries of every row chunk alive until the step ends (hundreds of GB at 8192).
// Weights are random (see randomModel in common.ts). Timed: --steps steps after one warm-up step,
// median reported; --phases adds a device sync between phases to time each (the sum then includes the
// syncs). MFU counts useful matmul FLOPs only:
//   FLOPs = 6 · N_student · tokens + 2 · N_teacher · tokens, N = Σ *proj.weight params + LM head V·D,
// against --tflops; the recompute forward (and, with --no-head-keep-logits, the head's logit
// recomputation) is not counted. cuBLASLt algorithms: timed once per shape for every product
// (--matmul-tune all, the default here: M1_MATMUL_TUNE=all; the library's default times decode-sized
// products only).
// A second figure adds llm.c's attention term (train_gpt2.cu, gpt2_estimate_mfu: 6·L·C·T per token for
// the causal QKᵀ and PV products, forward + backward):
//   FLOPs_llmc = FLOPs + (6 · L_attn · C · T + 2 · L_teacher · C_teacher · T) · tokens,
// L_attn = the student's attention layers (not Mamba), C = heads · head_dim, T = sequence length; the
// teacher's term is forward only.
import { Command } from 'commander';
import { createBackend } from '../src/backend/registry.js';
import { MATMUL_PRECISIONS, type Backend, type MatmulPrecision } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/index.js';
import type { Tensor } from '../src/backend/tensor.js';
import { CausalLM, layerKinds, modelParamSpecs, type ModelConfig } from '../src/model/model.js';
import { plainSeqInfo, type SeqInfo } from '../src/model/module.js';
import { distillLoss } from '../src/train/heads.js';
import { AdamW, M1_ADAMW } from '../src/train/optim.js';
import { allocateGrads } from '../src/train/trainer.js';
import { OpProfiler } from './op-profile.js';
import { GiB, matmulParams, paramCounts, PeakMemory, presetConfig, randomModel, sync, table, writeResult } from './common.js';

const program = new Command()
  .option('--backend <name>', 'cpu | cuda', 'cuda')
  .option('--preset-m1 <name>', 'student preset (tiny / small for a CPU check)', 'm1-3b')
  .option('--preset-llama <name>', 'teacher preset (tiny / small for a CPU check)', 'llama-3.2-3b')
  .option('--seq-len <n>', 'tokens per row', Number, 8192)
  .option('--batch <n>', 'rows per step', Number, 1)
  .option('--steps <n>', 'timed steps (after 1 warm-up step)', Number, 2)
  .option('--phases', 'sync between phases and time each (teacher fwd, student fwd, head, student bwd, optimizer)')
  .option('--recompute <mode>', 'activation recomputation: on (every layer) | off | a layer count k (the first k layers) | auto (the fewest layers that keep the estimate within --mem-limit-gib)', 'auto')
  .option('--mem-limit-gib <n>', 'device memory budget of the estimate', Number, 135)
  .option('--head-rows <n>', 'rows per call of the distillation head (its row chunk)', Number, 1024)
  .option('--head-vocab-chunk <n>', 'vocabulary columns per logits product of the head (the trainer\'s --vocab-chunk); the default covers a 128k vocabulary in one product', Number, 131072)
  .option('--no-head-keep-logits', 'recompute the logits in the head\'s gradient pass (the trainer\'s --no-keep-logits)')
  .option('--lr <x>', 'learning rate of the AdamW step', Number, 1e-5)
  .option('--grad-clip <x>', 'global-norm clip, as the Trainer (0 = off)', Number, 1)
  .option('--tflops <n>', 'bf16 matmul peak, TFLOP/s (measured on the H200)', Number, 790)
  .option('--seed <n>', 'weight and token seed', Number, 1)
  .option('--estimate-only', 'print the memory estimate and FLOP counts of the shapes and exit (no weights are made, no backend is used)')
  .option('--matmul-tune <mode>', 'cuBLASLt algorithm choice on the cuda backend: all (time every shape once: M1_MATMUL_TUNE=all) | small (the library default: decode-sized products only) | off (the heuristic\'s first)', 'all')
  .option('--matmul-precision <p>', `f32 × f32 matmuls (the weight gradients): ${MATMUL_PRECISIONS.join(' | ')} (torch.set_float32_matmul_precision's names; medium = bf16 operands, as autocast)`, 'medium')
  .option('--profile', 'after the timed steps, time every op of one more step (a sync around each op) and print where it goes')
  .option('--name <s>', 'results file name', 'train')
  .parse(process.argv);
const o = program.opts<{
  backend: string; presetM1: string; presetLlama: string; seqLen: number; batch: number; steps: number; phases?: boolean;
  recompute: string; memLimitGib: number; headRows: number; headVocabChunk: number; headKeepLogits: boolean; lr: number; gradClip: number; tflops: number; seed: number; name: string;
  estimateOnly?: boolean; matmulPrecision: MatmulPrecision; profile?: boolean; matmulTune: string;
}>();
if (!['all', 'small', 'off'].includes(o.matmulTune)) throw new Error(`--matmul-tune must be all, small or off, got "${o.matmulTune}"`);
if (process.env['M1_MATMUL_TUNE'] === undefined && o.matmulTune !== 'small') process.env['M1_MATMUL_TUNE'] = o.matmulTune === 'all' ? 'all' : '0';
if (!MATMUL_PRECISIONS.includes(o.matmulPrecision)) throw new Error(`--matmul-precision must be one of ${MATMUL_PRECISIONS.join(', ')}, got "${o.matmulPrecision}"`);
for (const [k, v] of [['--seq-len', o.seqLen], ['--batch', o.batch], ['--steps', o.steps], ['--head-rows', o.headRows], ['--head-vocab-chunk', o.headVocabChunk]] as const) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${k} must be a positive integer, got ${v}`);
}
if (!['on', 'off', 'auto'].includes(o.recompute) && !/^\d+$/.test(o.recompute)) throw new Error(`--recompute must be on, off, auto or a layer count, got "${o.recompute}"`);

const PHASES = ['teacher forward', 'student forward', 'head', 'student backward', 'optimizer'] as const;
type Phase = (typeof PHASES)[number];

// ---------------------------------------------------------------- memory estimate

interface Estimate {
  lines: [string, number][]; withRecompute: number; withoutRecompute: number;
  /** the estimate with the first k layers recomputed and the others keeping their activations */
  recomputing(k: number): number;
}

/**
 * f32 values per token that one layer's forward allocates: without a per-layer tidy all of them stay live
 * until the step's tidy ends. Activations are f32, except — on the cuda backend, whose products round their
 * activation to bf16 (matmulInputDType) — the two norms' outputs and SwiGLU's, which it emits as bf16
 * (counted as half an f32 each).
 */
function layerForwardPerToken(model: CausalLM, i: number): number {
  const l = model.cfg.llama, D = l.hiddenSize, I = l.intermediateSize;
  const half = o.backend === 'cuda' ? 0.5 : 1; // bf16 matmul inputs
  const common = 3 * D + half * (2 * D + I) + 2 * I; // h, out, mlp y; n1, n2, swiglu; gate, up
  if (model.kinds[i] === 'attention') {
    const q = l.numHeads * l.headDim, kv = l.numKvHeads * l.headDim;
    const split = model.cfg.arch === 'm1' ? q + 2 * kv : 0; // the hybrid's fused in_proj is split (copies)
    return common + (q + 2 * kv) + split + q + kv + q + l.numHeads + D; // proj, split, rope q/k, out, lse, o_proj
  }
  if (model.kinds[i] === 'mamba1') {
    const m = model.cfg.mamba!.mamba1;
    const proj = 2 * m.dInner + 2 * m.dXb + m.dtRank;
    // cuda: plus the scan's checkpoints for its backward, the state every 16 steps (selectiveScanCheckpointShape)
    const ckpt = o.backend === 'cuda' ? (m.dInner * m.dState) / 16 : 0;
    return common + 2 * proj + 6 * m.dInner + D + ckpt; // proj + split; x, B repeated, dt, delta, xConv, y; out_proj
  }
  throw new Error(`memory estimate: layer kind ${model.kinds[i]} is not modelled (the issue's student is Mamba-1)`);
}

function estimate(student: CausalLM, teacher: CausalLM, tokens: number, headRows: number): Estimate {
  const s = paramCounts(student), t = paramCounts(teacher);
  const D = student.hiddenSize, Dt = teacher.hiddenSize, V = student.vocabSize;
  const weights = 2 * s.half + 4 * s.f32;
  const teacherWeights = 2 * t.half + 4 * t.f32;
  const master = 4 * s.half, moments = 8 * s.total, grads = 4 * s.total;
  const perLayer = student.layers.map((_, i) => 4 * tokens * layerForwardPerToken(student, i));
  const teacherLayer = Math.max(...teacher.layers.map((_, i) => 4 * tokens * layerForwardPerToken(teacher, i)));
  const forwardAll = perLayer.reduce((a, b) => a + b, 0);
  const maxLayer = Math.max(...perLayer);
  const stream = 4 * tokens * D;
  // head, one call: its dHidden [tokens, D], the gathered rows [R, D + Dt], one vocabulary chunk's logits of both
  // models and dz [R, Vc] (f32) with the bf16 rounding of dz that its products read, and — logits kept, the
  // default — the call's logits of both models [R, V] from pass 1 to pass 2 (the weight chunks are views)
  const Vc = Math.min(o.headVocabChunk, V), R = Math.min(headRows, tokens);
  const head = stream + 4 * R * (D + Dt) + 4 * 3 * R * Vc + 2 * R * Vc + (o.headKeepLogits ? 2 * 4 * R * V : 0);
  const lines: [string, number][] = [
    ['student weights (bf16; f32 where kept)', weights],
    ['teacher weights (bf16)', teacherWeights],
    ['AdamW f32 master weights', master],
    ['AdamW f32 m + v', moments],
    ['student f32 gradients', grads],
    ['teacher forward: stream + one layer (per-layer tidy)', 2 * 4 * tokens * Dt + teacherLayer],
    ['student hidden + teacher hidden + head dHidden sum', 2 * stream + 4 * tokens * Dt],
    ['head working set (one --head-rows call)', head],
    ['without recompute: forward allocations of all layers', forwardAll],
    ['backward of one layer (temporaries freed per layer; a recomputed layer: rerun forward + backward ≈ 2 × forward)', 2 * maxLayer],
    ['with recompute: layer-input checkpoints', (student.layers.length + 1) * stream],
  ];
  const base = weights + teacherWeights + master + moments + grads + lines[5]![1] + lines[6]![1];
  // the head's working set is freed before the backward starts: the peak is the larger of the two
  const recomputing = (k: number) => base + (k + 1) * stream + perLayer.slice(k).reduce((a, b) => a + b, 0) + Math.max(head, 2 * maxLayer);
  return { lines, withoutRecompute: recomputing(0), withRecompute: recomputing(perLayer.length), recomputing };
}

// ---------------------------------------------------------------- the step

interface StepResult { seconds: number; phases: Record<Phase, number> | null; loss: number; gradNorm: number }

function makeBatch(V: number, B: number, T: number, seed: number): { ids: Int32Array; targets: Int32Array; mask: Uint8Array; seq: SeqInfo } {
  const ids = new Int32Array(B * T), targets = new Int32Array(B * T), mask = new Uint8Array(B * T);
  let x = seed >>> 0;
  for (let i = 0; i < B * T; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    ids[i] = (x >>> 8) % V;
  }
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T - 1; t++) {
      targets[b * T + t] = ids[b * T + t + 1]!;
      mask[b * T + t] = 1; // the last position of a row has no next token
    }
  }
  return { ids, targets, mask, seq: plainSeqInfo(B, T) };
}

function step(
  be: Backend, student: CausalLM, teacher: CausalLM, opt: AdamW, batch: ReturnType<typeof makeBatch>, recompute: number, phases: boolean,
): StepResult {
  const times = Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<Phase, number>;
  let mark = performance.now();
  const phase = (p: Phase): void => {
    if (!phases) return;
    sync(be);
    const now = performance.now();
    times[p] += (now - mark) / 1000;
    mark = now;
  };
  const t0 = performance.now();
  const normalizer = Math.max(1, batch.mask.reduce((a, m) => a + m, 0));
  const rows = batch.ids.length;
  student.zeroGrads();
  const loss = be.tidy(() => {
    const t = teacher.forward(batch.ids, batch.seq, { needBackward: false });
    phase('teacher forward');
    const { hidden, saved } = student.forward(batch.ids, batch.seq, { needBackward: true, recompute });
    phase('student forward');
    const dHidden = be.zeros(hidden.shape);
    let lossSum = 0;
    for (let r0 = 0; r0 < rows; r0 += o.headRows) {
      const mask = new Uint8Array(rows);
      mask.set(batch.mask.subarray(r0, Math.min(rows, r0 + o.headRows)), r0);
      lossSum += be.tidy(() => {
        const r = distillLoss(be, { hidden, weight: student.lmHead, targets: batch.targets, mask }, {
          normalizer, teacherHidden: t.hidden, teacherWeight: teacher.lmHead.value, klWeight: 1, rowChunk: o.headRows,
          vocabChunk: o.headVocabChunk, keepLogits: o.headKeepLogits,
        });
        be.addInPlace(dHidden, r.dHidden!);
        return r.loss;
      });
    }
    t.hidden.dispose();
    phase('head');
    student.backwardFromHidden(dHidden, saved!);
    phase('student backward');
    return lossSum;
  });
  const gradNorm = o.gradClip > 0 ? opt.clipGradNorm(o.gradClip) : opt.gradNorm();
  opt.step(o.lr);
  // the Trainer's check of every weight after the update (AdamW counted non-finite ones as it stored them: one wait for the device)
  if (!opt.weightsFinite(student.params())) throw new Error('a weight is not finite after the update');
  sync(be);
  phase('optimizer');
  return { seconds: (performance.now() - t0) / 1000, phases: phases ? times : null, loss, gradNorm };
}

/** the model's structure without values: tensors that only carry shape and dtype (for --estimate-only) */
function shapeOnlyModel(be: Backend, cfg: ModelConfig): CausalLM {
  const specs = new Map(modelParamSpecs(cfg).map((sp) => [sp.key, sp]));
  return new CausalLM(be, cfg, (key, shape) => {
    const dtype = specs.get(key)?.keepF32 ? 'f32' : 'bf16';
    const t: Tensor = { shape: [...shape], size: shape.reduce((a, b) => a * b, 1), dtype, backend: be, dispose: () => undefined };
    return t;
  });
}

async function main() {
  const B = o.batch, T = o.seqLen, tokens = B * T;
  const t0 = performance.now();
  const studentCfg = presetConfig('m1', o.presetM1), teacherCfg = presetConfig('llama', o.presetLlama);
  if (T > studentCfg.llama.maxPositionEmbeddings) throw new Error(`--seq-len ${T} exceeds the student's max_position_embeddings ${studentCfg.llama.maxPositionEmbeddings}`);
  const inner: Backend = o.estimateOnly ? new CpuBackend() : await createBackend(o.backend);
  inner.setFloat32MatmulPrecision?.(o.matmulPrecision);
  const profiler = o.profile ? new OpProfiler(inner) : null;
  if (profiler) profiler.enabled = false;
  const be = profiler ? profiler.be : inner;
  const mem = new PeakMemory(be);
  const student = o.estimateOnly ? shapeOnlyModel(be, studentCfg) : randomModel(be, studentCfg, o.seed);
  const teacher = o.estimateOnly ? shapeOnlyModel(be, teacherCfg) : randomModel(be, teacherCfg, o.seed + 1);
  sync(be);
  const buildS = (performance.now() - t0) / 1000;

  const est = estimate(student, teacher, tokens, o.headRows);
  const limit = o.memLimitGib * GiB;
  const L = student.layers.length;
  let recompute = o.recompute === 'on' ? L : o.recompute === 'off' ? 0 : o.recompute === 'auto' ? 0 : Number(o.recompute);
  if (recompute > L) throw new Error(`--recompute ${recompute}: the student has ${L} layers`);
  if (o.recompute === 'auto') while (recompute < L && est.recomputing(recompute) > limit) recompute++;
  const ms = matmulParams(student), mt = matmulParams(teacher);
  const nStudent = ms.stack + ms.head, nTeacher = mt.stack + mt.head;
  const flops = 6 * nStudent * tokens + 2 * nTeacher * tokens;
  // llm.c's attention term (gpt2_estimate_mfu): 6·L·C·T per token for forward + backward, 2·L·C·T forward only
  const attnLayers = (cfg: ModelConfig) => layerKinds(cfg).filter((k) => k === 'attention').length;
  const lAttn = attnLayers(studentCfg), cStudent = studentCfg.llama.numHeads * studentCfg.llama.headDim;
  const lTeacher = attnLayers(teacherCfg), cTeacher = teacherCfg.llama.numHeads * teacherCfg.llama.headDim;
  const attentionFlops = (6 * lAttn * cStudent * T + 2 * lTeacher * cTeacher * T) * tokens;
  const flopsLlmc = flops + attentionFlops;
  const method = [
    `distill step (Trainer.run + distillStage.microStep calls): student ${o.presetM1}, frozen teacher ${o.presetLlama}, batch ${B} × seq ${T}, reverse KL (klWeight 1)`,
    `head: distillLoss per slice of ${o.headRows} rows (mask = the slice, normalizer = the step's ${tokens - B} label tokens), each call in its own tidy, dHidden summed; vocabulary chunks of ${o.headVocabChunk}; logits ${o.headKeepLogits ? 'kept from the statistics pass for the gradient pass' : 'recomputed in the gradient pass'}`,
    `AdamW ${JSON.stringify(M1_ADAMW)}, lr ${o.lr}, f32 master + moments; grad clip ${o.gradClip}; weight finiteness check as the Trainer`,
    `weights: random on the device (randomModel: reference init for ≤2^20-value params, rows gathered from a 16 MB N(0, 0.02²) block for large ones), built in ${buildS.toFixed(1)} s`,
    `activation recomputation: ${recompute} of ${L} layers (the first ones; --recompute ${o.recompute}), estimate ${(est.recomputing(recompute) / GiB).toFixed(1)} GiB`,
    `f32 × f32 matmuls (weight gradients): --matmul-precision ${o.matmulPrecision}${inner.setFloat32MatmulPrecision ? '' : ' (ignored: this backend computes f32)'}; cuBLASLt algorithms: M1_MATMUL_TUNE=${process.env['M1_MATMUL_TUNE'] ?? '(unset: decode-sized products timed)'}`,
    `time: median over ${o.steps} timed step(s) after 1 warm-up step; ${o.phases ? 'device sync between phases (--phases)' : 'one sync at the end of each step'}`,
    `MFU = (6·N_student + 2·N_teacher)·tokens / (seconds · ${o.tflops} TFLOP/s); N = Σ *proj.weight + LM head (V·D): N_student = ${(nStudent / 1e9).toFixed(3)} B, N_teacher = ${(nTeacher / 1e9).toFixed(3)} B, tokens = ${tokens}`,
    `MFU (llm.c: + attention) = (6·N_student + 6·L_attn·C·T + 2·N_teacher + 2·L_teacher·C_teacher·T)·tokens / (seconds · ${o.tflops} TFLOP/s) (llm.c gpt2_estimate_mfu's causal QKᵀ + PV term): L_attn = ${lAttn} of ${L} student layers, C = ${cStudent}, L_teacher = ${lTeacher}, C_teacher = ${cTeacher}, T = ${T}`,
    `FLOPs per step: ${(flops / 1e12).toFixed(2)} TFLOP (6·N_student + 2·N_teacher) + ${(attentionFlops / 1e12).toFixed(2)} TFLOP (attention) = ${(flopsLlmc / 1e12).toFixed(2)} TFLOP`,
    `peak memory: ${o.estimateOnly ? 'not measured (--estimate-only)' : mem.source}`,
  ];
  process.stdout.write(method.map((m) => `# ${m}\n`).join(''));
  console.log(`\nmemory estimate (computed, not measured) for seq ${T}, batch ${B}; budget ${o.memLimitGib} GiB`);
  console.log(table(['component', 'GiB'], est.lines.map(([k, v]) => [k, (v / GiB).toFixed(2)])));
  console.log(`total without recompute ≈ ${(est.withoutRecompute / GiB).toFixed(1)} GiB (${est.withoutRecompute > limit ? 'over' : 'within'} budget); with recompute ≈ ${(est.withRecompute / GiB).toFixed(1)} GiB (${est.withRecompute > limit ? 'over' : 'within'} budget)\n`);

  if (o.estimateOnly) {
    console.log(`N_student = ${nStudent} (stack ${ms.stack} + head ${ms.head}), N_teacher = ${nTeacher}; FLOPs per step = ${(flops / 1e12).toFixed(1)} TFLOP → ${(flops / (o.tflops * 1e9)).toFixed(0)} ms at ${o.tflops} TFLOP/s`);
    return;
  }
  const opt = new AdamW(be, student.params(), M1_ADAMW);
  allocateGrads(be, student);
  const batch = makeBatch(student.vocabSize, B, T, o.seed);
  const results: StepResult[] = [];
  let peak: number | null = null;
  let error: string | null = null;
  let profileOut: Record<string, unknown> | null = null;
  try {
    sync(be);
    mem.reset();
    const warm = step(be, student, teacher, opt, batch, recompute, !!o.phases);
    process.stderr.write(`warm-up step: ${warm.seconds.toFixed(2)} s, loss ${warm.loss.toPrecision(8)}, grad norm ${warm.gradNorm.toPrecision(8)}\n`);
    for (let k = 0; k < o.steps; k++) {
      const r = step(be, student, teacher, opt, batch, recompute, !!o.phases);
      results.push(r);
      process.stderr.write(`step ${k + 1}: ${r.seconds.toFixed(2)} s, loss ${r.loss.toPrecision(8)}, grad norm ${r.gradNorm.toPrecision(8)}\n`);
    }
    peak = mem.peak();
    if (profiler) {
      profiler.reset();
      profiler.enabled = true;
      const r = step(be, student, teacher, opt, batch, recompute, false);
      profiler.enabled = false;
      const ops = profiler.top().map((e) => ({ op: e.op, calls: e.calls, ms: 1000 * e.seconds }));
      const total = ops.reduce((a, e) => a + e.ms, 0);
      process.stderr.write(`profile: step ${r.seconds.toFixed(2)} s with a sync around each op, sum of ops ${(total / 1000).toFixed(2)} s\n`);
      for (const e of ops.slice(0, 40)) process.stderr.write(`  ${e.ms.toFixed(1).padStart(9)} ms ${String(e.calls).padStart(6)}×  ${e.op}\n`);
      profileOut = { stepSeconds: r.seconds, profiledSumMs: total, ops };
    }
  } catch (e) {
    if (!/out of memory/i.test((e as Error).message)) throw e;
    error = (e as Error).message.split('\n')[0]!;
    process.stderr.write(`out of memory: ${error}\n`);
  }
  const payload: Record<string, unknown> = {
    backend: o.backend, options: o, method, recompute, memoryEstimate: { lines: Object.fromEntries(est.lines), withoutRecompute: est.withoutRecompute, withRecompute: est.withRecompute },
    nStudent, nTeacher, flopsPerStep: flops, attentionFlops,
  };
  if (error) {
    console.log('the step ran out of device memory: nothing was timed');
    payload['error'] = error;
  } else {
    const secs = [...results.map((r) => r.seconds)].sort((a, b) => a - b)[Math.floor(results.length / 2)]!;
    const mfu = flops / (secs * o.tflops * 1e12);
    const mfuLlmc = flopsLlmc / (secs * o.tflops * 1e12);
    console.log(table(['student', 'teacher', 'tokens', 'step s', 'tokens/s', 'MFU', 'MFU (llm.c: + attention)', o.backend === 'cpu' ? 'RSS GiB' : 'peak GiB', 'recompute'], [[
      o.presetM1, o.presetLlama, tokens, secs.toFixed(3), tokens / secs, `${(100 * mfu).toFixed(1)}%`, `${(100 * mfuLlmc).toFixed(1)}%`,
      peak === null ? 'not measured' : (peak / GiB).toFixed(2), `${recompute} / ${L}`,
    ]]));
    Object.assign(payload, { stepSeconds: secs, steps: results, tokensPerS: tokens / secs, mfu, mfuLlmc, peakBytes: peak });
    if (o.phases) {
      const mean = Object.fromEntries(PHASES.map((p) => [p, results.reduce((a, r) => a + r.phases![p], 0) / results.length])) as Record<Phase, number>;
      const total = PHASES.reduce((a, p) => a + mean[p], 0);
      console.log(`\nphases (mean over the timed steps, a sync after each)`);
      console.log(table(['phase', 'seconds', 'share'], PHASES.map((p) => [p, mean[p].toFixed(3), `${((100 * mean[p]) / total).toFixed(1)}%`])));
      payload['phases'] = mean;
    }
  }
  if (profileOut) payload['profile'] = profileOut;
  const path = writeResult(`${o.name}-${o.backend}`, payload);
  console.log(`\nwrote ${path}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
