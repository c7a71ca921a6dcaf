// Training on the GPU against the CPU reference: the two online-softmax passes of the fused LM-head
// losses (op level), then one full optimizer step of each stage — SFT, distillation, GRPO — on the
// tiny f32 models through the library functions the trainers use (heads.ts, optim.ts).
//
// Tolerances:
//  - softmaxChunkStats / softmaxChunkGrad: 1e-5 of each column's / the tensor's largest magnitude
//    (the GPU computes each element in f32 and the row sums in f64; the CPU is f64 throughout);
//  - a training step: loss within 1e-5 relative; every gradient within 1e-4 of that parameter's
//    largest |grad| (the backward ops' own bound); updated weights within the Lipschitz bound of the
//    first AdamW update, lr/eps · max|Δgrad| + 1e-6 (eps = 1e-3 keeps that bound small: with
//    eps = 1e-8 a gradient of ~1e-9 whose sign differs by rounding moves a weight by ~lr).
import { describe, expect, it } from 'vitest';
import type { Backend } from '../../src/backend/backend.js';
import type { DType, Tensor } from '../../src/backend/tensor.js';
import { initModel, validateConfigs } from '../../src/model/checkpoint.js';
import type { CausalLM } from '../../src/model/model.js';
import { plainSeqInfo } from '../../src/model/module.js';
import { findPreset } from '../../src/model/presets.js';
import { distillLoss, grpoLoss, sftLoss, tokenLogprobs, type HeadResult } from '../../src/train/heads.js';
import { AdamW } from '../../src/train/optim.js';
import { allocateGrads } from '../../src/train/trainer.js';
import { available, closeArrays, cpu, expectClose, gpu, ints, misaligned, rand, skipReason } from './helpers.js';

/** compare the (m, s, w, zt) / coefficient columns of two [R, 4] blocks one by one */
function closeColumns(got: Float32Array, want: Float32Array, rtol: number, what: string): void {
  const R = want.length / 4;
  for (let c = 0; c < 4; c++) {
    const col = (a: Float32Array) => Float32Array.from({ length: R }, (_, i) => a[4 * i + c]!);
    closeArrays(col(got), col(want), rtol, `${what} column ${c}`);
  }
}

