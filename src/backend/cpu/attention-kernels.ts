// The inner loops of causal GQA attention, forward and backward, over a range of tasks: task
// b·Hkv + g is (row b, kv head g) with all `group` q heads that share it. Each task writes only its
// own outputs (out / lse / dq of its q heads, dk / dv of its kv head), so ranges of tasks can run on
// different threads with results bit-identical to one thread. The functions are self-contained (no
// imports; the one helper, gatherKvPanels, is defined in the worker's source too): the worker pool
// (parallel.ts) runs their source text.
//
// Loop order: the K and V rows of a task are gathered once into contiguous [T, Dh] panels, then every
// q head of the group streams its queries past them. A key s is visible to query t (s ≤ t) when
// `seg` is empty or seg[b·T + s] = seg[b·T + t]. Sums in f64.

/** the K and V rows of kv head g of rows rowStart … rowStart+T−1 into contiguous [T, Dh] panels */
export function gatherKvPanels(
  kd: Float32Array, vd: Float32Array, kPanel: Float32Array, vPanel: Float32Array, rowStart: number, g: number, T: number, Hkv: number, Dh: number,
): void {
  for (let t = 0; t < T; t++) {
    const o = ((rowStart + t) * Hkv + g) * Dh;
    for (let i = 0; i < Dh; i++) {
      kPanel[t * Dh + i] = kd[o + i]!;
      vPanel[t * Dh + i] = vd[o + i]!;
    }
  }
}

/** forward: out [B, T, Hq, Dh], lse [B, Hq, T] */
export function attentionForwardTasks(
  qd: Float32Array, kd: Float32Array, vd: Float32Array, out: Float32Array, lse: Float32Array, seg: Int32Array,
  T: number, Hq: number, Hkv: number, Dh: number, scale: number, lo: number, hi: number,
): void {
  const group = Hq / Hkv, hasSeg = seg.length > 0;
  const kPanel = new Float32Array(T * Dh), vPanel = new Float32Array(T * Dh);
  const scores = new Float64Array(T);
  const acc = new Float64Array(Dh);
  for (let task = lo; task < hi; task++) {
    const b = Math.floor(task / Hkv), g = task - b * Hkv, rowStart = b * T;
    gatherKvPanels(kd, vd, kPanel, vPanel, rowStart, g, T, Hkv, Dh);
    for (let h = g * group; h < (g + 1) * group; h++) {
      for (let t = 0; t < T; t++) {
        const qo = ((rowStart + t) * Hq + h) * Dh;
        // two passes over the visible keys: scores and their max, then exp(s − max) so no term overflows
        let max = -Infinity;
        const segT = hasSeg ? seg[rowStart + t]! : 0;
        for (let s = 0; s <= t; s++) {
          if (hasSeg && seg[rowStart + s] !== segT) { scores[s] = -Infinity; continue; }
          let d = 0;
          const ko = s * Dh;
          for (let i = 0; i < Dh; i++) d += qd[qo + i]! * kPanel[ko + i]!;
          const sc = scale * d;
          scores[s] = sc;
          if (sc > max) max = sc;
        }
        acc.fill(0);
        let sum = 0;
        for (let s = 0; s <= t; s++) {
          if (scores[s] === -Infinity) continue;
          const p = Math.exp(scores[s]! - max);
          sum += p;
          const vo = s * Dh;
          for (let i = 0; i < Dh; i++) acc[i]! += p * vPanel[vo + i]!;
        }
        const inv = 1 / sum;
        for (let i = 0; i < Dh; i++) out[qo + i] = acc[i]! * inv;
        lse[(b * Hq + h) * T + t] = max + Math.log(sum);
      }
    }
  }
}

/**
 * Flash-attention style backward: P is recomputed from q, k and lse (no [T, T] matrix is kept);
 * with D_t = Σ dO_t ⊙ O_t, dS_ts = P_ts (dO_t·v_s − D_t), and
 * dq_t = scale Σ_s dS_ts k_s, dk_s = scale Σ_t dS_ts q_t, dv_s = Σ_t P_ts dO_t.
 */
export function attentionBackwardTasks(
  qd: Float32Array, kd: Float32Array, vd: Float32Array, od: Float32Array, dod: Float32Array, ld: Float32Array, seg: Int32Array,
  dq: Float32Array, dk: Float32Array, dv: Float32Array,
  T: number, Hq: number, Hkv: number, Dh: number, scale: number, lo: number, hi: number,
): void {
  const group = Hq / Hkv, hasSeg = seg.length > 0;
  const kPanel = new Float32Array(T * Dh), vPanel = new Float32Array(T * Dh);
  // dK, dV of one task sum over T·group queries: f64 accumulators
  const dkPanel = new Float64Array(T * Dh), dvPanel = new Float64Array(T * Dh);
  const dqAcc = new Float64Array(Dh);
  for (let task = lo; task < hi; task++) {
    const b = Math.floor(task / Hkv), g = task - b * Hkv, rowStart = b * T;
    gatherKvPanels(kd, vd, kPanel, vPanel, rowStart, g, T, Hkv, Dh);
    dkPanel.fill(0);
    dvPanel.fill(0);
    for (let h = g * group; h < (g + 1) * group; h++) {
      for (let t = 0; t < T; t++) {
        const qo = ((rowStart + t) * Hq + h) * Dh;
        const rowLse = ld[(b * Hq + h) * T + t]!;
        let Dt = 0;
        for (let i = 0; i < Dh; i++) Dt += dod[qo + i]! * od[qo + i]!;
        dqAcc.fill(0);
        const segT = hasSeg ? seg[rowStart + t]! : 0;
        for (let s = 0; s <= t; s++) {
          if (hasSeg && seg[rowStart + s] !== segT) continue;
          const ko = s * Dh;
          let qk = 0, dp = 0;
          for (let i = 0; i < Dh; i++) {
            qk += qd[qo + i]! * kPanel[ko + i]!;
            dp += dod[qo + i]! * vPanel[ko + i]!;
          }
          const p = Math.exp(scale * qk - rowLse);
          const ds = p * (dp - Dt) * scale;
          for (let i = 0; i < Dh; i++) {
            dqAcc[i]! += ds * kPanel[ko + i]!;
            dkPanel[ko + i]! += ds * qd[qo + i]!;
            dvPanel[ko + i]! += p * dod[qo + i]!;
          }
        }
        for (let i = 0; i < Dh; i++) dq[qo + i] = dqAcc[i]!;
      }
    }
    for (let t = 0; t < T; t++) {
      const o = ((rowStart + t) * Hkv + g) * Dh;
      for (let i = 0; i < Dh; i++) {
        dk[o + i] = dkPanel[t * Dh + i]!;
        dv[o + i] = dvPanel[t * Dh + i]!;
      }
    }
  }
}
