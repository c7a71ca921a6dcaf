// The selective scan's backward over a range of tasks (task b = row b, all its channels), for the
// worker pool (parallel.ts runs the source text: no imports, helpers inside). A task writes only row
// b's dx / ddelta / dz, row b's dB / dC (the sums over the channels of a group stay inside the row),
// and row b's partial sums of dA / dD / dDeltaBias, which the caller adds up over rows in order — so
// the result does not depend on how rows are split across threads. Formulas: selective-scan.ts.
export function selectiveScanBackwardTasks(
  x: Float32Array, delta: Float32Array, A: Float32Array, Bm: Float32Array, Cm: Float32Array, D: Float32Array, z: Float32Array,
  db: Float32Array, dyd: Float32Array, seg: Int32Array,
  dx: Float32Array, ddelta: Float32Array, dz: Float32Array, dB: Float64Array, dC: Float64Array,
  dAp: Float64Array, dDp: Float64Array, dDbp: Float64Array,
  T: number, Di: number, N: number, G: number, lo: number, hi: number,
): void {
  const softplus = (v: number): number => (v > 20 ? v : Math.log1p(Math.exp(v)));
  const sigmoid = (v: number): number => 1 / (1 + Math.exp(-v));
  const silu = (v: number): number => v / (1 + Math.exp(-v));
  const siluGrad = (v: number): number => {
    const s = 1 / (1 + Math.exp(-v));
    return s * (1 + v * (1 - s));
  };
  const hasD = D.length > 0, hasZ = z.length > 0, hasDb = db.length > 0, hasSeg = seg.length > 0;
  const perGroup = Di / G;
  const hs = new Float64Array(T * N); // h_t of the current (b, c), recomputed
  const dts = new Float64Array(T);
  const adj = new Float64Array(N); // ∂L/∂h_t carried back from t+1
  const starts = new Uint8Array(T);
  for (let b = lo; b < hi; b++) {
    starts.fill(0);
    starts[0] = 1;
    if (hasSeg) for (let t = 1; t < T; t++) if (seg[b * T + t] !== seg[b * T + t - 1]) starts[t] = 1;
    dB.fill(0, b * T * G * N, (b + 1) * T * G * N);
    dC.fill(0, b * T * G * N, (b + 1) * T * G * N);
    const pA = b * Di * N, pD = b * Di;
    dAp.fill(0, pA, pA + Di * N);
    dDp.fill(0, pD, pD + Di);
    dDbp.fill(0, pD, pD + Di);
    for (let c = 0; c < Di; c++) {
      const g = Math.floor(c / perGroup);
      const ao = c * N;
      const bias = hasDb ? db[c]! : 0;
      for (let t = 0; t < T; t++) {
        const i = (b * T + t) * Di + c;
        const dt = softplus(delta[i]! + bias);
        dts[t] = dt;
        const dtx = dt * x[i]!;
        const bo = ((b * T + t) * G + g) * N;
        const ho = t * N, po = (t - 1) * N;
        for (let n = 0; n < N; n++) {
          const prev = starts[t] ? 0 : hs[po + n]!;
          hs[ho + n] = Math.exp(dt * A[ao + n]!) * prev + dtx * Bm[bo + n]!;
        }
      }
      adj.fill(0);
      for (let t = T - 1; t >= 0; t--) {
        const i = (b * T + t) * Di + c;
        const bo = ((b * T + t) * G + g) * N;
        const ho = t * N, po = (t - 1) * N;
        const xv = x[i]!, dt = dts[t]!;
        // y = r·silu(z) with r = C·h + D·x
        let dr = dyd[i]!;
        if (hasZ) {
          let r = hasD ? D[c]! * xv : 0;
          for (let n = 0; n < N; n++) r += Cm[bo + n]! * hs[ho + n]!;
          const zv = z[i]!;
          dz[i] = dr * r * siluGrad(zv);
          dr *= silu(zv);
        }
        let dxv = 0;
        if (hasD) {
          dDp[pD + c]! += dr * xv;
          dxv = dr * D[c]!;
        }
        let ddt = 0;
        for (let n = 0; n < N; n++) {
          const an = A[ao + n]!;
          const bn = Bm[bo + n]!;
          dC[bo + n]! += dr * hs[ho + n]!;
          const gh = adj[n]! + dr * Cm[bo + n]!; // total ∂L/∂h_t[n]
          const prev = starts[t] ? 0 : hs[po + n]!;
          const decay = Math.exp(dt * an);
          ddt += gh * (an * decay * prev + bn * xv);
          dAp[pA + ao + n]! += gh * dt * decay * prev;
          dB[bo + n]! += gh * dt * xv;
          dxv += gh * dt * bn;
          adj[n] = starts[t] ? 0 : gh * decay;
        }
        dx[i] = dxv;
        const v = delta[i]! + bias;
        const dv = ddt * (v > 20 ? 1 : sigmoid(v)); // softplus' = σ below the threshold, 1 above
        ddelta[i] = dv;
        dDbp[pD + c]! += dv;
      }
    }
  }
}

/**
 * The selective scan's forward over rows [lo, hi): y of each row, and (when `st` is non-empty) the
 * final state of row b into state row slots[b]. Rows are independent. Formulas: selective-scan.ts.
 */
export function selectiveScanForwardTasks(
  x: Float32Array, delta: Float32Array, A: Float32Array, Bm: Float32Array, Cm: Float32Array, D: Float32Array, z: Float32Array,
  db: Float32Array, seg: Int32Array, y: Float32Array, st: Float32Array, slots: Int32Array,
  T: number, Di: number, N: number, G: number, lo: number, hi: number,
): void {
  const softplus = (v: number): number => (v > 20 ? v : Math.log1p(Math.exp(v)));
  const silu = (v: number): number => v / (1 + Math.exp(-v));
  const hasD = D.length > 0, hasZ = z.length > 0, hasDb = db.length > 0, hasSeg = seg.length > 0, hasSt = st.length > 0;
  const perGroup = Di / G;
  const h = new Float64Array(N);
  const starts = new Uint8Array(T);
  for (let b = lo; b < hi; b++) {
    starts.fill(0);
    starts[0] = 1;
    if (hasSeg) for (let t = 1; t < T; t++) if (seg[b * T + t] !== seg[b * T + t - 1]) starts[t] = 1;
    for (let c = 0; c < Di; c++) {
      const g = Math.floor(c / perGroup);
      const ao = c * N;
      const bias = hasDb ? db[c]! : 0;
      h.fill(0);
      for (let t = 0; t < T; t++) {
        if (starts[t]) h.fill(0);
        const i = (b * T + t) * Di + c;
        const dt = softplus(delta[i]! + bias);
        const xv = x[i]!;
        const dtx = dt * xv;
        const bo = ((b * T + t) * G + g) * N;
        let acc = 0;
        for (let n = 0; n < N; n++) {
          const hn = Math.exp(dt * A[ao + n]!) * h[n]! + dtx * Bm[bo + n]!;
          h[n] = hn;
          acc += Cm[bo + n]! * hn;
        }
        if (hasD) acc += D[c]! * xv;
        y[i] = hasZ ? acc * silu(z[i]!) : acc;
      }
      if (hasSt) {
        const so = (slots[b]! * Di + c) * N;
        for (let n = 0; n < N; n++) st[so + n] = T > 0 ? h[n]! : 0;
      }
    }
  }
}
