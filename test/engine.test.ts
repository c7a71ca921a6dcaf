import { describe, expect, it } from 'vitest';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { Engine, type GenerationRequest, type RequestOutput } from '../src/infer/engine.js';
import { argmax, HostSampler, logprobOf } from '../src/infer/sampling.js';
import { initModel, validateConfigs } from '../src/model/checkpoint.js';
import type { CausalLM, ModelConfig } from '../src/model/model.js';
import { plainSeqInfo } from '../src/model/module.js';
import { findPreset } from '../src/model/presets.js';
import { tinyTokenizerFiles, TINY_VOCAB_SIZE } from '../src/model/tiny-tokenizer.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { UserError } from '../src/util/errors.js';

const be = new CpuBackend();
type Kind = 'llama' | 'm1' | 'mamba2';

/** the tiny presets with 3 layers (attention in the middle for the hybrids) and a small vocabulary */
function tinyConfig(kind: Kind, vocab = 48): ModelConfig {
  const preset = findPreset(kind === 'llama' ? 'llama' : 'm1', kind === 'mamba2' ? 'mamba2-tiny' : 'tiny');
  const config = { ...preset.config, num_hidden_layers: 3, vocab_size: vocab };
  const mamba = preset.mambaConfig ? { ...preset.mambaConfig, n_layer: 3, attn_layers: [1] } : null;
  return validateConfigs(config, mamba);
}

const models = new Map<string, CausalLM>();
function tinyModel(kind: Kind, vocab = 48): CausalLM {
  const key = `${kind}/${vocab}`;
  if (!models.has(key)) models.set(key, initModel(be, tinyConfig(kind, vocab), 23));
  return models.get(key)!;
}

function prompt(n: number, seed: number, V = 48): number[] {
  let x = seed;
  return Array.from({ length: n }, () => {
    x = (x * 1103515245 + 12345) >>> 0;
    return x % V;
  });
}

/** logits [T, V] of the full parallel forward of ids */
function fullLogits(model: CausalLM, ids: number[]): Float32Array {
  return be.read(model.logits(model.forward(Int32Array.from(ids), plainSeqInfo(1, ids.length)).hidden));
}

function run(model: CausalLM, reqs: GenerationRequest[], opts: ConstructorParameters<typeof Engine>[1] = {}): RequestOutput[] {
  return new Engine(model, { blockSize: 4, ...opts }).generate(reqs);
}

const hot = { temperature: 1.2, topP: 0.95 };

describe('engine pool growth', () => {
  it('frees every temporary it makes: only the grown pools stay alive (a forgotten view would pin the old pool on a device)', () => {
    // a backend that records the tensors its layout ops return while the engine grows its pools
    const inner = new CpuBackend();
    let recording = false;
    const made: { dispose(): void; size: number }[] = [];
    const be = new Proxy(inner, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver) as unknown;
        if (typeof v !== 'function' || !['zeros', 'reshape', 'concatLastDim'].includes(String(prop))) return v;
        return (...args: unknown[]) => {
          const t = (v as (...a: unknown[]) => { dispose(): void; size: number }).apply(receiver, args);
          if (recording) made.push(t);
          return t;
        };
      },
    });
    const model = initModel(be, tinyConfig('m1'), 23);
    const engine = new Engine(model, { blockSize: 4, initialKvBlocks: 1, maxBatch: 20 });
    const grow = (engine as unknown as { growPools(kind: string, rows: number): void }).growPools.bind(engine);
    let grows = 0;
    (engine as unknown as { growPools(kind: string, rows: number): void }).growPools = (kind, rows) => {
      recording = true;
      try {
        grow(kind, rows);
      } finally {
        recording = false;
      }
      grows++;
    };
    // 20 samples of 9-token prompts × 12 tokens: the KV pool (1 block) and the state slots (16) both grow
    const out = engine.generate([{ promptIds: prompt(9, 4), n: 20, sampling: { temperature: 0 }, maxTokens: 12, ignoreEos: true }]);
    expect(out[0]!.samples.length).toBe(20);
    expect(grows).toBeGreaterThan(2);
    const live = new Set<unknown>();
    for (const st of (engine as unknown as { states: Record<string, unknown>[] }).states) for (const t of Object.values(st)) live.add(t);
    const alive = made.filter((t) => !live.has(t) && (() => { try { return (t as unknown as { data: unknown }).data !== null; } catch { return false; } })());
    expect(alive.length, `${alive.length} of the ${made.length} tensors made while growing are still alive`).toBe(0);
  });
});

