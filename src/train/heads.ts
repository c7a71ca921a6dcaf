// Fused LM head + loss, walking the vocabulary in chunks: the [tokens × vocab] logits never exist at once.
//
// For a chunk of rows (tokens with mask ≠ 0 only) and each vocabulary chunk, logits = h · W_chunkᵀ are
// made, folded into per-row online-softmax statistics (pass 1: lse, target logit, Σp·z or Σp·(z − z_teacher)),
// and dropped. The loss of each row then follows from its statistics alone; its gradient w.r.t. the logits
// is p·(c0 + c2·(z − other)) + ct·onehot with per-row coefficients (Backend.softmaxChunkGrad), so pass 2
// turns each logits chunk straight into dHidden and dW contributions — the chunk kept from pass 1
// (keepLogits, the default: one row chunk's logits in memory) or recomputed (less memory, one product more).
//
// Row gathers and scatters use the embedding ops: `embedding(t, rows)` is a row gather of t [N, D],
// `embeddingBackward(dT, rows, dy)` a scatter-add. Vocabulary chunks of W (and of its gradient) are
// contiguous rows: rowSlice views, read by the matmuls and accumulated into without a copy.
import type { Backend } from '../backend/backend.js';
import type { Tensor } from '../backend/tensor.js';
import type { Param } from '../model/module.js';

export interface ChunkOptions {
  /** tokens per row chunk (default 256) */
  rowChunk?: number;
  /** vocabulary columns per chunk (default 8192) */
  vocabChunk?: number;
  /**
   * divide the summed per-token loss by this (default: the number of masked tokens in this call).
   * Gradient accumulation passes the token count of all micro-batches of the step, so the result
   * equals one big batch exactly.
   */
  normalizer?: number;
  /** compute dHidden and accumulate dW (default true) */
  needGrad?: boolean;
  /**
   * keep each row chunk's logits from the statistics pass for the gradient pass instead of recomputing
   * them (default true). Same result; costs rowChunk × V × 4 bytes per model (twice with a teacher)
   * while a row chunk is in flight — 0.13 GB a model at 256 rows of a 128k vocabulary — and saves the
   * second logits product. With vocabChunk ≥ V the head becomes a few large products per row chunk.
   */
  keepLogits?: boolean;
}

export interface HeadResult {
  /** Σ per-token loss / normalizer */
  loss: number;
  /** [rows, D] shaped like `hidden` (zero on unmasked rows); null when needGrad is false */
  dHidden: Tensor | null;
  /** number of masked tokens */
  tokens: number;
  /** per-token sums of the head's diagnostics (divide by `tokens` for means) */
  sums: Record<string, number>;
}

/** the LM head a loss is taken through: the student's trainable weight [V, D] */
export interface LmHeadTarget {
  /** [rows, D] or [B, T, D] — final-norm output */
  hidden: Tensor;
  /** [V, D]; its grad is accumulated */
  weight: Param;
  /** [rows] next-token ids, full vocabulary */
  targets: Int32Array;
  /** [rows] loss on rows with mask ≠ 0 */
  mask: Uint8Array;
}

interface RowStats {
  lse: number;
  /** scaled target logit */
  zt: number;
  /** Σ_v p_v (z_v − other_v), or Σ p z without other */
  pDiff: number;
}

interface HeadSpec {
  scale: number;
  useTargets: boolean;
  teacher: { hidden: Tensor; weight: Tensor } | null;
  /**
   * loss of (masked) hidden row `row` from its statistics, and the
   * coefficients of its logits gradient (before the 1/normalizer factor): [c0, c2, ct]
   */
  row: (row: number, s: RowStats, teacherLse: number) => { loss: number; coefs: [number, number, number]; sums: Record<string, number> };
}

/** what runHead needs: the weight as a tensor, and the Param to accumulate its gradient into (if any) */
interface HeadInput {
  hidden: Tensor;
  weight: Tensor;
  weightParam: Param | null;
  targets: Int32Array;
  mask: Uint8Array;
}

