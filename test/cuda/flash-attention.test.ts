// The tiled attention kernels (native/src/flash_attention.cu: head dims 64 and 128; other head dims
// keep the one-warp-per-query kernels) against the CPU definition: out and lse of the forward, dq/dk/dv
// of the backward. Lengths straddle the 64-query / 64-key forward tiles, the 128-query / 128-key tiles of
// the wgmma forward (Dh 128 on Hopper) and the 32-row backward tiles (1, 63, 64, 65, 200, 333, 700); segments start mid-tile, and one row reuses a segment id after another
// segment (the op's mask is id equality, so those tokens see each other and no tile may be skipped).
// Tolerances as in ops/backward tests: 1e-5 for the forward, 1e-4 for the gradients (long f32 sums).
import { describe, expect, it } from 'vitest';
import { available, cpu, expectClose, gpu, rand, skipReason } from './helpers.js';

interface Case { B: number; T: number; Hq: number; Hkv: number; Dh: number; scale?: number }

const cases: Case[] = [
  { B: 2, T: 1, Hq: 2, Hkv: 2, Dh: 64 },
  { B: 1, T: 63, Hq: 3, Hkv: 1, Dh: 128 },
  { B: 2, T: 64, Hq: 2, Hkv: 2, Dh: 64 },
  { B: 1, T: 65, Hq: 6, Hkv: 2, Dh: 64 },
  { B: 1, T: 65, Hq: 3, Hkv: 1, Dh: 16 },
  { B: 2, T: 200, Hq: 2, Hkv: 2, Dh: 128, scale: 0.5 },
  { B: 1, T: 333, Hq: 3, Hkv: 1, Dh: 128 },
  { B: 2, T: 333, Hq: 3, Hkv: 1, Dh: 64 },
  // six 128-query tiles of the wgmma forward (Hopper, Dh 128), the last one partial; the second KV head's group
  { B: 1, T: 700, Hq: 4, Hkv: 2, Dh: 128 },
];

/**
 * Row 0: runs starting at 37, 64, 100, 230 with ids 0, 1, 2, ... (packed documents). Row 1: runs
 * starting at 5, 42, 69, 105, 235 with ids alternating 0, 1, 0, ... (an id that comes back).
 */
function segmentsFor(B: number, T: number): Int32Array {
  const seg = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    const starts = b === 0 ? [37, 64, 100, 230] : [5, 42, 69, 105, 235];
    for (let t = 0; t < T; t++) {
      const run = starts.filter((s) => s <= t).length;
      seg[b * T + t] = b === 0 ? run : run % 2;
    }
  }
  return seg;
}