describe('engine dispose', () => {
  it('frees the KV and state pools, refuses further work, and is idempotent', () => {
    const engine = new Engine(tinyModel('m1'), { blockSize: 4, maxBatch: 4 });
    const out = engine.generate([{ promptIds: prompt(5, 6), n: 2, sampling: { temperature: 0 }, maxTokens: 4, ignoreEos: true }]);
    expect(out[0]!.samples.length).toBe(2);
    const pools = (engine as unknown as { states: Record<string, unknown>[] }).states.flatMap((st) => Object.values(st).filter((t) => typeof t === 'object'));
    expect(pools.length).toBeGreaterThan(0);
    engine.dispose();
    for (const t of pools) expect(() => (t as { data: unknown }).data).toThrow();
    engine.dispose();
    expect(() => engine.step()).toThrow(/engine: step after dispose\(\)/);
    expect(() => engine.addRequest({ promptIds: prompt(3, 1), maxTokens: 2 })).toThrow(/engine: addRequest after dispose\(\)/);
  });
});

describe('engine KV cache dtype', () => {
  it('bf16 weights get a bf16 cache by default (f32 weights f32), kvDType overrides, a bad one is refused', () => {
    const cfg = tinyConfig('m1');
    const b16 = initModel(be, cfg, 23, 'bf16');
    expect(new Engine(b16).kvDType).toBe('bf16');
    expect(new Engine(tinyModel('m1')).kvDType).toBe('f32');
    expect(new Engine(b16, { kvDType: 'f32' }).kvDType).toBe('f32');
    expect(() => new Engine(b16, { kvDType: 'i8' as never })).toThrow(/engine: kvDType must be f32, bf16 or f16, got i8/);
    // decoding through the bf16 cache: the f32 cache's tokens here (fixed prompt and weights), logprobs within
    // the rounding of K and V to bf16
    const req = { promptIds: prompt(6, 5), sampling: { temperature: 0 }, maxTokens: 8, ignoreEos: true };
    const a = run(b16, [req])[0]!.samples[0]!, f = run(b16, [req], { kvDType: 'f32' })[0]!.samples[0]!;
    expect(a.tokenIds.length).toBe(8);
    expect(a.tokenIds).toEqual(f.tokenIds);
    let worst = 0;
    a.logprobs!.forEach((lp, i) => { worst = Math.max(worst, Math.abs(lp - f.logprobs![i]!)); });
    expect(worst).toBeGreaterThan(0); // the caches differ …
    expect(worst).toBeLessThan(2e-2); // … by rounding only
  });

  it('growing the pools keeps their bf16 storage: tokens and logprobs equal to runs that never grow', () => {
    const b16 = initModel(be, tinyConfig('m1'), 23, 'bf16');
    const reqs = Array.from({ length: 20 }, (_, i) => ({ promptIds: prompt(3 + (i % 5), 40 + i), sampling: { temperature: 0 }, maxTokens: 12, ignoreEos: true }));
    // one engine: the KV pool grows from 1 block and the state slots from 16 to 32
    const grown = run(b16, reqs, { maxBatch: 20, initialKvBlocks: 1 });
    // two engines of 10 requests with room for everything from the start
    const fixed = [...run(b16, reqs.slice(0, 10), { maxBatch: 10, initialKvBlocks: 256 }), ...run(b16, reqs.slice(10), { maxBatch: 10, initialKvBlocks: 256 })];
    grown.forEach((o, i) => {
      expect(o.samples[0]!.tokenIds, `request ${i}`).toEqual(fixed[i]!.samples[0]!.tokenIds);
      expect(o.samples[0]!.logprobs, `request ${i}`).toEqual(fixed[i]!.samples[0]!.logprobs);
    });
  });

  it('timeDecode splits the decode steps (preparation / model step / sampling); off by default', () => {
    const req = { promptIds: prompt(5, 9), sampling: { temperature: 0 }, maxTokens: 6, ignoreEos: true };
    const timed = new Engine(tinyModel('m1'), { blockSize: 4, timeDecode: true });
    const plain = new Engine(tinyModel('m1'), { blockSize: 4 });
    const a = timed.generate([req])[0]!.samples[0]!, b = plain.generate([req])[0]!.samples[0]!;
    expect(a.tokenIds).toEqual(b.tokenIds); // the syncs change nothing
    const t = timed.decodeTiming()!;
    expect(t.steps).toBe(5); // the first token comes from the prefill
    for (const v of [t.prepareMs, t.deviceMs, t.sampleMs]) expect(v).toBeGreaterThanOrEqual(0);
    expect(t.deviceMs).toBeGreaterThan(0);
    expect(plain.decodeTiming()).toBeNull();
  });

  it('the SSM state: bf16 by default with bf16 weights (the reference\'s), ssmDType overrides, Mamba-2 and bad dtypes refused', () => {
    const b16 = initModel(be, tinyConfig('m1'), 23, 'bf16');
    const e = new Engine(b16);
    expect(e.ssmDType).toBe('bf16');
    expect(new Engine(tinyModel('m1')).ssmDType).toBe('f32');
    expect(new Engine(b16, { ssmDType: 'f32' }).ssmDType).toBe('f32');
    expect(() => new Engine(b16, { ssmDType: 'f16' })).toThrow(/engine: ssmDType must be f32 or bf16, got f16/);
    expect(new Engine(tinyModel('mamba2')).ssmDType).toBe('f32');
    expect(() => new Engine(tinyModel('mamba2'), { ssmDType: 'bf16' })).toThrow(/engine: ssmDType bf16 needs Mamba-1 layers/);
    // decoding through the bf16 state (prefill's final state rounded, then every step's): the f32 state's tokens
    // here, logprobs within the rounding
    const req = { promptIds: prompt(6, 7), sampling: { temperature: 0 }, maxTokens: 10, ignoreEos: true };
    const a = run(b16, [req])[0]!.samples[0]!, f = run(b16, [req], { ssmDType: 'f32' })[0]!.samples[0]!;
    expect(a.tokenIds.length).toBe(10);
    expect(a.tokenIds).toEqual(f.tokenIds);
    let worst = 0;
    a.logprobs!.forEach((lp, i) => { worst = Math.max(worst, Math.abs(lp - f.logprobs![i]!)); });
    expect(worst).toBeGreaterThan(0);
    expect(worst).toBeLessThan(2e-2);
  });
});