function checkInputs(t: HeadInput, what: string): { rows: number; D: number; V: number; selected: Int32Array } {
  const [V, D] = t.weight.shape as [number, number];
  if (t.weight.shape.length !== 2) throw new Error(`${what}: LM head weight must be [V, D], got [${t.weight.shape.join(', ')}]`);
  const hd = t.hidden.shape[t.hidden.shape.length - 1]!;
  if (hd !== D) throw new Error(`${what}: hidden last dim ${hd} does not match LM head weight [${V}, ${D}]`);
  const rows = t.hidden.size / D;
  if (t.targets.length !== rows) throw new Error(`${what}: ${t.targets.length} targets for ${rows} hidden rows`);
  if (t.mask.length !== rows) throw new Error(`${what}: mask has ${t.mask.length} entries for ${rows} hidden rows`);
  let n = 0;
  for (let i = 0; i < rows; i++) if (t.mask[i] !== 0) n++;
  const selected = new Int32Array(n);
  n = 0;
  for (let i = 0; i < rows; i++) {
    if (t.mask[i] === 0) continue;
    const id = t.targets[i]!;
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new Error(`${what}: targets[${i}] = ${id} is outside the vocabulary [0, ${V})`);
    selected[n++] = i;
  }
  return { rows, D, V, selected };
}

