import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { configsOf, initModel, initWeights, loadModel, saveWeights, validateConfigs, writeConfigs } from '../src/model/checkpoint.js';
import { convertToHybrid } from '../src/model/convert.js';
import { attentionDims, CausalLM, type ModelConfig } from '../src/model/model.js';
import { plainSeqInfo, type DecodeInfo } from '../src/model/module.js';
import { findPreset } from '../src/model/presets.js';
import { scoreLogprobs } from '../src/model/logprobs.js';
import { SafetensorsReader } from '../src/io/safetensors.js';
import { CheckpointError, ConfigError } from '../src/util/errors.js';
import { gradCheck, maxAbsDiff } from './util/gradcheck.js';

const be = new CpuBackend();

/** the tiny presets, shrunk further (2 layers) so whole-model gradient checks stay fast */
function tinyConfig(kind: 'llama' | 'm1' | 'mamba2', layers = 2): ModelConfig {
  const preset = findPreset(kind === 'llama' ? 'llama' : 'm1', kind === 'mamba2' ? 'mamba2-tiny' : 'tiny');
  const config = { ...preset.config, num_hidden_layers: layers, vocab_size: 48 };
  const mamba = preset.mambaConfig ? { ...preset.mambaConfig, n_layer: layers, attn_layers: [1] } : null;
  return validateConfigs(config, mamba);
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'm1ts-model-'));
}

function ids(n: number, V: number, seed: number): Int32Array {
  const a = new Int32Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    a[i] = x % V;
  }
  return a;
}

/** one sequence per row, each in its own contiguous run of KV blocks */
function decodeInfo(lens: number[], slots: number[], blockSize: number, maxBlocks: number): DecodeInfo {
  const n = lens.length;
  const blockTables = new Int32Array(n * maxBlocks);
  const slotMapping = new Int32Array(n);
  const positions = new Int32Array(n);
  const seqLens = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    // sequence i owns blocks in reverse order, to exercise the block table
    for (let b = 0; b < maxBlocks; b++) blockTables[i * maxBlocks + b] = (i + 1) * maxBlocks - 1 - b;
    const pos = lens[i]!;
    positions[i] = pos;
    seqLens[i] = pos + 1;
    slotMapping[i] = blockTables[i * maxBlocks + Math.floor(pos / blockSize)]! * blockSize + (pos % blockSize);
  }
  return { n, slots: Int32Array.from(slots), positions, slotMapping, blockTables, maxBlocks, seqLens };
}