describe.each(['llama', 'm1', 'mamba2'] as const)('engine (%s)', (kind) => {
  it('greedy decoding equals the argmax of the full parallel forward at every step', () => {
    const model = tinyModel(kind);
    const V = model.vocabSize, K = 12;
    for (const p of [prompt(5, 1), prompt(8, 2), prompt(1, 3)]) {
      const [out] = run(model, [{ promptIds: p, sampling: { temperature: 0 }, maxTokens: K, ignoreEos: true }]);
      const s = out!.samples[0]!;
      expect(s.tokenIds.length).toBe(K);
      expect(s.finishReason).toBe('length');
      // one forward over prompt + generated (but the last) gives every step's logits
      const all = [...p, ...s.tokenIds.slice(0, -1)];
      const logits = fullLogits(model, all);
      for (let i = 0; i < K; i++) {
        const row = logits.subarray((p.length - 1 + i) * V, (p.length + i) * V);
        expect(s.tokenIds[i], `step ${i}`).toBe(argmax(row));
        expect(Math.abs(s.logprobs[i]! - logprobOf(row, s.tokenIds[i]!)), `logprob ${i}`).toBeLessThan(1e-4);
      }
    }
  });

  it('a batch gives what each request gives alone (same seeds), and memory is all given back', () => {
    const model = tinyModel(kind);
    const reqs: GenerationRequest[] = [
      { promptIds: prompt(6, 4), sampling: hot, maxTokens: 9, seed: 1, ignoreEos: true },
      { promptIds: prompt(3, 5), sampling: { temperature: 0 }, maxTokens: 7, ignoreEos: true },
      { promptIds: prompt(6, 6), sampling: { temperature: 0.8, topK: 5, minP: 0.05 }, maxTokens: 11, seed: 2, n: 2, ignoreEos: true },
      { promptIds: prompt(9, 7), sampling: hot, maxTokens: 5, seed: 3, ignoreEos: true },
    ];
    const engine = new Engine(model, { blockSize: 4, initialKvBlocks: 1 });
    const batched = engine.generate(reqs);
    const mem = engine.memory();
    expect(mem.kvBlocksUsed).toBe(0);
    expect(mem.slotsUsed).toBe(0);
    // the pools grew from 1 block as tokens arrived
    if (kind !== 'llama') expect(mem.kvBlocksCapacity).toBeGreaterThan(1);
    reqs.forEach((r, i) => {
      const [alone] = run(model, [r]);
      alone!.samples.forEach((s, j) => {
        const b = batched[i]!.samples[j]!;
        expect(b.tokenIds, `request ${i} sample ${j}`).toEqual(s.tokenIds);
        expect(Math.max(...b.logprobs.map((x, k) => Math.abs(x - s.logprobs[k]!)))).toBeLessThan(1e-5);
      });
    });
    // two samples of one seeded request differ from each other
    expect(batched[2]!.samples[0]!.tokenIds).not.toEqual(batched[2]!.samples[1]!.tokenIds);
  });

  it("a sequence's output does not change when others join or leave mid-way", () => {
    const model = tinyModel(kind);
    const a: GenerationRequest = { promptIds: prompt(7, 8), sampling: hot, maxTokens: 14, seed: 9, ignoreEos: true };
    const [alone] = run(model, [a]);
    const engine = new Engine(model, { blockSize: 4 });
    const ha = engine.addRequest(a);
    let outA: RequestOutput | null = null;
    ha.result.then((o) => (outA = o));
    engine.step();
    engine.step();
    // b leaves after 2 tokens, c stays longer, d joins later
    engine.addRequest({ promptIds: prompt(2, 10), sampling: hot, maxTokens: 2, seed: 4, ignoreEos: true });
    engine.addRequest({ promptIds: prompt(11, 11), sampling: { temperature: 0 }, maxTokens: 20, ignoreEos: true, n: 3 });
    for (let i = 0; i < 4; i++) engine.step();
    engine.addRequest({ promptIds: prompt(5, 12), sampling: hot, maxTokens: 3, seed: 5, ignoreEos: true });
    engine.runUntilIdle();
    return Promise.resolve().then(() => {
      expect(outA).not.toBeNull();
      expect(outA!.samples[0]!.tokenIds).toEqual(alone!.samples[0]!.tokenIds);
    });
  });

  it('graphs: true on a backend that cannot record graphs changes nothing', () => {
    const model = tinyModel(kind);
    const req: GenerationRequest = { promptIds: prompt(6, 30), sampling: hot, maxTokens: 8, seed: 3, ignoreEos: true, n: 2 };
    const engine = new Engine(model, { blockSize: 4, graphs: true });
    expect(engine.generate([req])[0]!.samples.map((s) => s.tokenIds)).toEqual(run(model, [req])[0]!.samples.map((s) => s.tokenIds));
    expect(engine.numGraphs).toBe(0);
  });

  it('reused state slots and KV blocks carry no state over', () => {
    const model = tinyModel(kind);
    // prompts of 1 and 2 tokens are shorter than the conv window (K−1 = 3): the prefill must zero-pad it
    const probes: GenerationRequest[] = [1, 2, 5].map((L, i) => ({ promptIds: prompt(L, 20 + i), sampling: hot, maxTokens: 6, seed: i, ignoreEos: true }));
    const fresh = probes.map((r) => run(model, [r])[0]!.samples[0]!.tokenIds);
    // one slot and few blocks: every request reuses what the previous one dirtied
    const engine = new Engine(model, { blockSize: 4, maxBatch: 1, initialKvBlocks: 2 });
    for (let i = 0; i < probes.length; i++) {
      engine.generate([{ promptIds: prompt(13, 30 + i), sampling: hot, maxTokens: 9, seed: 7, ignoreEos: true }]);
      expect(engine.generate([probes[i]!])[0]!.samples[0]!.tokenIds, `probe ${i}`).toEqual(fresh[i]);
    }
    expect(engine.memory().slotsCapacity).toBe(1);
  });

  it('n samples sharing one prefill give what separate prefills give', () => {
    const model = tinyModel(kind);
    // 6 tokens leave the last 4-token block half full (copy-on-write); 8 fill it exactly
    for (const L of [6, 8]) {
      const req: GenerationRequest = { promptIds: prompt(L, 40 + L), n: 4, sampling: hot, maxTokens: 7, seed: 12, ignoreEos: true };
      const shared = run(model, [req])[0]!;
      const separate = run(model, [req], { sharePrefill: false })[0]!;
      for (let j = 0; j < 4; j++) {
        expect(shared.samples[j]!.tokenIds, `L ${L} sample ${j}`).toEqual(separate.samples[j]!.tokenIds);
        expect(Math.max(...shared.samples[j]!.logprobs.map((x, k) => Math.abs(x - separate.samples[j]!.logprobs[k]!)))).toBeLessThan(1e-5);
      }
    }
  });
});

