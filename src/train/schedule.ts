// Learning-rate schedules, as a pure function of the step (so a resumed run needs only the step).

export interface ScheduleOptions {
  kind: 'cosine' | 'constant';
  /** peak learning rate */
  lr: number;
  /** linear warmup steps (0 = none) */
  warmup: number;
  /** floor of the cosine decay */
  minLr: number;
  /** total optimizer steps of the run */
  totalSteps: number;
}

/**
 * Learning rate for optimizer step `step` (0-based). Warmup is linear from lr/warmup (step 0) to lr
 * (step warmup−1) — unlike Hugging Face's, the first step does not waste itself at lr 0. Cosine then
 * decays from lr to minLr over the remaining steps, reaching minLr on the last step.
 */
export function lrAt(step: number, o: ScheduleOptions): number {
  if (step < o.warmup) return (o.lr * (step + 1)) / o.warmup;
  if (o.kind === 'constant') return o.lr;
  const decaySteps = o.totalSteps - o.warmup - 1;
  if (decaySteps <= 0) return o.lr;
  const progress = Math.min(1, (step - o.warmup) / decaySteps);
  return o.minLr + (o.lr - o.minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
}

export function validateSchedule(o: ScheduleOptions): void {
  if (!(o.lr >= 0) || !Number.isFinite(o.lr)) throw new Error(`schedule: --lr must be a finite number ≥ 0, got ${o.lr}`);
  if (!(o.minLr >= 0) || o.minLr > o.lr) throw new Error(`schedule: --min-lr must lie in [0, lr=${o.lr}], got ${o.minLr}`);
  if (!Number.isInteger(o.warmup) || o.warmup < 0) throw new Error(`schedule: --warmup must be an integer ≥ 0, got ${o.warmup}`);
  if (!Number.isInteger(o.totalSteps) || o.totalSteps < 1) throw new Error(`schedule: total steps must be an integer ≥ 1, got ${o.totalSteps}`);
}
