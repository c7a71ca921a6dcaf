// Named model shapes for `m1 init`: tiny ones for tests and the demo, and the exact shapes of the
// released Llama-3.2-3B-Instruct and M1-3B (m1-spec §1.1, §1.4, §1.7).
import { UserError } from '../util/errors.js';
import type { Arch } from './model.js';

export interface Preset {
  name: string;
  arch: Arch;
  description: string;
  /** config.json as Hugging Face writes it */
  config: Record<string, unknown>;
  /** mamba_config.json (hybrid only) */
  mambaConfig: Record<string, unknown> | null;
  /** which tokenizer files `m1 init` writes: the tiny byte-level one, or the real Llama-3 one */
  tokenizer: 'tiny' | 'llama3';
  defaultDType: 'f32' | 'bf16';
}

const LLAMA_3_2_3B: Record<string, unknown> = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 3072,
  initializer_range: 0.02,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 24,
  num_hidden_layers: 28,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  use_cache: true,
  vocab_size: 128256,
};

/** vocabulary of the tiny tokenizer (byte-level, plus Llama-3-style special tokens) */
export const TINY_VOCAB = 320;

function tinyLlama(o: { hidden: number; layers: number; heads: number; kv: number; inter: number; maxPos: number }): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    hidden_act: 'silu',
    hidden_size: o.hidden,
    head_dim: o.hidden / o.heads,
    initializer_range: 0.02,
    intermediate_size: o.inter,
    max_position_embeddings: o.maxPos,
    model_type: 'llama',
    num_attention_heads: o.heads,
    num_hidden_layers: o.layers,
    num_key_value_heads: o.kv,
    rms_norm_eps: 1e-5,
    // llama3 scaling on the tiny shapes too, so the teacher/hybrid RoPE difference is exercised everywhere
    rope_scaling: { factor: 8.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 64, rope_type: 'llama3' },
    rope_theta: 10000.0,
    tie_word_embeddings: true,
    torch_dtype: 'float32',
    vocab_size: TINY_VOCAB,
  };
}

function mambaConfig(c: Record<string, unknown>, attnLayers: number[], ssmCfg: Record<string, unknown>, dInner?: number): Record<string, unknown> {
  const hidden = c['hidden_size'] as number;
  const heads = c['num_attention_heads'] as number;
  const kv = c['num_key_value_heads'] as number;
  const headDim = (c['head_dim'] as number) ?? hidden / heads;
  // Field order and values as M1's transformer_to_mamba.py dumps MambaConfig (m1-spec §1.7)
  return {
    d_model: hidden,
    ssm_cfg: ssmCfg,
    rms_norm_eps: c['rms_norm_eps'],
    vocab_size: null,
    d_inner: dInner ?? heads * headDim,
    d_xb: kv * headDim,
    intermediate_size: c['intermediate_size'],
    hidden_act: 'silu',
    n_layer: c['num_hidden_layers'],
    attn_layers: attnLayers,
  };
}

const TINY = tinyLlama({ hidden: 64, layers: 4, heads: 4, kv: 2, inter: 128, maxPos: 2048 });
const SMALL = tinyLlama({ hidden: 256, layers: 8, heads: 8, kv: 2, inter: 768, maxPos: 4096 });
const MAMBA2_TINY_SSM = { expand: 1, ngroups: 4, d_state: 16 };

export const PRESETS: Preset[] = [
  { name: 'tiny', arch: 'llama', description: '4 layers, d 64, 4 heads / 2 kv heads, byte-level vocabulary', config: TINY, mambaConfig: null, tokenizer: 'tiny', defaultDType: 'f32' },
  { name: 'small', arch: 'llama', description: '8 layers, d 256, 8 heads / 2 kv heads, byte-level vocabulary', config: SMALL, mambaConfig: null, tokenizer: 'tiny', defaultDType: 'f32' },
  { name: 'llama-3.2-3b', arch: 'llama', description: 'the exact shape of meta-llama/Llama-3.2-3B-Instruct', config: LLAMA_3_2_3B, mambaConfig: null, tokenizer: 'llama3', defaultDType: 'bf16' },
  { name: 'tiny', arch: 'm1', description: 'tiny with attention at layer 1, Mamba-1 (d_state 16) elsewhere', config: TINY, mambaConfig: mambaConfig(TINY, [1], { expand: 1 }), tokenizer: 'tiny', defaultDType: 'f32' },
  { name: 'small', arch: 'm1', description: 'small with attention at layers 3, 7, Mamba-1 elsewhere', config: SMALL, mambaConfig: mambaConfig(SMALL, [3, 7], { expand: 1 }), tokenizer: 'tiny', defaultDType: 'f32' },
  { name: 'm1-3b', arch: 'm1', description: 'the exact shape of M1-3B: 28 layers, attention at 3,8,13,18,23,27, d_state 16, d_inner 3072, d_xb 1024, dt_rank 192', config: LLAMA_3_2_3B, mambaConfig: mambaConfig(LLAMA_3_2_3B, [3, 8, 13, 18, 23, 27], { expand: 1 }), tokenizer: 'llama3', defaultDType: 'bf16' },
  { name: 'mamba2-tiny', arch: 'm1', description: 'tiny MambaInLlama Mamba-2 hybrid (attention at layers 1, 3)', config: TINY, mambaConfig: mambaConfig(TINY, [1, 3], MAMBA2_TINY_SSM), tokenizer: 'tiny', defaultDType: 'f32' },
  { name: 'llama3.2-mamba2-3b', arch: 'm1', description: 'the shape of Llama3.2-Mamba2-3B-distill: Mamba-2 (24 heads × 128, d_state 128) with attention at odd layers', config: LLAMA_3_2_3B, mambaConfig: mambaConfig(LLAMA_3_2_3B, [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27], { expand: 1, ngroups: 24, d_state: 128 }), tokenizer: 'llama3', defaultDType: 'bf16' },
];

export function findPreset(arch: string, name: string): Preset {
  if (arch !== 'llama' && arch !== 'm1') throw new UserError(`--arch must be "llama" or "m1", got "${arch}"`);
  const p = PRESETS.find((x) => x.arch === arch && x.name === name);
  if (!p) {
    const names = PRESETS.filter((x) => x.arch === arch).map((x) => x.name).join(', ');
    throw new UserError(`--preset "${name}" is not a preset of --arch ${arch} (choose from: ${names})`);
  }
  return p;
}

/** the mamba_config.json a conversion writes for a teacher config (M1's transformer_to_mamba.py defaults) */
export function hybridMambaConfig(teacherConfig: Record<string, unknown>, attnLayers: number[], version: 1 | 2): Record<string, unknown> {
  const heads = teacherConfig['num_attention_heads'] as number;
  const hidden = teacherConfig['hidden_size'] as number;
  const headDim = (teacherConfig['head_dim'] as number | undefined) ?? hidden / heads;
  const ssm = version === 1 ? { expand: 1 } : { expand: 1, ngroups: heads, d_state: headDim };
  return mambaConfig(teacherConfig, attnLayers, ssm);
}
