// Generation defaults of a model folder: stop ids from config.json and generation_config.json (eos_token_id,
// a number or a list), and the sampling defaults the model's authors ship (vLLM's `--generation-config
// auto` behaviour: used when a request does not set them).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelConfig } from '../model/model.js';
import { UserError } from '../util/errors.js';
import type { SamplingParams } from './sampling.js';

export interface GenerationDefaults {
  /** every eos id of config.json and generation_config.json, in that order, without repeats */
  eosTokenIds: number[];
  /** sampling fields generation_config.json sets (do_sample: false means greedy) */
  sampling: Partial<SamplingParams>;
}

export function loadGenerationDefaults(dir: string, cfg: ModelConfig): GenerationDefaults {
  const eos = [...cfg.llama.eosTokenIds];
  const sampling: Partial<SamplingParams> = {};
  const path = join(dir, 'generation_config.json');
  if (!existsSync(path)) return { eosTokenIds: eos, sampling };
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new UserError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new UserError(`${path}: expected a JSON object`);
  const g = raw as Record<string, unknown>;
  const e = g['eos_token_id'];
  const ids = typeof e === 'number' ? [e] : Array.isArray(e) ? e : e === undefined || e === null ? [] : null;
  if (ids === null || ids.some((x) => !Number.isInteger(x) || (x as number) < 0)) {
    throw new UserError(`${path}: field "eos_token_id" must be a token id or a list of token ids, got ${JSON.stringify(e)}`);
  }
  for (const id of ids as number[]) if (!eos.includes(id)) eos.push(id);
  const num = (key: string): number | undefined => {
    const v = g[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new UserError(`${path}: field "${key}" must be a number, got ${JSON.stringify(v)}`);
    return v;
  };
  if (g['do_sample'] === false) sampling.temperature = 0;
  else {
    const t = num('temperature'), p = num('top_p'), k = num('top_k'), m = num('min_p');
    if (t !== undefined) sampling.temperature = t;
    if (p !== undefined) sampling.topP = p;
    if (k !== undefined) sampling.topK = k;
    if (m !== undefined) sampling.minP = m;
  }
  return { eosTokenIds: eos, sampling };
}
