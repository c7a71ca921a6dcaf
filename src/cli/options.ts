// Flag parsing helpers: every bad value names its flag.
import { InvalidArgumentError, type Command } from 'commander';

export function intFlag(name: string, opts: { min?: number; max?: number } = {}): (v: string) => number {
  return (v: string) => {
    if (!/^-?\d+$/.test(v.trim())) throw new InvalidArgumentError(`${name} must be an integer, got "${v}"`);
    const n = Number(v);
    if (opts.min !== undefined && n < opts.min) throw new InvalidArgumentError(`${name} must be ≥ ${opts.min}, got ${n}`);
    if (opts.max !== undefined && n > opts.max) throw new InvalidArgumentError(`${name} must be ≤ ${opts.max}, got ${n}`);
    return n;
  };
}

/** one of `values` (a flag such as --ssm-dtype bf16|f32), typed as that union */
export function choiceFlag<T extends string>(name: string, values: readonly T[]): (v: string) => T {
  return (v: string) => {
    if (!(values as readonly string[]).includes(v)) throw new InvalidArgumentError(`${name} must be one of ${values.join(' | ')}, got "${v}"`);
    return v as T;
  };
}

/** --recompute: off | on | a layer count k (CausalLM.forward `recompute`: the first k layers) */
export function recomputeFlag(v: string): boolean | number {
  const s = v.trim();
  if (s === 'off') return false;
  if (s === 'on') return true;
  if (/^\d+$/.test(s)) return Number(s);
  throw new InvalidArgumentError(`--recompute must be off, on or a layer count, got "${v}"`);
}

export function floatFlag(name: string, opts: { min?: number; max?: number; minExclusive?: boolean } = {}): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number, got "${v}"`);
    if (opts.min !== undefined && (opts.minExclusive ? n <= opts.min : n < opts.min)) {
      throw new InvalidArgumentError(`${name} must be ${opts.minExclusive ? '>' : '≥'} ${opts.min}, got ${n}`);
    }
    if (opts.max !== undefined && n > opts.max) throw new InvalidArgumentError(`${name} must be ≤ ${opts.max}, got ${n}`);
    return n;
  };
}

export function idsFlag(name: string): (v: string) => number[] {
  return (v: string) => {
    const parts = v.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
    if (parts.length === 0) throw new InvalidArgumentError(`${name} needs at least one token id`);
    return parts.map((p) => {
      if (!/^\d+$/.test(p)) throw new InvalidArgumentError(`${name}: "${p}" is not a token id`);
      return Number(p);
    });
  };
}

/** the values addSamplingOptions parses (undefined: take generation_config.json's) */
export interface SamplingFlags {
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
}

/** --temperature, --top-p, --top-k, --min-p, shared by the commands that sample (defaults: generation_config.json) */
export function addSamplingOptions(cmd: Command): Command {
  return cmd
    .option('--temperature <t>', 'sampling temperature, 0 = greedy (default: generation_config.json, else 1)', floatFlag('--temperature', { min: 0 }))
    .option('--top-p <p>', 'nucleus sampling, in (0, 1]', floatFlag('--top-p', { min: 0, minExclusive: true, max: 1 }))
    .option('--top-k <k>', 'keep the k most likely tokens (-1 or 0 = off)', intFlag('--top-k', { min: -1 }))
    .option('--min-p <p>', 'drop tokens below p × the top probability, in [0, 1]', floatFlag('--min-p', { min: 0, max: 1 }));
}
