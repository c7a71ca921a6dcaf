// Model folders in Hugging Face layout: config.json (+ mamba_config.json for the hybrid),
// model.safetensors or shards + index, tokenizer files. Loading checks every tensor against the config.
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import type { DType } from '../backend/tensor.js';
import { writeFileAtomic } from '../io/atomic.js';
import { SafetensorsReader, writeSafetensors, type StDType, type TensorToWrite } from '../io/safetensors.js';
import { CheckpointError, UserError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import { loadLlamaConfig, loadMambaConfig, parseLlamaConfig, parseMambaConfig } from './config.js';
import { CausalLM, modelParamSpecs, type ModelConfig } from './model.js';
import type { ParamSpec, WeightSource } from './module.js';

export function toStDType(d: DType): StDType {
  return d === 'f32' ? 'F32' : d === 'bf16' ? 'BF16' : 'F16';
}
export function fromStDType(d: StDType): DType {
  return d === 'F32' ? 'f32' : d === 'BF16' ? 'bf16' : 'f16';
}
export function parseDType(s: string, flag = '--dtype'): DType {
  if (s === 'f32' || s === 'bf16' || s === 'f16') return s;
  throw new UserError(`${flag} must be one of f32, bf16, f16; got "${s}"`);
}

const TORCH_DTYPES: Record<string, DType> = { float32: 'f32', bfloat16: 'bf16', float16: 'f16' };

export function loadModelConfig(dir: string): ModelConfig {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UserError(`model folder ${dir} does not exist`);
  const llama = loadLlamaConfig(dir);
  const mamba = loadMambaConfig(dir, llama);
  return { arch: mamba ? 'm1' : 'llama', llama, mamba };
}

/**
 * Load a model folder onto a backend. Every tensor the architecture needs must be present with the
 * shape the config implies; tensors the architecture does not use are an error (a tied `lm_head`
 * saved anyway is tolerated, as transformers does).
 */
export function loadModel(dir: string, be: Backend): { model: CausalLM; cfg: ModelConfig } {
  const cfg = loadModelConfig(dir);
  const reader = SafetensorsReader.open(dir);
  try {
    const torchDType = TORCH_DTYPES[String(cfg.llama.raw['torch_dtype'] ?? '')];
    const used = new Set<string>();
    const weights: WeightSource = (key, shape) => {
      if (!reader.has(key)) throw new CheckpointError(`${dir}: tensor "${key}" is missing from the checkpoint (the config needs it with shape [${shape.join(', ')}])`);
      const info = reader.info(key);
      if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
        throw new CheckpointError(`${info.file}: tensor "${key}" has shape [${info.shape.join(', ')}] but the config implies [${shape.join(', ')}]`);
      }
      const dtype = fromStDType(info.dtype);
      // A 16-bit tensor of the other 16-bit kind than config.json's torch_dtype means a mixed-up file
      // (f32 tensors are fine: A_log and D are commonly kept in f32).
      if (torchDType && torchDType !== 'f32' && dtype !== 'f32' && dtype !== torchDType) {
        throw new CheckpointError(`${info.file}: tensor "${key}" is ${info.dtype} but config.json torch_dtype is ${String(cfg.llama.raw['torch_dtype'])}`);
      }
      used.add(key);
      return be.fromArray(reader.read(key), shape, dtype);
    };
    const model = new CausalLM(be, cfg, weights);
    const unexpected = reader.names().filter((n) => !used.has(n) && !(n === 'lm_head.weight' && cfg.llama.tieWordEmbeddings));
    if (unexpected.length > 0) {
      const shown = unexpected.slice(0, 5).map((n) => `"${n}"`).join(', ');
      throw new CheckpointError(`${dir}: ${unexpected.length} unexpected tensor(s) not used by the ${cfg.arch} architecture: ${shown}${unexpected.length > 5 ? ', …' : ''}`);
    }
    return { model, cfg };
  } finally {
    reader.close();
  }
}

/** 64-bit FNV-1a of the key folded to 32 bits, mixed with the seed: every tensor gets its own stream */
export function keySeed(seed: number, key: string): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** the dtype a parameter is stored in when the model's dtype is `dtype` */
export function storageDType(spec: Pick<ParamSpec, 'keepF32'>, dtype: DType): DType {
  return spec.keepF32 ? 'f32' : dtype;
}