describe('engine memory', () => {
  it('shares the prompt blocks between samples and copies a half-full last block on first write', () => {
    const model = tinyModel('m1');
    const engine = new Engine(model, { blockSize: 4 });
    engine.addRequest({ promptIds: prompt(6, 50), n: 4, sampling: hot, maxTokens: 9, seed: 1, ignoreEos: true });
    engine.step(); // prefill: 2 blocks, held by all four samples
    expect(engine.memory()).toMatchObject({ kvBlocksUsed: 2, slotsUsed: 4 });
    engine.step(); // token 7 goes to the shared half-full block: three samples get their own copy
    expect(engine.memory().kvBlocksUsed).toBe(5);
    engine.step();
    engine.step(); // token 9 opens a new block per sample
    expect(engine.memory().kvBlocksUsed).toBe(1 + 4 + 4);
    engine.runUntilIdle();
    expect(engine.memory()).toMatchObject({ kvBlocksUsed: 0, slotsUsed: 0 });
  });

  it('admits no more than maxBatch sequences and queues the rest', () => {
    const model = tinyModel('llama');
    const engine = new Engine(model, { blockSize: 4, maxBatch: 3 });
    const hs = [0, 1, 2].map((i) => engine.addRequest({ promptIds: prompt(3, i), n: 2, sampling: { temperature: 0 }, maxTokens: 2, ignoreEos: true }));
    engine.step();
    expect(engine.numRunning).toBe(2);
    expect(engine.numWaiting).toBe(2);
    engine.runUntilIdle();
    return Promise.all(hs.map((h) => h.result)).then((outs) => expect(outs.map((o) => o.samples.length)).toEqual([2, 2, 2]));
  });

  it('with a limited KV cache, admission waits for room instead of running out', () => {
    const model = tinyModel('m1');
    // each request may need ceil((4 + 8) / 4) = 3 blocks; 7 blocks fit two at a time
    const engine = new Engine(model, { blockSize: 4, maxKvBlocks: 7 });
    const reqs = [0, 1, 2].map((i) => ({ promptIds: prompt(4, 60 + i), sampling: hot, maxTokens: 8, seed: i, ignoreEos: true }));
    for (const r of reqs) engine.addRequest(r);
    engine.step();
    expect(engine.numRunning).toBe(2);
    engine.runUntilIdle();
    expect(() => engine.addRequest({ promptIds: prompt(4, 1), n: 3, maxTokens: 8 })).toThrow(/needs up to 9 KV blocks but the cache holds 7/);
  });
});