describe.each(['llama', 'm1', 'mamba2'] as const)('whole model (%s)', (kind) => {
  it('passes a gradient check of the cross-entropy loss', () => {
    const cfg = tinyConfig(kind);
    const model = initModel(be, cfg, 7);
    const T = 6, B = 2;
    const x = ids(B * T, cfg.llama.vocabSize, 3);
    const targets = ids(B * T, cfg.llama.vocabSize, 5);
    const seq = plainSeqInfo(B, T);
    const lossOf = () => {
      const { hidden } = model.forward(x, seq);
      return be.crossEntropy(model.logits(hidden), targets).loss;
    };
    model.zeroGrads();
    const { hidden, saved } = model.forward(x, seq, { needBackward: true });
    const { dlogits } = be.crossEntropy(model.logits(hidden), targets);
    model.backwardFromLogits(dlogits, saved!);
    const params = model.params();
    // every parameter tensor gets checked on a few coordinates
    gradCheck({
      name: `${kind} model`,
      inputs: params.map(([, p]) => (p.value as unknown as { data: Float32Array }).data),
      analytic: params.map(([, p]) => be.read(p.grad ?? be.zeros(p.value.shape))),
      loss: lossOf,
      samples: 3,
      eps: 3e-3,
      rtol: 5e-2,
      atol: 2e-4,
    });
  });

  it('recurrent decode equals the parallel forward, for sequences of different lengths in shared pools', () => {
    const cfg = tinyConfig(kind, 3);
    const model = initModel(be, cfg, 11);
    const V = cfg.llama.vocabSize;
    const T = 9;
    const seqs = [ids(T, V, 1), ids(T, V, 2)];
    const full = seqs.map((s) => be.read(model.logits(model.forward(s, plainSeqInfo(1, T)).hidden)));
    const blockSize = 4, maxBlocks = 3;
    const states = model.allocateState({ slots: 4, kvBlocks: 2 * maxBlocks, blockSize });
    const slots = [3, 1];
    // sequence 1 starts two tokens later, so the batch mixes positions
    for (let step = 0; step < T + 2; step++) {
      const active = [0, 1].filter((i) => step - 2 * i >= 0 && step - 2 * i < T);
      const lens = active.map((i) => step - 2 * i);
      const info = decodeInfo(lens, active.map((i) => slots[i]!), blockSize, maxBlocks);
      // block tables are per active sequence: rebuild with each sequence's own blocks
      active.forEach((seqIdx, j) => {
        for (let b = 0; b < maxBlocks; b++) info.blockTables[j * maxBlocks + b] = (seqIdx + 1) * maxBlocks - 1 - b;
        const pos = lens[j]!;
        info.slotMapping[j] = info.blockTables[j * maxBlocks + Math.floor(pos / blockSize)]! * blockSize + (pos % blockSize);
      });
      const tok = Int32Array.from(active.map((i, j) => seqs[i]![lens[j]!]!));
      const logits = be.read(model.step(tok, states, info));
      active.forEach((i, j) => {
        const t = lens[j]!;
        const ref = full[i]!.subarray(t * V, (t + 1) * V);
        expect(maxAbsDiff(logits.subarray(j * V, (j + 1) * V), ref), `seq ${i} position ${t}`).toBeLessThan(2e-4);
      });
    }
  });

  it('prefill with state hand-over, then decode, equals the parallel forward', () => {
    const cfg = tinyConfig(kind, 3);
    const model = initModel(be, cfg, 13);
    const V = cfg.llama.vocabSize;
    const T = 10, T0 = 6;
    const s = ids(T, V, 9);
    const full = be.read(model.logits(model.forward(s, plainSeqInfo(1, T)).hidden));
    const blockSize = 4, maxBlocks = 3;
    const states = model.allocateState({ slots: 2, kvBlocks: maxBlocks, blockSize });
    const table = [2, 0, 1];
    const slotMapping = Int32Array.from({ length: T0 }, (_, t) => table[Math.floor(t / blockSize)]! * blockSize + (t % blockSize));
    const pre = be.read(model.logits(model.forward(s.subarray(0, T0), plainSeqInfo(1, T0), { states, stateWrite: { slots: Int32Array.of(1), slotMapping } }).hidden));
    expect(maxAbsDiff(pre, full.subarray(0, T0 * V))).toBeLessThan(1e-5);
    for (let t = T0; t < T; t++) {
      const info: DecodeInfo = {
        n: 1, slots: Int32Array.of(1), positions: Int32Array.of(t),
        slotMapping: Int32Array.of(table[Math.floor(t / blockSize)]! * blockSize + (t % blockSize)),
        blockTables: Int32Array.from(table), maxBlocks, seqLens: Int32Array.of(t + 1),
      };
      const logits = be.read(model.step(Int32Array.of(s[t]!), states, info));
      expect(maxAbsDiff(logits, full.subarray(t * V, (t + 1) * V)), `position ${t}`).toBeLessThan(2e-4);
    }
  });

  it('batched forward equals one row at a time', () => {
    const cfg = tinyConfig(kind, 2);
    const model = initModel(be, cfg, 17);
    const V = cfg.llama.vocabSize, T = 7;
    const a = ids(T, V, 21), b = ids(T, V, 22);
    const both = be.read(model.logits(model.forward(Int32Array.from([...a, ...b]), plainSeqInfo(2, T)).hidden));
    const la = be.read(model.logits(model.forward(a, plainSeqInfo(1, T)).hidden));
    const lb = be.read(model.logits(model.forward(b, plainSeqInfo(1, T)).hidden));
    expect(maxAbsDiff(both.subarray(0, T * V), la)).toBeLessThan(1e-5);
    expect(maxAbsDiff(both.subarray(T * V), lb)).toBeLessThan(1e-5);
  });

  it('packed rows with segment boundaries equal the sequences run separately', () => {
    const cfg = tinyConfig(kind, 2);
    const model = initModel(be, cfg, 19);
    const V = cfg.llama.vocabSize;
    const a = ids(5, V, 31), b = ids(6, V, 32);
    const packed = Int32Array.from([...a, ...b]);
    const positions = Int32Array.from([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5]);
    const segments = Int32Array.from([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
    const out = be.read(model.logits(model.forward(packed, { B: 1, T: 11, positions, segments }).hidden));
    const la = be.read(model.logits(model.forward(a, plainSeqInfo(1, 5)).hidden));
    const lb = be.read(model.logits(model.forward(b, plainSeqInfo(1, 6)).hidden));
    expect(maxAbsDiff(out.subarray(0, 5 * V), la)).toBeLessThan(1e-5);
    expect(maxAbsDiff(out.subarray(5 * V), lb)).toBeLessThan(1e-5);
  });
});

describe('checkpoints', () => {
  it('init → load gives the model initModel builds, and save → load round-trips bf16 exactly', () => {
    const preset = findPreset('m1', 'tiny');
    const cfg = validateConfigs(preset.config, preset.mambaConfig);
    const dir = tmp();
    writeConfigs(dir, preset, 'bf16');
    initWeights(dir, cfg, 5, 'bf16');
    const { model } = loadModel(dir, be);
    const ref = initModel(be, cfg, 5, 'bf16');
    for (const [[k, p], [k2, q]] of model.params().map((x, i) => [x, ref.params()[i]!] as const)) {
      expect(k).toBe(k2);
      expect(maxAbsDiff(be.read(p.value), be.read(q.value)), k).toBe(0);
    }
    // A_log and D stay f32 in a bf16 model, the rest is bf16
    const reader = SafetensorsReader.open(dir);
    expect(reader.info('model.layers.0.mamba.A_log').dtype).toBe('F32');
    expect(reader.info('model.layers.0.mamba.in_proj.weight').dtype).toBe('BF16');
    reader.close();
    const dir2 = tmp();
    writeConfigs(dir2, configsOf(cfg), 'bf16');
    saveWeights(dir2, model);
    const again = loadModel(dir2, be).model;
    const a = readFileSync(join(dir, 'model.safetensors'));
    const b = readFileSync(join(dir2, 'model.safetensors'));
    const r1 = SafetensorsReader.open(dir), r2 = SafetensorsReader.open(dir2);
    for (const n of r1.names()) expect(Buffer.compare(r1.readRaw(n), r2.readRaw(n)), n).toBe(0);
    r1.close(); r2.close();
    expect(a.length).toBeGreaterThan(0);
    expect(b.length).toBeGreaterThan(0);
    expect(again.parameterCount()).toBe(model.parameterCount());
  });

  it('sharded checkpoints load like single files', () => {
    const preset = findPreset('llama', 'tiny');
    const cfg = validateConfigs(preset.config, null);
    const dir = tmp();
    writeConfigs(dir, preset, 'f32');
    const r = initWeights(dir, cfg, 1, 'f32', { maxShardBytes: 200_000 });
    expect(r.files.length).toBeGreaterThan(1);
    const { model } = loadModel(dir, be);
    const x = ids(5, cfg.llama.vocabSize, 1);
    const ref = initModel(be, cfg, 1);
    expect(maxAbsDiff(scoreLogprobs(model, [...x]), scoreLogprobs(ref, [...x]))).toBe(0);
  });

  function tinyDir(arch: 'llama' | 'm1' = 'm1'): { dir: string; cfg: ModelConfig } {
    const preset = findPreset(arch, 'tiny');
    const cfg = validateConfigs(preset.config, preset.mambaConfig);
    const dir = tmp();
    writeConfigs(dir, preset, 'f32');
    return { dir, cfg };
  }

  it('a missing tensor is named', () => {
    const { dir, cfg } = tinyDir();
    const model = initModel(be, cfg, 1);
    const { writeSafetensors } = require_safetensors();
    writeSafetensors(dir, model.params().filter(([k]) => k !== 'model.layers.2.mamba.D').map(([k, p]) => ({ name: k, dtype: 'F32', shape: [...p.value.shape], data: be.read(p.value) })));
    expect(() => loadModel(dir, be)).toThrow(CheckpointError);
    expect(() => loadModel(dir, be)).toThrow(/model\.layers\.2\.mamba\.D.*missing/);
  });

  it('a tensor whose shape disagrees with the config is named with both shapes', () => {
    const { dir, cfg } = tinyDir();
    const model = initModel(be, cfg, 1);
    const { writeSafetensors } = require_safetensors();
    writeSafetensors(dir, model.params().map(([k, p]) => (k === 'model.layers.0.mamba.A_log'
      ? { name: k, dtype: 'F32' as const, shape: [64, 8], data: new Float32Array(512) }
      : { name: k, dtype: 'F32' as const, shape: [...p.value.shape], data: be.read(p.value) })));
    expect(() => loadModel(dir, be)).toThrow(/model\.layers\.0\.mamba\.A_log" has shape \[64, 8\] but the config implies \[64, 16\]/);
  });

  it('a 16-bit tensor of the other kind than config.json torch_dtype is named', () => {
    const { dir, cfg } = tinyDir('llama');
    writeConfigs(dir, findPreset('llama', 'tiny'), 'bf16');
    const model = initModel(be, cfg, 1);
    const { writeSafetensors } = require_safetensors();
    writeSafetensors(dir, model.params().map(([k, p]) => ({ name: k, dtype: k === 'model.norm.weight' ? 'F16' as const : 'BF16' as const, shape: [...p.value.shape], data: be.read(p.value) })));
    expect(() => loadModel(dir, be)).toThrow(/model\.safetensors: tensor "model\.norm\.weight" is F16 but config\.json torch_dtype is bfloat16/);
  });

  it('an unexpected tensor is an error', () => {
    const { dir, cfg } = tinyDir('llama');
    const model = initModel(be, cfg, 1);
    const { writeSafetensors } = require_safetensors();
    const list = model.params().map(([k, p]) => ({ name: k, dtype: 'F32' as const, shape: [...p.value.shape], data: be.read(p.value) }));
    list.push({ name: 'model.layers.0.self_attn.rotary_emb.inv_freq', dtype: 'F32', shape: [8], data: new Float32Array(8) });
    writeSafetensors(dir, list);
    expect(() => loadModel(dir, be)).toThrow(/unexpected tensor.*rotary_emb\.inv_freq/);
  });

  it('invalid config values are named', () => {
    const { dir } = tinyDir('llama');
    const cfgPath = join(dir, 'config.json');
    const raw = JSON.parse(readFileSync(cfgPath, 'utf8'));
    writeFileSync(cfgPath, JSON.stringify({ ...raw, num_key_value_heads: 3 }));
    expect(() => loadModel(dir, be)).toThrow(ConfigError);
    expect(() => loadModel(dir, be)).toThrow(/config\.json: num_attention_heads 4 is not a multiple of num_key_value_heads 3/);
    writeFileSync(cfgPath, JSON.stringify({ ...raw, hidden_size: 'big' }));
    expect(() => loadModel(dir, be)).toThrow(/field "hidden_size" must be an integer/);
    writeFileSync(cfgPath, '{"hidden_size": 6');
    expect(() => loadModel(dir, be)).toThrow(/config\.json: not valid JSON/);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(raw));
    writeFileSync(join(dir, 'mamba_config.json'), JSON.stringify({ d_model: 64, attn_layers: [9] }));
    expect(() => loadModel(dir, be)).toThrow(/mamba_config\.json: attn_layers entry 9 is outside \[0, 4\)/);
  });
});

describe('conversion (M1 initialisation)', () => {
  function teacher(ropeScaling: boolean): { dir: string; model: CausalLM } {
    const preset = findPreset('llama', 'tiny');
    const config = ropeScaling ? preset.config : { ...preset.config, rope_scaling: null };
    const cfg = validateConfigs(config, null);
    const dir = tmp();
    writeConfigs(dir, { config, mambaConfig: null }, 'f32');
    initWeights(dir, cfg, 3, 'f32');
    return { dir, model: loadModel(dir, be).model };
  }

  it('copies q/k/v/o into the mixer as C/B/x/out and keeps MLPs, norms and embeddings', () => {
    const t = teacher(true);
    const out = tmp();
    const s = convertToHybrid(t.dir, out, { attnLayers: [1], seed: 4 });
    expect(s.attentionLayers).toEqual([1]);
    expect(s.mambaLayers).toEqual([0, 2, 3]);
    const r = SafetensorsReader.open(out);
    const tr = SafetensorsReader.open(t.dir);
    const D = 64, Di = 64, Dxb = 32;
    const inProj = r.read('model.layers.0.mamba.in_proj.weight');
    expect(r.info('model.layers.0.mamba.in_proj.weight').shape).toEqual([2 * Di + 2 * Dxb + 4, D]);
    const slice = (rowFrom: number, rows: number) => inProj.subarray(rowFrom * D, (rowFrom + rows) * D);
    expect(maxAbsDiff(slice(Di, Dxb), tr.read('model.layers.0.self_attn.v_proj.weight'))).toBe(0);
    expect(maxAbsDiff(slice(Di + Dxb, Dxb), tr.read('model.layers.0.self_attn.k_proj.weight'))).toBe(0);
    expect(maxAbsDiff(slice(Di + 2 * Dxb, Di), tr.read('model.layers.0.self_attn.q_proj.weight'))).toBe(0);
    expect(maxAbsDiff(r.read('model.layers.0.mamba.out_proj.weight'), tr.read('model.layers.0.self_attn.o_proj.weight'))).toBe(0);
    const qkv = r.read('model.layers.1.mha.in_proj.weight');
    expect(maxAbsDiff(qkv, Float32Array.from([
      ...tr.read('model.layers.1.self_attn.q_proj.weight'), ...tr.read('model.layers.1.self_attn.k_proj.weight'), ...tr.read('model.layers.1.self_attn.v_proj.weight'),
    ]))).toBe(0);
    for (const k of ['model.embed_tokens.weight', 'model.norm.weight', 'model.layers.2.mlp.down_proj.weight', 'model.layers.3.input_layernorm.weight']) {
      expect(maxAbsDiff(r.read(k), tr.read(k)), k).toBe(0);
    }
    // reference init of the new parameters
    const A = r.read('model.layers.0.mamba.A_log');
    expect(A[0]).toBeCloseTo(Math.log(1), 6);
    expect(A[15]).toBeCloseTo(Math.log(16), 6);
    expect([...r.read('model.layers.0.mamba.D')].every((v) => v === 1)).toBe(true);
    const dtBias = r.read('model.layers.0.mamba.dt_proj.bias');
    for (const b of dtBias) {
      const dt = Math.log1p(Math.exp(b));
      expect(dt).toBeGreaterThanOrEqual(1e-4 * 0.999);
      expect(dt).toBeLessThanOrEqual(0.1 * 1.001);
    }
    expect(r.has('lm_head.weight')).toBe(false);
    r.close(); tr.close();
    const mc = JSON.parse(readFileSync(join(out, 'mamba_config.json'), 'utf8'));
    expect(mc).toMatchObject({ d_model: 64, d_inner: 64, d_xb: 32, attn_layers: [1], ssm_cfg: { expand: 1 } });
    // the converted model loads and runs
    const { model } = loadModel(out, be);
    expect(scoreLogprobs(model, [1, 2, 3, 4]).every(Number.isFinite)).toBe(true);
  });

  it('keeping every layer as attention reproduces the teacher exactly when RoPE is unscaled', () => {
    const t = teacher(false);
    const out = tmp();
    convertToHybrid(t.dir, out, { attnLayers: [0, 1, 2, 3] });
    const { model } = loadModel(out, be);
    const x = [5, 9, 77, 3, 12, 200, 31, 8];
    expect(maxAbsDiff(scoreLogprobs(model, x), scoreLogprobs(t.model, x))).toBeLessThan(1e-5);
  });

  it('gotcha: the hybrid\'s attention uses unscaled RoPE even when config.json has llama3 scaling', () => {
    const t = teacher(true);
    const out = tmp();
    convertToHybrid(t.dir, out, { attnLayers: [0, 1, 2, 3] });
    const { model, cfg } = loadModel(out, be);
    expect(cfg.llama.ropeScaling).not.toBeNull(); // the config still says llama3 …
    const hybridFreq = attentionDims(cfg).invFreq;
    const teacherFreq = attentionDims(t.model.cfg).invFreq;
    expect(hybridFreq[7]).toBeCloseTo(1 / Math.pow(10000, 14 / 16), 7); // … but the hybrid uses θ only
    expect(teacherFreq[7]).toBeLessThan(hybridFreq[7]! / 2); // the teacher's lowest frequency is scaled down
    // positions beyond the scaling's original window make the two models differ
    const x = Array.from({ length: 40 }, (_, i) => (i * 37) % 300);
    expect(maxAbsDiff(scoreLogprobs(model, x), scoreLogprobs(t.model, x))).toBeGreaterThan(1e-4);
  });
});

// the writer is loaded lazily so this file's imports stay the model's public surface
function require_safetensors(): typeof import('../src/io/safetensors.js') {
  return safetensorsModule;
}
import * as safetensorsModule from '../src/io/safetensors.js';