function runHead(be: Backend, t: HeadInput, spec: HeadSpec, opts: ChunkOptions, what: string): HeadResult {
  const { rows, D, V, selected } = checkInputs(t, what);
  const rowChunk = opts.rowChunk ?? 256, vocabChunk = opts.vocabChunk ?? 8192, keepLogits = opts.keepLogits ?? true;
  if (!(rowChunk >= 1) || !(vocabChunk >= 1)) throw new Error(`${what}: rowChunk and vocabChunk must be ≥ 1`);
  const needGrad = (opts.needGrad ?? true) && t.weightParam !== null;
  const N = selected.length;
  const norm = opts.normalizer ?? N;
  if (N > 0 && !(norm > 0)) throw new Error(`${what}: normalizer must be > 0, got ${norm}`);
  const teacher = spec.teacher;
  if (teacher) {
    const [tV, tD] = teacher.weight.shape as [number, number];
    if (tV !== V) throw new Error(`${what}: teacher vocabulary ${tV} differs from the student's ${V}`);
    if (teacher.hidden.size !== rows * tD) throw new Error(`${what}: teacher hidden [${teacher.hidden.shape.join(', ')}] does not hold ${rows} rows of width ${tD}`);
  }
  const hidden2 = be.reshape(t.hidden, [rows, D]);
  const tHidden2 = teacher ? be.reshape(teacher.hidden, [rows, teacher.weight.shape[1]!]) : null;
  const dHidden = needGrad ? be.zeros([rows, D]) : null;
  const dW = needGrad && t.weightParam ? t.weightParam.ensureGrad(be) : null;
  const vocabChunks: { v0: number; v1: number }[] = [];
  for (let v0 = 0; v0 < V; v0 += vocabChunk) vocabChunks.push({ v0, v1: Math.min(V, v0 + vocabChunk) });

  let lossSum = 0;
  const sums: Record<string, number> = {};
  for (let r0 = 0; r0 < N; r0 += rowChunk) {
    const rowIds = selected.subarray(r0, Math.min(N, r0 + rowChunk));
    const R = rowIds.length;
    const targets = spec.useTargets ? Int32Array.from(rowIds, (i) => t.targets[i]!) : null;
    const h = be.embedding(hidden2, rowIds); // [R, D]
    const th = tHidden2 ? be.embedding(tHidden2, rowIds) : null; // [R, Dt]
    const init = new Float32Array(R * 4);
    for (let i = 0; i < R; i++) init[4 * i] = -Infinity;
    const stats = be.fromArray(init, [R, 4]);
    const tStats = teacher ? be.fromArray(init, [R, 4]) : null;

    // logits of one vocabulary chunk for the student (and teacher): [R, Vc]
    const chunkLogits = (c: { v0: number; v1: number }): { w: Tensor; z: Tensor; tz: Tensor | null } => {
      const w = be.rowSlice(t.weight, c.v0, c.v1);
      const z = be.matmul(h, w, { transB: true });
      const tz = teacher && th ? be.matmul(th, be.rowSlice(teacher.weight, c.v0, c.v1), { transB: true }) : null;
      return { w, z, tz };
    };

    // each chunk's [R, Vc] blocks are freed as soon as they are folded in (tidy: device memory stays at
    // one chunk's worth however large the vocabulary and the number of rows), unless kept for pass 2
    const keep = needGrad && keepLogits;
    const kept: { z: Tensor; tz: Tensor | null }[] = [];
    for (const c of vocabChunks) {
      const zs = be.tidy(() => {
        const { z, tz } = chunkLogits(c);
        if (tz && tStats) be.softmaxChunkStats(tz, tStats, { scale: 1, vocabOffset: c.v0 });
        be.softmaxChunkStats(z, stats, { scale: spec.scale, vocabOffset: c.v0, targets, other: tz });
        return keep ? { z, tz } : null;
      });
      if (zs) kept.push(zs);
    }
    // The per-row loss and gradient coefficients are a handful of scalars per row: they are worked
    // out on the host (R×4 floats each way), the [R, Vc] blocks never leave the backend.
    const st = be.read(stats);
    const tst = tStats ? be.read(tStats) : null;
    const coefs = new Float32Array(R * 4);
    for (let i = 0; i < R; i++) {
      const lse = st[4 * i]! + Math.log(st[4 * i + 1]!);
      const s: RowStats = { lse, zt: st[4 * i + 3]!, pDiff: st[4 * i + 2]! / st[4 * i + 1]! };
      const tLse = tst ? tst[4 * i]! + Math.log(tst[4 * i + 1]!) : 0;
      const r = spec.row(rowIds[i]!, s, tLse);
      lossSum += r.loss;
      for (const [k, v] of Object.entries(r.sums)) sums[k] = (sums[k] ?? 0) + v;
      coefs[4 * i] = lse;
      coefs[4 * i + 1] = r.coefs[0] / norm;
      coefs[4 * i + 2] = r.coefs[1] / norm;
      coefs[4 * i + 3] = r.coefs[2] / norm;
    }
    if (!needGrad || !dHidden || !dW) {
      for (const x of [h, th, stats, tStats]) x?.dispose();
      continue;
    }

    const coefT = be.fromArray(coefs, [R, 4]);
    const dh = be.zeros([R, D]);
    vocabChunks.forEach((c, ci) => {
      be.tidy(() => {
        const { w, z, tz } = keep ? { w: be.rowSlice(t.weight, c.v0, c.v1), ...kept[ci]! } : chunkLogits(c);
        const dz = be.softmaxChunkGrad(z, coefT, { scale: spec.scale, vocabOffset: c.v0, targets, other: tz }); // [R, Vc]
        if (keep) {
          z.dispose();
          tz?.dispose();
        }
        be.matmul(dz, w, { accumulateInto: dh });
        be.matmul(dz, h, { transA: true, accumulateInto: be.rowSlice(dW, c.v0, c.v1) }); // dW[chunk] += dzᵀ h
      });
    });
    be.embeddingBackward(dHidden, rowIds, dh);
    for (const x of [h, th, stats, tStats, coefT, dh]) x?.dispose();
  }
  return {
    loss: N > 0 ? lossSum / norm : 0,
    dHidden: dHidden ? be.reshape(dHidden, t.hidden.shape) : null,
    tokens: N,
    sums,
  };
}

function headInput(t: LmHeadTarget): HeadInput {
  return { hidden: t.hidden, weight: t.weight.value, weightParam: t.weight, targets: t.targets, mask: t.mask };
}

