// Model configuration: Hugging Face `config.json` (Llama) and M1's `mamba_config.json`.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../util/errors.js';

export interface RopeScalingLlama3 {
  type: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

export interface LlamaConfig {
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScalingLlama3 | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
  padTokenId: number | null;
  /** the JSON as read, written back unchanged (plus our edits) */
  raw: Record<string, unknown>;
}

export interface Mamba1Dims {
  dModel: number;
  dInner: number;
  dXb: number;
  dState: number;
  dConv: number;
  dtRank: number;
  convBias: boolean;
}

export interface Mamba2Dims {
  dModel: number;
  dInner: number;
  dXb: number;
  dState: number; // N = head dim of the teacher (128 in the 3B model)
  headDim: number; // P
  nHeads: number; // H = dInner / headDim
  nGroups: number; // groups of B/C after expansion (= nHeads in MambaInLlama)
  dConv: number;
  chunkSize: number;
  convBias: boolean;
  normEps: number;
}

export interface MambaConfig {
  version: 1 | 2;
  dModel: number;
  dInner: number;
  dXb: number;
  nLayer: number;
  attnLayers: number[];
  mamba1: Mamba1Dims;
  mamba2: Mamba2Dims;
  raw: Record<string, unknown>;
}

type Json = Record<string, unknown>;

function field(file: string, obj: Json, key: string): unknown {
  return obj[key];
}

function int(file: string, obj: Json, key: string, opts: { min?: number; def?: number } = {}): number {
  const v = field(file, obj, key);
  if (v === undefined || v === null) {
    if (opts.def !== undefined) return opts.def;
    throw new ConfigError(`${file}: missing field "${key}"`);
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new ConfigError(`${file}: field "${key}" must be an integer, got ${JSON.stringify(v)}`);
  if (opts.min !== undefined && v < opts.min) throw new ConfigError(`${file}: field "${key}" must be ≥ ${opts.min}, got ${v}`);
  return v;
}

function num(file: string, obj: Json, key: string, opts: { positive?: boolean; def?: number } = {}): number {
  const v = field(file, obj, key);
  if (v === undefined || v === null) {
    if (opts.def !== undefined) return opts.def;
    throw new ConfigError(`${file}: missing field "${key}"`);
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(`${file}: field "${key}" must be a number, got ${JSON.stringify(v)}`);
  if (opts.positive && v <= 0) throw new ConfigError(`${file}: field "${key}" must be > 0, got ${v}`);
  return v;
}

export function readJsonFile(path: string): Json {
  if (!existsSync(path)) throw new ConfigError(`${path}: file not found`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ConfigError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError(`${path}: expected a JSON object`);
  return parsed as Json;
}

export function parseLlamaConfig(raw: Json, file = 'config.json'): LlamaConfig {
  const hiddenSize = int(file, raw, 'hidden_size', { min: 1 });
  const numHeads = int(file, raw, 'num_attention_heads', { min: 1 });
  const numKvHeads = int(file, raw, 'num_key_value_heads', { min: 1, def: numHeads });
  const headDim = int(file, raw, 'head_dim', { min: 2, def: hiddenSize / numHeads });
  if (!Number.isInteger(headDim)) throw new ConfigError(`${file}: hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads}`);
  if (headDim % 2 !== 0) throw new ConfigError(`${file}: head_dim must be even for RoPE, got ${headDim}`);
  if (numHeads % numKvHeads !== 0) throw new ConfigError(`${file}: num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  const act = raw['hidden_act'];
  if (act !== undefined && act !== 'silu') throw new ConfigError(`${file}: field "hidden_act" must be "silu", got ${JSON.stringify(act)}`);
  let ropeScaling: RopeScalingLlama3 | null = null;
  const rs = raw['rope_scaling'];
  if (rs !== undefined && rs !== null) {
    if (typeof rs !== 'object' || Array.isArray(rs)) throw new ConfigError(`${file}: field "rope_scaling" must be an object or null`);
    const r = rs as Json;
    const type = r['rope_type'] ?? r['type'];
    if (type === 'default') ropeScaling = null;
    else if (type !== 'llama3') throw new ConfigError(`${file}: rope_scaling type ${JSON.stringify(type)} is not supported (only "llama3" and "default")`);
    else {
      ropeScaling = {
        type: 'llama3',
        factor: num(file, r, 'factor', { positive: true }),
        lowFreqFactor: num(file, r, 'low_freq_factor', { positive: true }),
        highFreqFactor: num(file, r, 'high_freq_factor', { positive: true }),
        originalMaxPositionEmbeddings: int(file, r, 'original_max_position_embeddings', { min: 1 }),
      };
      if (ropeScaling.highFreqFactor <= ropeScaling.lowFreqFactor) {
        throw new ConfigError(`${file}: rope_scaling.high_freq_factor must exceed low_freq_factor`);
      }
    }
  }
  const eos = raw['eos_token_id'];
  let eosTokenIds: number[] = [];
  if (typeof eos === 'number') eosTokenIds = [eos];
  else if (Array.isArray(eos)) eosTokenIds = eos.filter((x): x is number => typeof x === 'number');
  const bos = raw['bos_token_id'];
  const pad = raw['pad_token_id'];
  return {
    hiddenSize,
    numLayers: int(file, raw, 'num_hidden_layers', { min: 1 }),
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: int(file, raw, 'intermediate_size', { min: 1 }),
    vocabSize: int(file, raw, 'vocab_size', { min: 1 }),
    rmsNormEps: num(file, raw, 'rms_norm_eps', { positive: true, def: 1e-5 }),
    ropeTheta: num(file, raw, 'rope_theta', { positive: true, def: 10000 }),
    ropeScaling,
    maxPositionEmbeddings: int(file, raw, 'max_position_embeddings', { min: 1, def: 2048 }),
    tieWordEmbeddings: raw['tie_word_embeddings'] === true,
    bosTokenId: typeof bos === 'number' ? bos : null,
    eosTokenIds,
    padTokenId: typeof pad === 'number' ? pad : null,
    raw,
  };
}

export function parseMambaConfig(raw: Json, llama: LlamaConfig, file = 'mamba_config.json'): MambaConfig {
  const dModel = int(file, raw, 'd_model', { min: 1 });
  if (dModel !== llama.hiddenSize) throw new ConfigError(`${file}: d_model ${dModel} disagrees with config.json hidden_size ${llama.hiddenSize}`);
  const ssmRaw = raw['ssm_cfg'] ?? {};
  if (typeof ssmRaw !== 'object' || ssmRaw === null || Array.isArray(ssmRaw)) throw new ConfigError(`${file}: field "ssm_cfg" must be an object`);
  const ssm = ssmRaw as Json;
  const expand = int(`${file} ssm_cfg`, ssm, 'expand', { min: 1, def: 1 });
  const dInner = int(file, raw, 'd_inner', { min: 1, def: expand * dModel });
  const dXb = int(file, raw, 'd_xb', { min: 1, def: dModel });
  const nLayer = int(file, raw, 'n_layer', { min: 1, def: llama.numLayers });
  if (nLayer !== llama.numLayers) throw new ConfigError(`${file}: n_layer ${nLayer} disagrees with config.json num_hidden_layers ${llama.numLayers}`);
  const al = raw['attn_layers'] ?? [];
  if (!Array.isArray(al) || !al.every((x) => typeof x === 'number' && Number.isInteger(x))) {
    throw new ConfigError(`${file}: field "attn_layers" must be a list of layer indices`);
  }
  const attnLayers = [...new Set(al as number[])].sort((a, b) => a - b);
  for (const l of attnLayers) if (l < 0 || l >= nLayer) throw new ConfigError(`${file}: attn_layers entry ${l} is outside [0, ${nLayer})`);
  const layerName = ssm['layer'];
  const version: 1 | 2 = layerName === 'Mamba2' || ssm['ngroups'] !== undefined || ssm['headdim'] !== undefined ? 2 : 1;
  if (layerName !== undefined && layerName !== 'Mamba1' && layerName !== 'Mamba2') {
    throw new ConfigError(`${file}: ssm_cfg.layer ${JSON.stringify(layerName)} is not supported (Mamba1 or Mamba2)`);
  }
  const dConv = int(`${file} ssm_cfg`, ssm, 'd_conv', { min: 1, def: 4 });
  const sfile = `${file} ssm_cfg`;
  const m1State = int(sfile, ssm, 'd_state', { min: 1, def: 16 });
  const dtRankRaw = ssm['dt_rank'];
  const dtRank = dtRankRaw === undefined || dtRankRaw === 'auto' ? Math.ceil(dModel / 16) : int(sfile, ssm, 'dt_rank', { min: 1 });
  const mamba1: Mamba1Dims = { dModel, dInner, dXb, dState: m1State, dConv, dtRank, convBias: ssm['conv_bias'] !== false };
  if (version === 1) {
    if (dXb % m1State !== 0 || dInner % m1State !== 0) throw new ConfigError(`${file}: d_xb ${dXb} and d_inner ${dInner} must be multiples of d_state ${m1State}`);
    if (dInner % dXb !== 0) throw new ConfigError(`${file}: d_inner ${dInner} must be a multiple of d_xb ${dXb}`);
  }
  const m2State = int(sfile, ssm, 'd_state', { min: 1, def: llama.headDim });
  const headDim = int(sfile, ssm, 'headdim', { min: 1, def: m2State });
  const nHeads = dInner / headDim;
  const nGroups = int(sfile, ssm, 'ngroups', { min: 1, def: nHeads });
  if (version === 2) {
    if (!Number.isInteger(nHeads)) throw new ConfigError(`${file}: d_inner ${dInner} is not a multiple of headdim ${headDim}`);
    if (nHeads % nGroups !== 0) throw new ConfigError(`${file}: heads ${nHeads} not a multiple of ngroups ${nGroups}`);
    if (dXb % headDim !== 0 || (dInner / headDim) % (dXb / headDim) !== 0) throw new ConfigError(`${file}: d_xb ${dXb} must hold whole heads of ${headDim} dividing d_inner ${dInner}`);
  }
  const mamba2: Mamba2Dims = {
    dModel, dInner, dXb, dState: m2State, headDim, nHeads, nGroups, dConv,
    chunkSize: int(sfile, ssm, 'chunk_size', { min: 1, def: 256 }),
    convBias: ssm['conv_bias'] !== false,
    normEps: num(file, raw, 'rms_norm_eps', { positive: true, def: llama.rmsNormEps }),
  };
  return { version, dModel, dInner, dXb, nLayer, attnLayers, mamba1, mamba2, raw };
}

/** inverse frequencies of rotate-half RoPE, optionally with the llama3 frequency scaling */
export function ropeInvFreq(headDim: number, theta: number, scaling: RopeScalingLlama3 | null): Float32Array {
  const half = headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(theta, (2 * i) / headDim);
  if (scaling) {
    // transformers' _compute_llama3_parameters: long wavelengths divided by factor, short kept,
    // the band between smoothly interpolated.
    const lowWave = scaling.originalMaxPositionEmbeddings / scaling.lowFreqFactor;
    const highWave = scaling.originalMaxPositionEmbeddings / scaling.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const f = inv[i]!;
      const wavelen = (2 * Math.PI) / f;
      if (wavelen > lowWave) inv[i] = f / scaling.factor;
      else if (wavelen >= highWave) {
        const smooth = (scaling.originalMaxPositionEmbeddings / wavelen - scaling.lowFreqFactor) / (scaling.highFreqFactor - scaling.lowFreqFactor);
        inv[i] = (1 - smooth) * (f / scaling.factor) + smooth * f;
      }
    }
  }
  return inv;
}

export function loadLlamaConfig(dir: string): LlamaConfig {
  const path = join(dir, 'config.json');
  return parseLlamaConfig(readJsonFile(path), path);
}

export function loadMambaConfig(dir: string, llama: LlamaConfig): MambaConfig | null {
  const path = join(dir, 'mamba_config.json');
  if (!existsSync(path)) return null;
  return parseMambaConfig(readJsonFile(path), llama, path);
}