describe('stops', () => {
  const tokenizer = (() => {
    const f = tinyTokenizerFiles();
    return Tokenizer.fromObjects(f.tokenizerJson, f.tokenizerConfig);
  })();
  const model = tinyModel('m1', TINY_VOCAB_SIZE);
  const p = prompt(4, 70, 256);

  it('stop strings cut the text exactly, also when streamed, and end at the token that completed them', () => {
    const ref = run(model, [{ promptIds: p, sampling: { temperature: 0 }, maxTokens: 40, ignoreEos: true }], { tokenizer })[0]!.samples[0]!;
    const text = ref.text!;
    expect(text).toBe(tokenizer.decode(ref.tokenIds, { skipSpecialTokens: true }));
    // a 3-character stop string from the middle of the text (it spans several byte tokens)
    let at = 10;
    while (text.slice(at, at + 3).includes('\uFFFD')) at++;
    const stop = text.slice(at, at + 3);
    const cut = text.indexOf(stop);
    let streamed = '';
    const [out] = run(model, [{
      promptIds: p, sampling: { temperature: 0 }, maxTokens: 40, ignoreEos: true, stopStrings: ['@@never@@', stop],
      onEvent: (e) => { if (e.type === 'token') streamed += e.text; },
    }], { tokenizer });
    const s = out!.samples[0]!;
    expect(s.finishReason).toBe('stop');
    expect(s.stopReason).toBe(stop);
    expect(s.text).toBe(text.slice(0, cut));
    expect(streamed).toBe(s.text);
    // the tokens stop with the one that completed the stop string
    const k = s.tokenIds.length;
    expect(s.tokenIds).toEqual(ref.tokenIds.slice(0, k));
    expect(tokenizer.decode(s.tokenIds, { skipSpecialTokens: true }).indexOf(stop)).toBe(cut);
    expect(tokenizer.decode(s.tokenIds.slice(0, -1), { skipSpecialTokens: true }).includes(stop)).toBe(false);
  });

  it('a stop token ends the sample, is kept in token_ids and left out of the text; otherwise max tokens or the context', () => {
    const ref = run(model, [{ promptIds: p, sampling: { temperature: 0 }, maxTokens: 20, ignoreEos: true }], { tokenizer })[0]!.samples[0]!;
    const stopId = ref.tokenIds[5]!;
    const first = ref.tokenIds.indexOf(stopId);
    const [out] = run(model, [{ promptIds: p, sampling: { temperature: 0 }, maxTokens: 20, stopTokenIds: [stopId] }], { tokenizer });
    const s = out!.samples[0]!;
    expect(s).toMatchObject({ finishReason: 'stop', stopReason: stopId });
    expect(s.tokenIds).toEqual(ref.tokenIds.slice(0, first + 1));
    expect(s.text).toBe(tokenizer.decode(ref.tokenIds.slice(0, first), { skipSpecialTokens: true }));
    // engine-wide stop ids (eos) apply unless ignoreEos
    const eos = run(model, [{ promptIds: p, sampling: { temperature: 0 }, maxTokens: 20 }], { stopTokenIds: [stopId] })[0]!.samples[0]!;
    expect(eos.tokenIds.length).toBe(first + 1);
    expect(eos.text).toBeNull();
    // the context: 4 prompt tokens + 6 generated = maxContext 10
    const ctx = run(model, [{ promptIds: p, sampling: { temperature: 0 }, ignoreEos: true }], { maxContext: 10 })[0]!.samples[0]!;
    expect(ctx).toMatchObject({ finishReason: 'length' });
    expect(ctx.tokenIds).toEqual(ref.tokenIds.slice(0, 6));
  });
});