/** SFT / pretraining: mean cross-entropy −log p(target) over masked tokens */
export function sftLoss(be: Backend, t: LmHeadTarget, opts: ChunkOptions = {}): HeadResult {
  return runHead(be, headInput(t), {
    scale: 1, useTargets: true, teacher: null,
    row: (_row, s) => {
      const ce = s.lse - s.zt;
      return { loss: ce, coefs: [1, 0, -1], sums: { ce } };
    },
  }, opts, 'sftLoss');
}

export interface DistillOptions extends ChunkOptions {
  /** teacher final-norm output for the same tokens: [rows, Dt] or [B, T, Dt] */
  teacherHidden: Tensor;
  /** teacher LM head weight [V, Dt] (frozen) */
  teacherWeight: Tensor;
  /** loss = (1 − klWeight)·CE + klWeight·KL; M1 uses 1 (pure reverse KL) */
  klWeight?: number;
}

/**
 * Distillation (M1 stage 1): token-level reverse KL(p_student ‖ p_teacher) = Σ_v p_s (log p_s − log p_t),
 * mixed with CE as M1's trainer does. Per row: KL = Σ p_s (z_s − z_t) − lse_s + lse_t.
 */
export function distillLoss(be: Backend, t: LmHeadTarget, opts: DistillOptions): HeadResult {
  const k = opts.klWeight ?? 1;
  if (!(k >= 0 && k <= 1)) throw new Error(`distillLoss: klWeight must lie in [0, 1], got ${k}`);
  return runHead(be, headInput(t), {
    scale: 1, useTargets: true, teacher: { hidden: opts.teacherHidden, weight: opts.teacherWeight },
    row: (_row, s, tLse) => {
      const ce = s.lse - s.zt;
      const kl = s.pDiff - s.lse + tLse;
      // CE: (1−k)(p − onehot); KL: k·p·((z − z_t) − Σp(z − z_t))
      return { loss: (1 - k) * ce + k * kl, coefs: [(1 - k) - k * s.pDiff, k, -(1 - k)], sums: { ce, kl } };
    },
  }, opts, 'distillLoss');
}

export interface GrpoOptions extends ChunkOptions {
  /** [rows] advantage of the sequence each token belongs to (see grpoAdvantages) */
  advantages: Float32Array;
  /**
   * [rows] log-probabilities of the targets under the rollout policy, at the same temperature; null
   * when the weights being differentiated are the rollout policy (one update per step): then
   * log p_old = log p, the ratio is exactly 1 and no separate forward is needed for it
   */
  oldLogprobs: Float32Array | null;
  /** PPO clip ε (default 0.2) */
  clip?: number;
  /** entropy bonus η: loss = pg − η·H (default 0; M1 uses 0.01) */
  entropyCoef?: number;
  /** rollout temperature: logits are divided by it before the softmax (default 1) */
  temperature?: number;
}

/**
 * GRPO policy loss (M1 stage 3, veRL's): per token ratio = exp(log p − log p_old),
 * pg = max(−Â·ratio, −Â·clip(ratio, 1−ε, 1+ε)); loss = token-mean(pg) − η·token-mean(H). No KL term.
 */