describe.skipIf(!available)(`cuda tiled attention vs cpu${available ? '' : ` (skipped: ${skipReason})`}`, () => {
  const g = gpu!;

  for (const c of cases) {
    const { B, T, Hq, Hkv, Dh } = c;
    const name = `B=${B} T=${T} Hq=${Hq} Hkv=${Hkv} Dh=${Dh}`;
    it(`forward and backward, ${name}`, () => {
      const seed = T * 7 + Dh;
      const q = rand([B, T, Hq, Dh], seed), k = rand([B, T, Hkv, Dh], seed + 1), v = rand([B, T, Hkv, Dh], seed + 2);
      const dout = rand([B, T, Hq, Dh], seed + 3);
      for (const segments of [undefined, segmentsFor(B, T)]) {
        const o = { scale: c.scale ?? 1 / Math.sqrt(Dh), segments };
        const what = `${name} seg=${segments ? 'yes' : 'no'}`;
        const fg = g.attention(q.g, k.g, v.g, o), fc = cpu.attention(q.c, k.c, v.c, o);
        expectClose(g, fg.out, fc.out, 1e-5, `out ${what}`);
        expectClose(g, fg.lse, fc.lse, 1e-5, `lse ${what}`);
        // the backward of each backend from its own forward: out/lse already agree to 1e-5
        const bg = g.attentionBackward(dout.g, q.g, k.g, v.g, fg.out, fg.lse, o);
        const bc = cpu.attentionBackward(dout.c, q.c, k.c, v.c, fc.out, fc.lse, o);
        // With T = 1 every query sees one key: dS = P∘(dP − rowsum(dO∘O)) cancels to exactly 0, so
        // dq and dk are rounding noise (~1e-6) of terms of size |dO||V|·scale·|k| ≈ 1: compare on
        // that scale (floor 0.1), not on the (zero) result's.
        expectClose(g, bg.dq, bc.dq, 1e-4, `dq ${what}`, 0.1);
        expectClose(g, bg.dk, bc.dk, 1e-4, `dk ${what}`, 0.1);
        expectClose(g, bg.dv, bc.dv, 1e-4, `dv ${what}`, 0.1);
      }
    });
  }

  // setFloat32MatmulPrecision('medium'): the forward of the tiled head dims runs on the tensor cores
  // (flash_attention_tc.cu: q, k, v, P rounded to bf16, f32 softmax and sums): 2e-2 of the f32 result,
  // and not equal to it (the flag reaches the kernel); Dh = 16 keeps the f32 kernels.
  for (const c of cases) {
    const { B, T, Hq, Hkv, Dh } = c;
    const name = `B=${B} T=${T} Hq=${Hq} Hkv=${Hkv} Dh=${Dh}`;
    it(`forward with bf16 products (precision medium), ${name}`, () => {
      const seed = T * 11 + Dh;
      const q = rand([B, T, Hq, Dh], seed), k = rand([B, T, Hkv, Dh], seed + 1), v = rand([B, T, Hkv, Dh], seed + 2);
      for (const segments of [undefined, segmentsFor(B, T)]) {
        const o = { scale: c.scale ?? 1 / Math.sqrt(Dh), segments };
        const what = `${name} seg=${segments ? 'yes' : 'no'}`;
        const fc = cpu.attention(q.c, k.c, v.c, o);
        let fg;
        try {
          g.setFloat32MatmulPrecision('medium');
          fg = g.attention(q.g, k.g, v.g, o);
        } finally {
          g.setFloat32MatmulPrecision('highest');
        }
        const tiled = Dh === 64 || Dh === 128;
        expectClose(g, fg.out, fc.out, tiled ? 2e-2 : 1e-5, `bf16 out ${what}`);
        expectClose(g, fg.lse, fc.lse, tiled ? 2e-2 : 1e-5, `bf16 lse ${what}`);
        const a = g.read(fg.out), r = cpu.read(fc.out);
        const differs = a.some((x, i) => Math.abs(x - r[i]!) > 1e-5 * (1 + Math.abs(r[i]!)));
        expect(differs, `bf16 out differs from f32 somewhere ${what}`).toBe(tiled);
      }
    });
  }

  // ... and the backward (flash_attention_tc.cu, the fused dK/dV + dQ kernel: q, k, v, dout, P and dS rounded
  // to bf16, f32 softmax, D and sums) from the f32 forward's out / lse: 3e-2 of the f32 gradients,
  // and not equal to them; Dh = 16 keeps the f32 kernels. The floor is 0.25, not 0.1: at T = 1 the exact
  // dq, dk are 0 = P·(dP − D) with dP = dO·V from bf16-rounded dO and V against D = dO·O in f32, so they
  // come out as bf16 rounding (2⁻⁸ relative) of |dO·V| ≈ 2.7 terms, ≈ 7e-3 after the scale.
  for (const c of cases) {
    const { B, T, Hq, Hkv, Dh } = c;
    const name = `B=${B} T=${T} Hq=${Hq} Hkv=${Hkv} Dh=${Dh}`;
    it(`backward with bf16 products (precision medium), ${name}`, () => {
      const seed = T * 13 + Dh;
      const q = rand([B, T, Hq, Dh], seed), k = rand([B, T, Hkv, Dh], seed + 1), v = rand([B, T, Hkv, Dh], seed + 2);
      const dout = rand([B, T, Hq, Dh], seed + 3);
      for (const segments of [undefined, segmentsFor(B, T)]) {
        const o = { scale: c.scale ?? 1 / Math.sqrt(Dh), segments };
        const what = `${name} seg=${segments ? 'yes' : 'no'}`;
        const fc = cpu.attention(q.c, k.c, v.c, o);
        const bc = cpu.attentionBackward(dout.c, q.c, k.c, v.c, fc.out, fc.lse, o);
        const fg = g.attention(q.g, k.g, v.g, o);
        let bg;
        try {
          g.setFloat32MatmulPrecision('medium');
          bg = g.attentionBackward(dout.g, q.g, k.g, v.g, fg.out, fg.lse, o);
        } finally {
          g.setFloat32MatmulPrecision('highest');
        }
        const tiled = Dh === 64 || Dh === 128;
        const tol = tiled ? 3e-2 : 1e-4;
        expectClose(g, bg.dq, bc.dq, tol, `bf16 dq ${what}`, 0.25);
        expectClose(g, bg.dk, bc.dk, tol, `bf16 dk ${what}`, 0.25);
        expectClose(g, bg.dv, bc.dv, tol, `bf16 dv ${what}`, 0.25);
        const a = g.read(bg.dv), r = cpu.read(bc.dv);
        const differs = a.some((x, i) => Math.abs(x - r[i]!) > 1e-5 * (1 + Math.abs(r[i]!)));
        expect(differs, `bf16 dv differs from f32 somewhere ${what}`).toBe(tiled);
      }
    });
  }
});