export function writeConfigs(dir: string, cfg: { config: Record<string, unknown>; mambaConfig: Record<string, unknown> | null }, dtype: DType): void {
  mkdirSync(dir, { recursive: true });
  const config: Record<string, unknown> = { ...cfg.config, torch_dtype: dtype === 'f32' ? 'float32' : dtype === 'bf16' ? 'bfloat16' : 'float16' };
  writeFileAtomic(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  if (cfg.mambaConfig) writeFileAtomic(join(dir, 'mamba_config.json'), JSON.stringify(cfg.mambaConfig, null, 4) + '\n');
  const eos = config['eos_token_id'];
  const gen: Record<string, unknown> = { bos_token_id: config['bos_token_id'], eos_token_id: eos, do_sample: true, temperature: 0.6, top_p: 0.9 };
  writeFileAtomic(join(dir, 'generation_config.json'), JSON.stringify(gen, null, 2) + '\n');
}

/** parse the configs as loading would, so that nothing is written for an invalid config */
export function validateConfigs(config: Record<string, unknown>, mambaConfig: Record<string, unknown> | null): ModelConfig {
  const llama = parseLlamaConfig(config);
  const mamba = mambaConfig ? parseMambaConfig(mambaConfig, llama) : null;
  return { arch: mamba ? 'm1' : 'llama', llama, mamba };
}

/**
 * Random weights in the real layout, streamed tensor by tensor (a 3B model never sits in memory).
 * Each tensor's values depend only on (seed, key), so the same seed gives the same tensor whatever
 * else changed.
 */
export function initWeights(dir: string, cfg: ModelConfig, seed: number, dtype: DType, opts: { maxShardBytes?: number; onTensor?: (key: string) => void } = {}): { files: string[]; totalBytes: number; params: number } {
  const specs = modelParamSpecs(cfg);
  let params = 0;
  const tensors: TensorToWrite[] = specs.map((s) => {
    params += s.shape.reduce((a, b) => a * b, 1);
    return {
      name: s.key,
      dtype: toStDType(storageDType(s, dtype)),
      shape: s.shape,
      data: () => {
        opts.onTensor?.(s.key);
        return s.init(new Rng(keySeed(seed, s.key)));
      },
    };
  });
  const r = writeSafetensors(dir, tensors, { maxShardBytes: opts.maxShardBytes, metadata: { producer: 'm1ts init', seed: String(seed) } });
  return { ...r, params };
}

/** build a model in memory with initialised weights (tests, the demo) */
export function initModel(be: Backend, cfg: ModelConfig, seed: number, dtype: DType = 'f32'): CausalLM {
  const specs = new Map(modelParamSpecs(cfg).map((s) => [s.key, s]));
  return new CausalLM(be, cfg, (key, shape) => {
    const s = specs.get(key);
    if (!s) throw new Error(`initModel: no spec for "${key}"`);
    return be.fromArray(s.init(new Rng(keySeed(seed, key))), shape, storageDType(s, dtype));
  });
}

/** save a model's weights (each in its tensor's storage dtype, or cast to `dtype`) */
export function saveWeights(dir: string, model: CausalLM, opts: { dtype?: DType; maxShardBytes?: number; metadata?: Record<string, string> } = {}): { files: string[]; totalBytes: number } {
  const be = model.be;
  const specs = new Map(modelParamSpecs(model.cfg).map((s) => [s.key, s]));
  const tensors: TensorToWrite[] = model.params().map(([key, p]) => {
    const spec = specs.get(key);
    const dtype = opts.dtype ? storageDType(spec ?? {}, opts.dtype) : p.value.dtype;
    return { name: key, dtype: toStDType(dtype), shape: [...p.value.shape], data: () => be.read(p.value) };
  });
  return writeSafetensors(dir, tensors, { maxShardBytes: opts.maxShardBytes, metadata: opts.metadata });
}

/** config objects to write back for a loaded model */
export function configsOf(cfg: ModelConfig): { config: Record<string, unknown>; mambaConfig: Record<string, unknown> | null } {
  return { config: cfg.llama.raw, mambaConfig: cfg.mamba ? cfg.mamba.raw : null };
}