export function grpoLoss(be: Backend, t: LmHeadTarget, opts: GrpoOptions): HeadResult {
  const clip = opts.clip ?? 0.2, eta = opts.entropyCoef ?? 0, temp = opts.temperature ?? 1;
  const rows = t.targets.length;
  if (opts.advantages.length !== rows) throw new Error(`grpoLoss: ${opts.advantages.length} advantages for ${rows} rows`);
  if (opts.oldLogprobs && opts.oldLogprobs.length !== rows) throw new Error(`grpoLoss: ${opts.oldLogprobs.length} old logprobs for ${rows} rows`);
  if (!(temp > 0)) throw new Error(`grpoLoss: temperature must be > 0, got ${temp}`);
  if (!(clip >= 0)) throw new Error(`grpoLoss: clip must be ≥ 0, got ${clip}`);
  return runHead(be, headInput(t), {
    scale: 1 / temp, useTargets: true, teacher: null,
    row: (row, s) => {
      const A = opts.advantages[row]!;
      const logp = s.zt - s.lse;
      const old = opts.oldLogprobs ? opts.oldLogprobs[row]! : logp;
      const H = s.lse - s.pDiff;
      const ratio = Math.exp(logp - old);
      const pg1 = -A * ratio;
      const pg2 = -A * Math.min(Math.max(ratio, 1 - clip), 1 + clip);
      const clipped = pg2 > pg1;
      const pg = clipped ? pg2 : pg1;
      // dpg/dlogp: the clipped branch is constant in θ
      const g = clipped ? 0 : -A * ratio;
      // pg: g·(onehot − p) → c0 −g, ct g;  −η·H: c2 η, c0 −η(lse − H)
      return {
        loss: pg - eta * H,
        coefs: [-g - eta * (s.lse - H), eta, g],
        sums: { pg, entropy: H, clipped: clipped ? 1 : 0, ratio, approx_kl: old - logp },
      };
    },
  }, opts, 'grpoLoss');
}

/**
 * log p(target) per row at a temperature (0 on unmasked rows), and the entropy of each row's
 * distribution, without gradients: the "old" logprobs of a rollout batch.
 */
export function tokenLogprobs(
  be: Backend, t: Omit<LmHeadTarget, 'weight'> & { weight: Tensor }, opts: { temperature?: number; rowChunk?: number; vocabChunk?: number } = {},
): { logprobs: Float32Array; entropy: Float32Array } {
  const rows = t.targets.length;
  const logprobs = new Float32Array(rows), entropy = new Float32Array(rows);
  const temp = opts.temperature ?? 1;
  if (!(temp > 0)) throw new Error(`tokenLogprobs: temperature must be > 0, got ${temp}`);
  runHead(be, { ...t, weightParam: null }, {
    scale: 1 / temp, useTargets: true, teacher: null,
    row: (row, s) => {
      logprobs[row] = s.zt - s.lse;
      entropy[row] = s.lse - s.pDiff;
      return { loss: 0, coefs: [0, 0, 0], sums: {} };
    },
  }, { rowChunk: opts.rowChunk, vocabChunk: opts.vocabChunk, needGrad: false }, 'tokenLogprobs');
  return { logprobs, entropy };
}

/**
 * GRPO advantages (veRL `compute_grpo_outcome_advantage`): rewards are laid out group by group
 * (groupSize consecutive samples of one prompt); Â_i = (r_i − mean_group) / (std_group + 1e-6), with
 * the unbiased std (torch.std). A group of one gets mean 0 and std 1, as veRL does.
 */
export function grpoAdvantages(rewards: ArrayLike<number>, groupSize: number): Float32Array {
  if (!Number.isInteger(groupSize) || groupSize < 1) throw new Error(`grpoAdvantages: groupSize must be an integer ≥ 1, got ${groupSize}`);
  if (rewards.length % groupSize !== 0) throw new Error(`grpoAdvantages: ${rewards.length} rewards are not a whole number of groups of ${groupSize}`);
  const out = new Float32Array(rewards.length);
  for (let g0 = 0; g0 < rewards.length; g0 += groupSize) {
    let mean = 0, std = 1;
    if (groupSize > 1) {
      for (let i = 0; i < groupSize; i++) mean += rewards[g0 + i]!;
      mean /= groupSize;
      let ss = 0;
      for (let i = 0; i < groupSize; i++) ss += (rewards[g0 + i]! - mean) ** 2;
      std = Math.sqrt(ss / (groupSize - 1));
    }
    for (let i = 0; i < groupSize; i++) out[g0 + i] = (rewards[g0 + i]! - mean) / (std + 1e-6);
  }
  return out;
}
