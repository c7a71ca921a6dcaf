// Transformer → hybrid conversion, the M1 initialisation (m1-spec §1.4, §1.8; Alg. 1 of the paper):
// attention layers that become Mamba layers give their weights to the mixer (x←W_V, B←W_K, C←W_Q,
// out←W_O); the rest of the mixer (z and Δ rows of in_proj, dt_proj, conv1d, A_log, D) is initialised
// as the reference does. Kept attention layers move to M1's MHA layout (in_proj = [q; k; v]).
// Everything streams tensor by tensor, so a 3B conversion needs memory for one tensor at a time.
import { copyFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { DType } from '../backend/tensor.js';
import { SafetensorsReader, writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { UserError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import { fromStDType, keySeed, loadModelConfig, storageDType, toStDType, validateConfigs, writeConfigs } from './checkpoint.js';
import { layerKinds, modelParamSpecs, type ModelConfig } from './model.js';
import { hybridMambaConfig } from './presets.js';

export interface ConvertSummary {
  layers: number;
  attentionLayers: number[];
  mambaLayers: number[];
  version: 1 | 2;
  copied: number;
  initialised: number;
  fromAttention: number;
  params: number;
  bytes: number;
  files: string[];
}

export function parseLayerList(s: string, numLayers: number, flag = '--attn-layers'): number[] {
  const parts = s.split(',').map((x) => x.trim()).filter((x) => x.length > 0);
  const out: number[] = [];
  for (const p of parts) {
    if (!/^\d+$/.test(p)) throw new UserError(`${flag}: "${p}" is not a layer index`);
    const v = Number(p);
    if (v >= numLayers) throw new UserError(`${flag}: layer ${v} is outside [0, ${numLayers})`);
    out.push(v);
  }
  return [...new Set(out)].sort((a, b) => a - b);
}

function concatRows(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

export function convertToHybrid(
  teacherDir: string, outDir: string,
  opts: { attnLayers: number[]; version?: 1 | 2; seed?: number; maxShardBytes?: number; onTensor?: (key: string) => void },
): ConvertSummary {
  const teacher = loadModelConfig(teacherDir);
  if (teacher.arch !== 'llama') throw new UserError(`--teacher ${teacherDir} is already a hybrid (it has mamba_config.json); convert a Llama-family transformer`);
  const version = opts.version ?? 1;
  const seed = opts.seed ?? 0;
  const l = teacher.llama;
  const mambaRaw = hybridMambaConfig(l.raw, opts.attnLayers, version);
  const student: ModelConfig = validateConfigs(l.raw, mambaRaw);
  const kinds = layerKinds(student);
  const reader = SafetensorsReader.open(teacherDir);
  const torchDType = String(l.raw['torch_dtype'] ?? 'float32');
  const modelDType: DType = torchDType === 'bfloat16' ? 'bf16' : torchDType === 'float16' ? 'f16' : 'f32';
  const need = (key: string) => {
    if (!reader.has(key)) throw new UserError(`${teacherDir}: teacher tensor "${key}" is missing`);
    return reader.read(key);
  };
  let copied = 0, initialised = 0, fromAttention = 0, params = 0;
  try {
    const tensors: TensorToWrite[] = modelParamSpecs(student).map((spec) => {
      params += spec.shape.reduce((a, b) => a * b, 1);
      const m = /^model\.layers\.(\d+)\.(mha|mamba)\.(.+)$/.exec(spec.key);
      let produce: () => Float32Array;
      let dtype: DType;
      if (!m) {
        // embeddings, norms, MLPs, lm_head: copied as they are
        if (!reader.has(spec.key)) throw new UserError(`${teacherDir}: teacher tensor "${spec.key}" is missing`);
        dtype = fromStDType(reader.info(spec.key).dtype);
        produce = () => need(spec.key);
        copied++;
      } else {
        const i = Number(m[1]);
        const rest = m[3]!;
        const attn = (p: string) => `model.layers.${i}.self_attn.${p}_proj.weight`;
        dtype = storageDType(spec, modelDType);
        if (m[2] === 'mha') {
          produce = rest === 'in_proj.weight' ? () => concatRows([need(attn('q')), need(attn('k')), need(attn('v'))]) : () => need(attn('o'));
          fromAttention++;
        } else if (rest === 'out_proj.weight') {
          produce = () => need(attn('o'));
          fromAttention++;
        } else if (rest === 'in_proj.weight') {
          // rows [z | x | B | C | dt]: x←v, B←k, C←q; z and dt rows keep the reference's random init
          const D = l.hiddenSize;
          const dims = student.mamba!;
          const zRows = dims.dInner;
          const xbRows = dims.dXb;
          produce = () => {
            const w = spec.init(new Rng(keySeed(seed, spec.key)));
            const v = need(attn('v')), k = need(attn('k')), q = need(attn('q'));
            if (v.length !== xbRows * D || k.length !== xbRows * D) {
              throw new UserError(`layer ${i}: k/v projections have ${v.length / D} rows, d_xb is ${xbRows}`);
            }
            w.set(v, zRows * D);
            w.set(k, (zRows + xbRows) * D);
            w.set(q, (zRows + 2 * xbRows) * D);
            return w;
          };
          fromAttention++;
        } else {
          produce = () => spec.init(new Rng(keySeed(seed, spec.key)));
          initialised++;
        }
      }
      return {
        name: spec.key, dtype: toStDType(dtype), shape: spec.shape,
        data: () => {
          opts.onTensor?.(spec.key);
          return produce();
        },
      };
    });
    writeConfigs(outDir, { config: l.raw, mambaConfig: mambaRaw }, modelDType);
    const r = writeSafetensors(outDir, tensors, {
      maxShardBytes: opts.maxShardBytes,
      metadata: { producer: 'm1ts convert', attn_layers: opts.attnLayers.join(','), seed: String(seed) },
    });
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json']) {
      if (existsSync(join(teacherDir, f))) copyFileSync(join(teacherDir, f), join(outDir, f));
    }
    return {
      layers: l.numLayers,
      attentionLayers: kinds.flatMap((k, i) => (k === 'attention' ? [i] : [])),
      mambaLayers: kinds.flatMap((k, i) => (k !== 'attention' ? [i] : [])),
      version, copied, initialised, fromAttention, params, bytes: r.totalBytes, files: r.files,
    };
  } finally {
    reader.close();
  }
}