describe('requests', () => {
  const model = tinyModel('m1');

  it('cancel frees a running request at once and leaves the others unchanged', async () => {
    const b: GenerationRequest = { promptIds: prompt(5, 80), sampling: hot, maxTokens: 10, seed: 3, ignoreEos: true };
    const [alone] = run(model, [b]);
    const engine = new Engine(model, { blockSize: 4 });
    const ha = engine.addRequest({ promptIds: prompt(9, 81), n: 2, sampling: hot, maxTokens: 50, seed: 1, ignoreEos: true, requestId: 'a' });
    const hb = engine.addRequest(b);
    const hc = engine.addRequest({ promptIds: prompt(3, 82), maxTokens: 5, requestId: 'c' });
    engine.step();
    engine.step();
    expect(engine.cancel('a')).toBe(true);
    expect(engine.cancel('c')).toBe(true);
    expect(engine.cancel('nope')).toBe(false);
    expect(engine.numRunning).toBe(1 + 0);
    engine.runUntilIdle();
    const [oa, ob, oc] = await Promise.all([ha.result, hb.result, hc.result]);
    expect(oa.samples.map((s) => [s.finishReason, s.tokenIds.length])).toEqual([['abort', 2], ['abort', 2]]);
    expect(oc.samples[0]!.finishReason).toBe('abort');
    expect(ob.samples[0]!.tokenIds).toEqual(alone!.samples[0]!.tokenIds);
    expect(engine.memory()).toMatchObject({ kvBlocksUsed: 0, slotsUsed: 0 });
  });

  it('streams events through an async iterator while run() steps', async () => {
    const engine = new Engine(model, { blockSize: 4 });
    const h = engine.addRequest({ promptIds: prompt(4, 90), n: 2, sampling: hot, maxTokens: 6, seed: 2, ignoreEos: true });
    const running = engine.run();
    const tokens: number[][] = [[], []];
    let done = 0;
    for await (const e of h) {
      if (e.type === 'token') tokens[e.sample]!.push(e.tokenId);
      if (e.type === 'done') done++;
    }
    await running;
    const out = await h.result;
    expect(done).toBe(1);
    expect(tokens).toEqual(out.samples.map((s) => s.tokenIds));
  });

  it('bad input gets a clear error', () => {
    const engine = new Engine(model, { blockSize: 4, maxBatch: 4, maxContext: 16 });
    const bad: [GenerationRequest, RegExp][] = [
      [{ promptIds: prompt(16, 1) }, /prompt has 16 tokens but the context is 16 tokens/],
      [{ promptIds: [] }, /prompt is empty/],
      [{ promptIds: [1, 48] }, /promptIds\[1\]: 48 is not a token id of this model \(vocabulary \[0, 48\)\)/],
      [{ promptIds: [1, -1] }, /promptIds\[1\]/],
      [{ promptIds: [1], sampling: { topP: 0 } }, /top_p must be in \(0, 1\]/],
      [{ promptIds: [1], sampling: { temperature: -1 } }, /temperature/],
      [{ promptIds: [1], sampling: { minP: 2 } }, /min_p/],
      [{ promptIds: [1], sampling: { topK: -3 } }, /top_k/],
      [{ promptIds: [1], n: 5 }, /5 samples exceed the engine's maxBatch 4/],
      [{ promptIds: [1], n: 0 }, /n: must be a positive integer/],
      [{ promptIds: [1], maxTokens: 0 }, /max_tokens: must be a positive integer/],
      [{ promptIds: [1], stopStrings: ['x'] }, /stop strings need a tokenizer/],
      [{ promptIds: [1], stopTokenIds: [99] }, /stop_token_ids: 99/],
      [{ promptIds: [1], seed: -1 }, /seed: must be a non-negative integer/],
    ];
    for (const [r, re] of bad) {
      expect(() => engine.addRequest(r)).toThrow(UserError);
      expect(() => engine.addRequest(r)).toThrow(re);
    }
    expect(() => new Engine(model, { maxContext: 5000 })).toThrow(/maxContext 5000 exceeds the model's max_position_embeddings 2048/);
    engine.addRequest({ promptIds: [1], requestId: 'x', maxTokens: 1 });
    expect(() => engine.addRequest({ promptIds: [1], requestId: 'x' })).toThrow(/"x" is already in use/);
  });
});

describe('event buffering', () => {
  it('a request with onEvent does not buffer token events in its handle; one without does', async () => {
    const model = tinyModel('m1');
    const engine = new Engine(model, { maxBatch: 4 });
    const seen: string[] = [];
    const withCb = engine.addRequest({ promptIds: prompt(5, 1), maxTokens: 6, ignoreEos: true, seed: 1, onEvent: (e) => seen.push(e.type) });
    const plain = engine.addRequest({ promptIds: prompt(5, 1), maxTokens: 6, ignoreEos: true, seed: 1 });
    engine.runUntilIdle();
    const typesOf = async (h: typeof plain) => {
      const t: string[] = [];
      for await (const e of h) t.push(e.type);
      return t;
    };
    expect(seen.filter((t) => t === 'token')).toHaveLength(6);
    expect(await typesOf(withCb)).toEqual(['done']);
    const all = await typesOf(plain);
    expect(all.filter((t) => t === 'token')).toHaveLength(6);
    expect(all[all.length - 1]).toBe('done');
    expect((await withCb.result).samples[0]!.tokenIds).toEqual((await plain.result).samples[0]!.tokenIds);
  });
});

describe('top-logprobs', () => {
  const model = tinyModel('m1');
  const V = model.vocabSize;

  /**
   * Checks every generated position of s against the full parallel forward over prompt + generated:
   * the k alternatives are the k largest log-softmax values (a brute-force sort of the whole row), each
   * id carries its own logprob, and the chosen token's entry, when it is among them, is its logprob.
   * Ids are compared through their values, since decode and the full forward differ by ~1e-6 and
   * could swap two near-equal neighbours. Returns how many positions had the chosen token in the top k.
   */
  function checkAgainstFullForward(p: number[], s: { tokenIds: number[]; logprobs: number[]; topLogprobs?: { tokenId: number; logprob: number }[][] }, k: number): number {
    expect(s.topLogprobs).toBeDefined();
    expect(s.topLogprobs!.length).toBe(s.tokenIds.length);
    const logits = fullLogits(model, [...p, ...s.tokenIds.slice(0, -1)]);
    let chosenSeen = 0;
    s.tokenIds.forEach((tok, i) => {
      const row = logits.subarray((p.length - 1 + i) * V, (p.length + i) * V);
      const ref = Array.from({ length: V }, (_, id) => logprobOf(row, id)).sort((a, b) => b - a);
      const alts = s.topLogprobs![i]!;
      expect(alts.length, `position ${i}`).toBe(k);
      expect(new Set(alts.map((a) => a.tokenId)).size).toBe(k);
      alts.forEach((a, j) => {
        expect(Math.abs(a.logprob - ref[j]!), `position ${i} alt ${j}: value`).toBeLessThan(1e-4);
        expect(Math.abs(a.logprob - logprobOf(row, a.tokenId)), `position ${i} alt ${j}: id ${a.tokenId}`).toBeLessThan(1e-4);
        if (j > 0) expect(a.logprob).toBeLessThanOrEqual(alts[j - 1]!.logprob);
      });
      const mine = alts.find((a) => a.tokenId === tok);
      if (mine) {
        chosenSeen++;
        expect(mine.logprob, `position ${i}`).toBe(s.logprobs[i]);
      } else {
        // not in the top k: then it is no more likely than the k-th
        expect(s.logprobs[i]!).toBeLessThanOrEqual(alts[k - 1]!.logprob + 1e-6);
      }
    });
    return chosenSeen;
  }

  it('greedy: the top-k alternatives equal a brute-force sort of the full forward at every step; the first is the chosen token', () => {
    const p = prompt(6, 31);
    const [out] = run(model, [{ promptIds: p, sampling: { temperature: 0 }, maxTokens: 10, ignoreEos: true, topLogprobs: 5 }]);
    const s = out!.samples[0]!;
    expect(checkAgainstFullForward(p, s, 5)).toBe(10);
    s.topLogprobs!.forEach((alts, i) => expect(alts[0]!.tokenId).toBe(s.tokenIds[i]));
    // the same tokens as without alternatives (the device-argmax fast path)
    const [plain] = run(model, [{ promptIds: p, sampling: { temperature: 0 }, maxTokens: 10, ignoreEos: true }]);
    expect(s.tokenIds).toEqual(plain!.samples[0]!.tokenIds);
    expect(plain!.samples[0]!.topLogprobs).toBeUndefined();
  });

  it('sampled (n = 2, shared prefill, batched with a request that asks for none): alternatives match the full forward; tokens do not change', () => {
    const p = prompt(5, 32);
    const asked: GenerationRequest = { promptIds: p, n: 2, sampling: { temperature: 0.7 }, maxTokens: 16, seed: 7, ignoreEos: true, topLogprobs: 10 };
    const other: GenerationRequest = { promptIds: prompt(4, 33), sampling: hot, maxTokens: 12, seed: 8, ignoreEos: true };
    const events: { sample: number; top: unknown }[] = [];
    const [withTop, otherOut] = run(model, [{ ...asked, onEvent: (e) => e.type === 'token' && events.push({ sample: e.sample, top: e.topLogprobs }) }, other]);
    const { topLogprobs: _, ...plainReq } = asked;
    const [plain] = run(model, [plainReq]);
    const [otherAlone] = run(model, [other]);
    let chosenSeen = 0, total = 0;
    withTop!.samples.forEach((s, i) => {
      expect(s.tokenIds, `sample ${i}`).toEqual(plain!.samples[i]!.tokenIds);
      expect(Math.max(...s.logprobs.map((x, j) => Math.abs(x - plain!.samples[i]!.logprobs[j]!)))).toBeLessThan(1e-5);
      chosenSeen += checkAgainstFullForward(p, s, 10);
      total += s.tokenIds.length;
      // the events carried the same alternatives
      expect(events.filter((e) => e.sample === i).map((e) => e.top)).toEqual(s.topLogprobs);
    });
    // the random model is nearly flat: the chosen token is in the top 10 at some positions, not at others
    expect(chosenSeen).toBeGreaterThan(0);
    expect(chosenSeen).toBeLessThan(total);
    // both samples fork one prefill row: their first alternatives are the same
    expect(withTop!.samples[0]!.topLogprobs![0]).toEqual(withTop!.samples[1]!.topLogprobs![0]);
    expect(otherOut!.samples[0]!.tokenIds).toEqual(otherAlone!.samples[0]!.tokenIds);
    expect(otherOut!.samples[0]!.topLogprobs).toBeUndefined();
  });

  it('topLogprobs 0 gives no alternatives; out-of-range values get a clear error', () => {
    const [out] = run(model, [{ promptIds: prompt(3, 34), maxTokens: 3, ignoreEos: true, seed: 1, topLogprobs: 0 }]);
    expect(out!.samples[0]!.topLogprobs).toBeUndefined();
    const engine = new Engine(model, { blockSize: 4 });
    for (const k of [21, -1, 1.5]) {
      expect(() => engine.addRequest({ promptIds: [1], topLogprobs: k })).toThrow(UserError);
      expect(() => engine.addRequest({ promptIds: [1], topLogprobs: k })).toThrow(new RegExp(`top_logprobs: must be an integer in \\[0, 20\\], got ${k}`));
    }
  });
});

describe('engine sampler', () => {
  it('the default samples on the backend when it has sampleRows (DeviceSampler), with the host sampler\'s tokens and logprobs', () => {
    const model = tinyModel('m1');
    const reqs: GenerationRequest[] = [
      { promptIds: prompt(5, 40), n: 2, sampling: hot, maxTokens: 10, seed: 3, ignoreEos: true },
      { promptIds: prompt(4, 41), sampling: { temperature: 0.9, topK: 8, minP: 0.02 }, maxTokens: 10, seed: 4, ignoreEos: true },
      { promptIds: prompt(3, 42), sampling: { temperature: 0 }, maxTokens: 10, ignoreEos: true },
    ];
    let calls = 0;
    const sampleRows = be.sampleRows.bind(be);
    be.sampleRows = (t, a) => (calls++, sampleRows(t, a));
    try {
      const dev = run(model, reqs);
      expect(calls).toBeGreaterThan(5);
      calls = 0;
      const host = run(model, reqs, { sampler: new HostSampler(be, model.vocabSize) });
      expect(calls).toBe(0);
      dev.forEach((o, r) => o.samples.forEach((s, i) => {
        expect(s.tokenIds, `request ${r} sample ${i}`).toEqual(host[r]!.samples[i]!.tokenIds);
        expect(s.logprobs).toEqual(host[r]!.samples[i]!.logprobs);
      }));
    } finally {
      delete (be as { sampleRows?: unknown }).sampleRows; // back to the prototype's
    }
  });
});