describe.skipIf(!available)(`cuda fused LM-head passes vs cpu${available ? '' : ` (skipped: ${skipReason})`}`, () => {
  const g = gpu!;
  const R = 6, V = 37;
  // vocabulary chunks of unequal widths; targets land in every chunk
  const chunks = [[0, 16], [16, 32], [32, 37]] as const;
  const targets = Int32Array.from([3, 20, 36, 16, 0, 31]);

  /** columns [v0, v1) of a host [R, V] block as a tensor pair */
  function chunkOf(data: Float32Array, v0: number, v1: number, dtype: DType = 'f32'): { c: Tensor; g: Tensor } {
    const w = v1 - v0, sub = new Float32Array(R * w);
    for (let i = 0; i < R; i++) sub.set(data.subarray(i * V + v0, i * V + v1), i * w);
    return { c: cpu.fromArray(sub, [R, w], dtype), g: g.fromArray(sub, [R, w], dtype) };
  }

  for (const variant of ['plain', 'targets', 'teacher + targets', 'bf16 logits'] as const) {
    it(`softmaxChunkStats over 3 chunks, then softmaxChunkGrad (${variant})`, () => {
      const scale = variant === 'plain' ? 1 : 1 / 0.7;
      const dtype: DType = variant === 'bf16 logits' ? 'bf16' : 'f32';
      const logits = rand([R, V], 500, 3).data;
      const teacher = variant === 'teacher + targets' ? rand([R, V], 501, 3).data : null;
      const tg = variant === 'plain' ? null : targets;
      const init = new Float32Array(R * 4);
      for (let i = 0; i < R; i++) init[4 * i] = -Infinity;
      const sc = cpu.fromArray(init, [R, 4]), sg = g.fromArray(init, [R, 4]);
      const parts = chunks.map(([v0, v1]) => ({ v0, z: chunkOf(logits, v0, v1, dtype), o: teacher ? chunkOf(teacher, v0, v1) : null }));
      for (const p of parts) {
        cpu.softmaxChunkStats(p.z.c, sc, { scale, vocabOffset: p.v0, targets: tg, other: p.o?.c ?? null });
        g.softmaxChunkStats(p.z.g, sg, { scale, vocabOffset: p.v0, targets: tg, other: p.o?.g ?? null });
        closeColumns(g.read(sg), cpu.read(sc), 1e-5, `stats after chunk at ${p.v0}`);
      }
      // coefficients: the real lse, and c0 / c2 / ct of mixed signs (row 2: ct = 0, no one-hot term)
      const st = cpu.read(sc);
      const coefs = new Float32Array(R * 4);
      for (let i = 0; i < R; i++) {
        coefs[4 * i] = st[4 * i]! + Math.log(st[4 * i + 1]!);
        coefs[4 * i + 1] = 0.3 - 0.1 * i;
        coefs[4 * i + 2] = i % 2 ? -0.2 : 0.15;
        coefs[4 * i + 3] = i === 2 ? 0 : -0.4 + 0.05 * i;
      }
      const cc = cpu.fromArray(coefs, [R, 4]), cg = g.fromArray(coefs, [R, 4]);
      for (const p of parts) {
        const opts = { scale, vocabOffset: p.v0, targets: tg };
        expectClose(g, g.softmaxChunkGrad(p.z.g, cg, { ...opts, other: p.o?.g ?? null }), cpu.softmaxChunkGrad(p.z.c, cc, { ...opts, other: p.o?.c ?? null }),
          1e-5, `softmaxChunkGrad chunk at ${p.v0}`);
      }
    });
  }

  it('a wide chunk (Vc = 5000, many threads per row) and the shared shape checks', () => {
    const z = rand([3, 5000], 510, 4);
    const init = Float32Array.from([-Infinity, 0, 0, 0, -Infinity, 0, 0, 0, -Infinity, 0, 0, 0]);
    const sc = cpu.fromArray(init, [3, 4]), sg = g.fromArray(init, [3, 4]);
    const tg = Int32Array.from([4999, 0, 2500]);
    cpu.softmaxChunkStats(z.c, sc, { scale: 1, vocabOffset: 0, targets: tg });
    g.softmaxChunkStats(z.g, sg, { scale: 1, vocabOffset: 0, targets: tg });
    closeColumns(g.read(sg), cpu.read(sc), 1e-5, 'wide stats');
    const st = cpu.read(sc);
    const coefs = Float32Array.from([0, 1, 0, -1, 0, 0.5, 0.5, 0.5, 0, -1, 0.2, 1]);
    for (let i = 0; i < 3; i++) coefs[4 * i] = st[4 * i]! + Math.log(st[4 * i + 1]!);
    expectClose(g, g.softmaxChunkGrad(z.g, g.fromArray(coefs, [3, 4]), { scale: 1, vocabOffset: 0, targets: tg }),
      cpu.softmaxChunkGrad(z.c, cpu.fromArray(coefs, [3, 4]), { scale: 1, vocabOffset: 0, targets: tg }), 1e-5, 'wide grad');
    // identical messages on both backends (src/backend/validate.ts)
    for (const be of [cpu, g] as Backend[]) {
      const x = be.zeros([3, 8]);
      expect(() => be.softmaxChunkStats(x, be.zeros([2, 4]), { scale: 1, vocabOffset: 0 })).toThrow('softmaxChunkStats: stats has shape [2, 4], expected [3, 4]');
      expect(() => be.softmaxChunkGrad(x, be.zeros([3, 4]), { scale: 1, vocabOffset: 0, targets: ints(2, 1, 8) })).toThrow('softmaxChunkGrad: 2 targets for 3 rows');
    }
  });

  it('kernel paths: stats with the row in registers (1, 2, 4, 8 float4s per thread) or looping, gradient in float4 or float row tiles', () => {
    // Vc a multiple of 4 up to 16384 on aligned tensors: the stats kernel with the row in registers and the float4 gradient
    // (2052, 5376: partly idle last rounds); 16388: the looping stats kernel, float4 gradient; 5001 or a misaligned logits /
    // teacher view: both on floats; 20000 rows: more than one grid of row tiles for the gradient
    const cases: [number, number, '' | 'logits' | 'teacher'][] = [
      [4, 8192, ''], [3, 16384, ''], [2, 2052, ''], [3, 5376, ''], [2, 16388, ''], [3, 5001, ''], [3, 4096, 'logits'], [3, 4096, 'teacher'],
      [20000, 8, ''],
    ];
    let seed = 520;
    for (const [R, Vc, mis] of cases) {
      for (const teacher of mis === 'teacher' ? [true] : [false, true]) {
        const what = `[${R}, ${Vc}]${teacher ? ' + teacher' : ''}${mis ? `, misaligned ${mis}` : ''}`;
        const scale = 1 / 0.7, vocabOffset = 1000;
        const z = mis === 'logits' ? misaligned([R, Vc], seed++, 4) : rand([R, Vc], seed++, 4);
        const o = teacher ? (mis === 'teacher' ? misaligned([R, Vc], seed++, 4) : rand([R, Vc], seed++, 4)) : null;
        const tg = Int32Array.from(ints(R, seed++, Vc + 100), (t) => t + vocabOffset - 50); // some targets outside the chunk
        // running stats of an earlier chunk on odd rows (rescaled by the merge), none (m = −∞) on even rows
        const init = new Float32Array(R * 4);
        for (let i = 0; i < R; i++) init.set(i % 2 ? [4 + (i % 7), 2.5, 0.3, 1.5] : [-Infinity, 0, 0, 0], 4 * i);
        const sc = cpu.fromArray(init, [R, 4]), sg = g.fromArray(init, [R, 4]);
        cpu.softmaxChunkStats(z.c, sc, { scale, vocabOffset, targets: tg, other: o?.c ?? null });
        g.softmaxChunkStats(z.g, sg, { scale, vocabOffset, targets: tg, other: o?.g ?? null });
        const st = cpu.read(sc);
        closeColumns(g.read(sg), st, 1e-5, `stats ${what}`);
        const coefs = new Float32Array(R * 4);
        for (let i = 0; i < R; i++) coefs.set([st[4 * i]! + Math.log(st[4 * i + 1]!), 0.3 - 0.01 * (i % 50), i % 2 ? -0.2 : 0.15, i % 3 ? -0.4 : 0], 4 * i);
        const opts = { scale, vocabOffset, targets: tg };
        expectClose(g, g.softmaxChunkGrad(z.g, g.fromArray(coefs, [R, 4]), { ...opts, other: o?.g ?? null }),
          cpu.softmaxChunkGrad(z.c, cpu.fromArray(coefs, [R, 4]), { ...opts, other: o?.c ?? null }), 1e-5, `grad ${what}`);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// one optimizer step of each stage

const B = 2, T = 16;
const LR = 1e-2, EPS = 1e-3;
const CHUNKS = { rowChunk: 11, vocabChunk: 100 }; // several row and vocabulary chunks (V = 320)

function tiny(be: Backend, arch: string, preset: string, seed: number): CausalLM {
  const p = findPreset(arch, preset);
  return initModel(be, validateConfigs(p.config, p.mambaConfig), seed, 'f32');
}

interface Batch { ids: Int32Array; targets: Int32Array; mask: Uint8Array }
function batch(V: number): Batch {
  const ids = ints(B * T, 600, V);
  const targets = new Int32Array(B * T);
  for (let i = 0; i < B * T; i++) targets[i] = i % T === T - 1 ? 0 : ids[i + 1]!;
  // the loss skips the first 3 (prompt) and the last position of each row
  const mask = Uint8Array.from({ length: B * T }, (_, i) => (i % T >= 3 && i % T < T - 1 ? 1 : 0));
  return { ids, targets, mask };
}

/** forward + head + backward + one AdamW step on `be`; the loss, the grads (before the step) and the updated weights */
function step(be: Backend, model: CausalLM, head: (hidden: Tensor) => HeadResult): { loss: number; grads: Float32Array[]; weights: Float32Array[] } {
  const opt = new AdamW(be, model.params(), { beta1: 0.9, beta2: 0.95, eps: EPS, weightDecay: 0.1 });
  allocateGrads(be, model);
  const x = batch(model.vocabSize);
  const loss = be.tidy(() => {
    const { hidden, saved } = model.forward(x.ids, plainSeqInfo(B, T), { needBackward: true });
    const r = head(hidden);
    model.backwardFromHidden(r.dHidden!, saved!);
    return r.loss;
  });
  const grads = model.params().map(([, p]) => be.read(p.grad!));
  opt.step(LR);
  return { loss, grads, weights: model.params().map(([, p]) => be.read(p.value)) };
}

function compareSteps(name: string, model: CausalLM, c: ReturnType<typeof step>, g: ReturnType<typeof step>): void {
  expect(Number.isFinite(c.loss)).toBe(true);
  expect(Math.abs(g.loss - c.loss), `${name}: loss cuda ${g.loss} vs cpu ${c.loss}`).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(c.loss)));
  const keys = model.params().map(([k]) => k);
  let worstGrad = 0, worstW = 0, moved = 0;
  keys.forEach((k, i) => {
    const gc = c.grads[i]!, gg = g.grads[i]!;
    let gmax = 0, dg = 0;
    for (let j = 0; j < gc.length; j++) {
      gmax = Math.max(gmax, Math.abs(gc[j]!));
      dg = Math.max(dg, Math.abs(gg[j]! - gc[j]!));
    }
    expect(dg, `${name}: grad of ${k}: max |Δ| ${dg.toExponential(2)} on max |g| ${gmax.toExponential(2)}`).toBeLessThanOrEqual(1e-4 * Math.max(gmax, 1e-6));
    const wc = c.weights[i]!, wg = g.weights[i]!;
    let dw = 0;
    for (let j = 0; j < wc.length; j++) dw = Math.max(dw, Math.abs(wg[j]! - wc[j]!));
    expect(dw, `${name}: updated ${k}: max |Δw| ${dw.toExponential(2)} (max |Δgrad| ${dg.toExponential(2)})`).toBeLessThanOrEqual((LR / EPS) * dg + 1e-6);
    worstGrad = Math.max(worstGrad, gmax > 0 ? dg / gmax : 0);
    worstW = Math.max(worstW, dw);
    moved = Math.max(moved, gmax);
  });
  expect(moved, `${name}: some gradient is nonzero`).toBeGreaterThan(0);
  console.log(`${name}: loss ${c.loss.toFixed(6)} (Δ ${Math.abs(g.loss - c.loss).toExponential(2)}), worst grad Δ/max ${worstGrad.toExponential(2)}, worst |Δw| ${worstW.toExponential(2)}`);
}

describe.skipIf(!available)(`cuda training steps vs cpu${available ? '' : ` (skipped: ${skipReason})`}`, () => {
  for (const [arch, preset] of [['llama', 'tiny'], ['m1', 'tiny'], ['m1', 'mamba2-tiny']] as const) {
    it(`SFT step (sftLoss + backward + AdamW), ${arch}/${preset}`, () => {
      const mc = tiny(cpu, arch, preset, 11), mg = tiny(gpu!, arch, preset, 11);
      const x = batch(mc.vocabSize);
      const run = (be: Backend, m: CausalLM) => step(be, m, (hidden) => sftLoss(be, { hidden, weight: m.lmHead, targets: x.targets, mask: x.mask }, CHUNKS));
      compareSteps(`sft ${arch}/${preset}`, mc, run(cpu, mc), run(gpu!, mg));
    });
  }

  it('distill step (distillLoss, klWeight 0.8, llama teacher → m1 student)', () => {
    const run = (be: Backend) => {
      const student = tiny(be, 'm1', 'tiny', 12), teacher = tiny(be, 'llama', 'tiny', 13);
      const x = batch(student.vocabSize);
      const r = step(be, student, (hidden) => {
        const t = teacher.forward(x.ids, plainSeqInfo(B, T), { needBackward: false });
        return distillLoss(be, { hidden, weight: student.lmHead, targets: x.targets, mask: x.mask }, {
          ...CHUNKS, teacherHidden: t.hidden, teacherWeight: teacher.lmHead.value, klWeight: 0.8,
        });
      });
      return { student, r };
    };
    const c = run(cpu), g = run(gpu!);
    compareSteps('distill m1 ← llama', c.student, c.r, g.r);
  });

  it('GRPO step (grpoLoss, temperature 0.8, clip 0.2, entropy 0.01)', () => {
    const temperature = 0.8;
    // old logprobs = the CPU's current ones shifted by 0 / ±0.5, so the ratios (1, e^±0.5) sit well
    // away from the clip edges 0.8 and 1.2, where rounding could flip a token between clipped and not
    const mc = tiny(cpu, 'm1', 'tiny', 14);
    const x = batch(mc.vocabSize);
    const hidden = mc.forward(x.ids, plainSeqInfo(B, T)).hidden;
    const cur = tokenLogprobs(cpu, { hidden, weight: mc.lmHead.value, targets: x.targets, mask: x.mask }, { temperature }).logprobs;
    const old = Float32Array.from(cur, (v, i) => v + [0, 0.5, -0.5][i % 3]!);
    const advantages = Float32Array.from({ length: B * T }, (_, i) => (i < T ? 0.7 : -1.1));
    const run = (be: Backend, m: CausalLM) => step(be, m, (h) => grpoLoss(be, { hidden: h, weight: m.lmHead, targets: x.targets, mask: x.mask }, {
      ...CHUNKS, advantages, oldLogprobs: old, clip: 0.2, entropyCoef: 0.01, temperature,
    }));
    compareSteps('grpo m1', mc, run(cpu, tiny(cpu, 'm1', 'tiny', 14)), run(gpu!, tiny(gpu!, 'm1', 'tiny', 14)));
  });
});

describe.skipIf(!available)(`cuda training with bf16 weights under precision 'medium'${available ? '' : ` (skipped: ${skipReason})`}`, () => {
  // The norms' and SwiGLU's outputs feed only products with bf16 weights and those weights' gradients dyᵀ·x,
  // which under 'medium' round them to bf16 anyway: the forward stores them as bf16 (savedInputDType). The
  // gradients must be those of the same step storing them as f32: the products read the same bf16 values, so
  // the only differences allowed are the scan / attention backward's atomics' summation order (1e-5 of a
  // parameter's largest gradient; a product reading differently rounded inputs moves them by ~1e-3).
  for (const [arch, preset] of [['llama', 'tiny'], ['m1', 'tiny'], ['m1', 'mamba2-tiny']] as const) {
    it(`bf16 activations kept for the products give the f32 path's gradients (${arch}/${preset})`, () => {
      const be = gpu!;
      be.setFloat32MatmulPrecision('medium');
      try {
        const run = (keepBf16: boolean) => {
          const p = findPreset(arch, preset);
          const m = initModel(be, validateConfigs(p.config, p.mambaConfig), 21, 'bf16');
          if (!keepBf16) Object.defineProperty(be, 'roundsF32ProductsToBf16', { value: false, configurable: true });
          try {
            allocateGrads(be, m);
            const x = batch(m.vocabSize);
            const dtypes: string[] = [];
            be.tidy(() => {
              const { hidden, saved } = m.forward(x.ids, plainSeqInfo(B, T), { needBackward: true });
              for (const l of saved!.layers) {
                const s = l as unknown as { n1: Tensor; n2: Tensor; mlp: { h: Tensor }; mixer: { xConv?: Tensor; y?: Tensor } };
                dtypes.push(s.n1.dtype, s.n2.dtype, s.mlp.h.dtype);
                if (s.mixer.xConv) dtypes.push(s.mixer.y!.dtype);  // a Mamba-1 layer: the scan's y feeds only out_proj
              }
              const r = sftLoss(be, { hidden, weight: m.lmHead, targets: x.targets, mask: x.mask }, CHUNKS);
              m.backwardFromHidden(r.dHidden!, saved!);
            });
            return { dtypes, grads: m.params().map(([k, q]) => ({ k, g: be.read(q.grad!) })) };
          } finally {
            if (!keepBf16) delete (be as unknown as Record<string, unknown>).roundsF32ProductsToBf16;
          }
        };
        const kept = run(true), f32 = run(false);
        expect(new Set(kept.dtypes)).toEqual(new Set(['bf16']));
        expect(new Set(f32.dtypes)).toEqual(new Set(['f32']));
        let exact = 0;
        kept.grads.forEach(({ k, g }, i) => {
          const want = f32.grads[i]!.g;
          let gmax = 0, dmax = 0, diff = 0;
          for (let j = 0; j < g.length; j++) {
            gmax = Math.max(gmax, Math.abs(want[j]!));
            dmax = Math.max(dmax, Math.abs(g[j]! - want[j]!));
            if (g[j] !== want[j]) diff++;
          }
          if (diff === 0) exact++;
          expect(dmax, `${k}: ${diff} of ${g.length} gradient values differ, by up to ${dmax.toExponential(2)} on max |g| ${gmax.toExponential(2)}`).toBeLessThanOrEqual(1e-5 * gmax);
        });
        expect(exact, 'most gradients are bit for bit equal').toBeGreaterThan(kept.grads.length / 2);
      } finally {
        be.setFloat32MatmulPrecision('highest');
      }
    });
  }
});
