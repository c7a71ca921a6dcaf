// The OpenAI-compatible server on loopback, driven by the official `openai` client: outputs match the
// engine run alone (same seed), streams match non-streamed answers, disconnects free their slots,
// bad requests get OpenAI-style 400s, a full queue gets 429, /metrics parses, drain finishes in-flight work.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GenerationRequest, SampleOutput } from '../src/infer/engine.js';
import { loadGenerationDefaults } from '../src/infer/generation-config.js';
import type { SamplingParams } from '../src/infer/sampling.js';
import { initWeights, loadModelConfig, validateConfigs, writeConfigs } from '../src/model/checkpoint.js';
import { findPreset } from '../src/model/presets.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { writeTokenizerFor } from '../src/model/tokenizer-files.js';
import { createServerFromDir } from '../src/serve/load.js';
import type { OpenAIServer } from '../src/serve/server.js';

const MODEL = 'tiny-m1';
let dir = '';
let server: OpenAIServer;
let ref: OpenAIServer; // never listens: its engine is "the engine alone"
let url = '';
let client: OpenAI;
let tok: Tokenizer;
/** generation_config.json's sampling (temperature 0.6, top_p 0.9): the server applies it under each request's fields */
let folderDefaults: Partial<SamplingParams>;

beforeAll(async () => {
  const preset = findPreset('m1', 'tiny');
  const config = { ...preset.config, num_hidden_layers: 2, max_position_embeddings: 512 };
  const mambaConfig = { ...preset.mambaConfig!, n_layer: 2, attn_layers: [1] };
  dir = mkdtempSync(join(tmpdir(), 'm1ts-serve-'));
  writeConfigs(dir, { config, mambaConfig }, 'f32');
  writeTokenizerFor(dir, 'tiny');
  initWeights(dir, validateConfigs(config, mambaConfig), 5, 'f32');
  tok = Tokenizer.fromDir(dir);
  folderDefaults = loadGenerationDefaults(dir, loadModelConfig(dir)).sampling;
  expect(folderDefaults).toEqual({ temperature: 0.6, topP: 0.9 });
  server = await createServerFromDir({ modelDir: dir, modelName: MODEL, maxBatch: 64 });
  ref = await createServerFromDir({ modelDir: dir, modelName: MODEL, maxBatch: 64 });
  url = await server.listen('127.0.0.1', 0);
  client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
});

afterAll(async () => {
  await server?.drain(1000);
});

/** the engine alone, one request at a time, with the folder's sampling defaults as the server has them */
function alone(r: GenerationRequest): SampleOutput[] {
  return ref.engine.generate([{ ...r, sampling: { ...folderDefaults, ...r.sampling } }])[0]!.samples;
}

/** vLLM-style extra fields the typed client does not know; it sends them as they are */
type Extra = { ignore_eos?: boolean; return_token_ids?: boolean; top_k?: number };
function withExtra<T>(body: T, extra: Extra): T {
  return { ...body, ...extra };
}

const helloIds = (): number[] => [tok.bosTokenId!, ...tok.encode('Hello')];

describe('m1 serve: completions and chat', () => {
  it('/v1/models, /health; non-streamed completion equals the engine alone (text, tokens, logprobs, usage)', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual([MODEL]);
    expect((await fetch(`${url}/health`)).status).toBe(200);

    const r = await client.completions.create(withExtra({ model: MODEL, prompt: 'Hello', temperature: 0, max_tokens: 8, logprobs: 1 }, { ignore_eos: true, return_token_ids: true }));
    const want = alone({ promptIds: helloIds(), sampling: { temperature: 0 }, maxTokens: 8, ignoreEos: true })[0]!;
    const c = r.choices[0]! as typeof r.choices[0] & { token_ids: number[] };
    expect(r.object).toBe('text_completion');
    expect(c.text).toBe(want.text);
    expect(c.token_ids).toEqual(want.tokenIds);
    expect(c.finish_reason).toBe('length');
    expect(c.logprobs!.token_logprobs!.map((x) => x.toFixed(5))).toEqual(want.logprobs.map((x) => x.toFixed(5)));
    expect(c.logprobs!.tokens).toHaveLength(8);
    expect(c.logprobs!.top_logprobs![3]![c.logprobs!.tokens![3]!]).toBeCloseTo(want.logprobs[3]!, 5);
    expect(r.usage).toEqual({ prompt_tokens: helloIds().length, completion_tokens: 8, total_tokens: helloIds().length + 8 });

    // token-id prompts, also as a list of one
    const byIds = await client.completions.create(withExtra({ model: MODEL, prompt: [helloIds()], temperature: 0, max_tokens: 8 }, { ignore_eos: true }));
    expect(byIds.choices[0]!.text).toBe(want.text);
  });

  it('streamed completion: chunks concatenate to the same text; finish_reason and usage at the end', async () => {
    const want = alone({ promptIds: helloIds(), n: 2, sampling: { temperature: 1, topP: 0.9 }, maxTokens: 12, seed: 11, ignoreEos: true });
    const stream = await client.completions.create(withExtra({
      model: MODEL, prompt: 'Hello', n: 2, temperature: 1, top_p: 0.9, seed: 11, max_tokens: 12, stream: true, stream_options: { include_usage: true }, logprobs: 0,
    }, { ignore_eos: true }));
    const text = ['', ''];
    const finish: (string | null)[] = [null, null];
    let lpCount = 0;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const ch of stream) {
      if (ch.usage) usage = ch.usage;
      for (const c of ch.choices) {
        text[c.index] += c.text;
        if (c.finish_reason) finish[c.index] = c.finish_reason;
        lpCount += c.logprobs?.token_logprobs?.length ?? 0;
      }
    }
    expect(text).toEqual(want.map((s) => s.text));
    expect(finish).toEqual(['length', 'length']);
    expect(lpCount).toBe(24);
    expect(usage).toEqual({ prompt_tokens: helloIds().length, completion_tokens: 24, total_tokens: helloIds().length + 24 });
  });

  it('chat, streamed and not, equals the engine alone on the chat template', async () => {
    const messages = [{ role: 'system' as const, content: 'Be brief.' }, { role: 'user' as const, content: 'Hi' }];
    const promptIds = tok.encodeChat(messages, { addGenerationPrompt: true });
    const want = alone({ promptIds, n: 3, sampling: { temperature: 0.8 }, maxTokens: 10, seed: 3, ignoreEos: true });
    const body = withExtra({ model: MODEL, messages, n: 3, temperature: 0.8, seed: 3, max_tokens: 10, logprobs: true, top_logprobs: 1 }, { ignore_eos: true });
    const r = await client.chat.completions.create(body);
    expect(r.object).toBe('chat.completion');
    expect(r.choices.map((c) => c.message.content)).toEqual(want.map((s) => s.text));
    expect(r.choices.map((c) => c.message.role)).toEqual(['assistant', 'assistant', 'assistant']);
    expect(r.choices[1]!.logprobs!.content!.map((x) => x.logprob.toFixed(5))).toEqual(want[1]!.logprobs.map((x) => x.toFixed(5)));
    expect(r.choices[1]!.logprobs!.content![0]!.top_logprobs).toHaveLength(1);
    expect(r.usage!.prompt_tokens).toBe(promptIds.length);

    const stream = await client.chat.completions.create({ ...body, stream: true });
    const text = ['', '', ''];
    const roles: string[] = [];
    const finish: string[] = [];
    for await (const ch of stream) {
      expect(ch.object).toBe('chat.completion.chunk');
      for (const c of ch.choices) {
        if (c.delta.role) roles.push(c.delta.role);
        text[c.index] += c.delta.content ?? '';
        if (c.finish_reason) finish.push(c.finish_reason);
      }
    }
    expect(text).toEqual(want.map((s) => s.text));
    expect(roles).toEqual(['assistant', 'assistant', 'assistant']);
    expect(finish).toEqual(['length', 'length', 'length']);
  });

  it('stop strings cut the text; a stop token ends with finish_reason stop', async () => {
    // the random model's text is mostly bytes outside the tokenizer: take the first seed with some text
    const seed = Array.from({ length: 50 }, (_, i) => i)
      .find((i) => alone({ promptIds: helloIds(), maxTokens: 24, seed: i, ignoreEos: true })[0]!.text!.length > 6)!;
    const base = alone({ promptIds: helloIds(), maxTokens: 24, seed, ignoreEos: true })[0]!;
    const stopAt = base.text!.slice(4, 6);
    const r = await client.completions.create(withExtra({ model: MODEL, prompt: 'Hello', seed, max_tokens: 24, stop: [stopAt, 'zzzz'] }, { ignore_eos: true }));
    expect(r.choices[0]!.finish_reason).toBe('stop');
    expect(r.choices[0]!.text).toBe(base.text!.slice(0, base.text!.indexOf(stopAt)));
  });
});

/** the server's spelling of a token: its text, or token_id:N for ids the tokenizer does not know */
const tokenText = (id: number): string => (id < tok.vocabSize && tok.idToToken(id) !== null ? tok.decode([id]) : `token_id:${id}`);

/** the legacy completions dict of one position, as the server builds it (a repeated text is keyed token_id:N) */
function completionTop(alts: { tokenId: number; logprob: number }[]): Record<string, string> {
  const d: Record<string, string> = {};
  for (const a of alts) d[Object.hasOwn(d, tokenText(a.tokenId)) ? `token_id:${a.tokenId}` : tokenText(a.tokenId)] = a.logprob.toFixed(5);
  return d;
}
const fixed = (d: Record<string, number>): Record<string, string> => Object.fromEntries(Object.entries(d).map(([k, v]) => [k, v.toFixed(5)]));

describe('m1 serve: top logprobs', () => {
  it('completions with logprobs 3: three alternatives per token, sorted, as the engine alone gives them; streamed too', async () => {
    const want = alone({ promptIds: helloIds(), sampling: { temperature: 0.8 }, maxTokens: 10, seed: 21, ignoreEos: true, topLogprobs: 3 })[0]!;
    const body = withExtra({ model: MODEL, prompt: 'Hello', temperature: 0.8, seed: 21, max_tokens: 10, logprobs: 3 }, { ignore_eos: true, return_token_ids: true });
    const r = await client.completions.create(body);
    const c = r.choices[0]! as typeof r.choices[0] & { token_ids: number[] };
    expect(c.token_ids).toEqual(want.tokenIds);
    const top = c.logprobs!.top_logprobs! as Record<string, number>[];
    expect(top).toHaveLength(10);
    top.forEach((d, i) => {
      const values = Object.values(d);
      expect(values, `position ${i}`).toHaveLength(3);
      // the engine's alternatives are best first; the dict holds exactly those numbers
      expect([...values].sort((a, b) => b - a).map((x) => x.toFixed(5))).toEqual(want.topLogprobs![i]!.map((a) => a.logprob.toFixed(5)));
      expect(fixed(d)).toEqual(completionTop(want.topLogprobs![i]!));
      const m = Math.max(...values);
      // the chosen token's logprob is at most the best alternative's
      expect(c.logprobs!.token_logprobs![i]!).toBeLessThanOrEqual(m + 1e-6);
    });

    const stream = await client.completions.create({ ...body, stream: true });
    const streamed: Record<string, number>[] = [];
    for await (const ch of stream) for (const x of ch.choices) streamed.push(...((x.logprobs?.top_logprobs ?? []) as Record<string, number>[]));
    expect(streamed.map(fixed)).toEqual(top.map(fixed));
  });

  it('chat with top_logprobs 2: two {token, logprob, bytes} per token, sorted, as the engine alone; streamed too', async () => {
    const messages = [{ role: 'user' as const, content: 'Hi' }];
    const promptIds = tok.encodeChat(messages, { addGenerationPrompt: true });
    const want = alone({ promptIds, n: 2, sampling: { temperature: 1 }, maxTokens: 8, seed: 5, ignoreEos: true, topLogprobs: 2 });
    const body = withExtra({ model: MODEL, messages, n: 2, temperature: 1, seed: 5, max_tokens: 8, logprobs: true, top_logprobs: 2 }, { ignore_eos: true });
    type Entry = { token: string; logprob: string; bytes: number[] | null };
    const entry = (x: { token: string; logprob: number; bytes: number[] | null }): Entry => ({ token: x.token, logprob: x.logprob.toFixed(5), bytes: x.bytes });
    const expected = want.map((s) => s.tokenIds.map((t, i) => ({
      ...entry({ token: tokenText(t), logprob: s.logprobs[i]!, bytes: [...Buffer.from(tokenText(t), 'utf8')] }),
      top_logprobs: s.topLogprobs![i]!.map((a) => entry({ token: tokenText(a.tokenId), logprob: a.logprob, bytes: [...Buffer.from(tokenText(a.tokenId), 'utf8')] })),
    })));
    const r = await client.chat.completions.create(body);
    const got = r.choices.map((c) => c.logprobs!.content!.map((x) => ({ ...entry(x), top_logprobs: x.top_logprobs.map(entry) })));
    expect(got).toEqual(expected);
    for (const c of r.choices) {
      for (const x of c.logprobs!.content!) {
        expect(x.top_logprobs).toHaveLength(2);
        expect(x.top_logprobs[0]!.logprob).toBeGreaterThanOrEqual(x.top_logprobs[1]!.logprob);
      }
    }

    const stream = await client.chat.completions.create({ ...body, stream: true });
    const streamed: (Entry & { top_logprobs: Entry[] })[][] = [[], []];
    for await (const ch of stream) {
      for (const c of ch.choices) for (const x of c.logprobs?.content ?? []) streamed[c.index]!.push({ ...entry(x), top_logprobs: x.top_logprobs.map(entry) });
    }
    expect(streamed).toEqual(expected);
  });

  it('bad top-logprobs requests get 400: logprobs 21, top_logprobs without logprobs, top_logprobs 21', async () => {
    const msg = [{ role: 'user' as const, content: 'x' }];
    const cases: [() => Promise<unknown>, string, RegExp][] = [
      [() => client.completions.create({ model: MODEL, prompt: 'x', logprobs: 21 }), 'logprobs', /logprobs: must be an integer in \[0, 20\], got 21/],
      [() => client.chat.completions.create({ model: MODEL, messages: msg, top_logprobs: 2 }), 'top_logprobs', /top_logprobs: needs "logprobs": true/],
      [() => client.chat.completions.create({ model: MODEL, messages: msg, logprobs: false, top_logprobs: 0 }), 'top_logprobs', /needs "logprobs": true/],
      [() => client.chat.completions.create({ model: MODEL, messages: msg, logprobs: true, top_logprobs: 21 }), 'top_logprobs', /top_logprobs: must be an integer in \[0, 20\], got 21/],
    ];
    for (const [call, param, re] of cases) {
      const err = await call().then(() => null, (e: unknown) => e);
      expect(err, param).toBeInstanceOf(OpenAI.BadRequestError);
      const e = err as InstanceType<typeof OpenAI.BadRequestError>;
      expect(e.status).toBe(400);
      expect(e.message, param).toMatch(re);
      expect(e.param).toBe(param);
    }
    expect(server.engine.hasWork()).toBe(false);
  });
});

describe('m1 serve: concurrency, cancellation, errors', () => {
  it('64 concurrent streams each give the text of the engine alone (seeded)', async () => {
    const reqs = Array.from({ length: 64 }, (_, i) => ({
      promptIds: [tok.bosTokenId!, ...tok.encode(`q${i} ${'x'.repeat(i % 7)}`)],
      seed: 1000 + i, temperature: 0.7 + (i % 3) * 0.2, maxTokens: 24 + (i % 5),
    }));
    const want = reqs.map((q) => alone({ promptIds: q.promptIds, sampling: { temperature: q.temperature }, maxTokens: q.maxTokens, seed: q.seed, ignoreEos: true })[0]!);
    // the largest decode batch while they run (the engine's own step stats)
    let peak = 0;
    const step = server.engine.step.bind(server.engine);
    server.engine.step = () => {
      const st = step();
      peak = Math.max(peak, st.decoded);
      return st;
    };
    const got = await Promise.all(reqs.map(async (q) => {
      const stream = await client.completions.create(withExtra({ model: MODEL, prompt: q.promptIds, temperature: q.temperature, seed: q.seed, max_tokens: q.maxTokens, stream: true }, { ignore_eos: true }));
      let text = '', finish = '';
      for await (const ch of stream) {
        text += ch.choices[0]?.text ?? '';
        finish = ch.choices[0]?.finish_reason ?? finish;
      }
      return { text, finish };
    })).finally(() => (server.engine.step = step));
    expect(got.map((g) => g.text)).toEqual(want.map((w) => w.text));
    expect(got.every((g) => g.finish === 'length')).toBe(true);
    expect(peak).toBeGreaterThan(8); // they really ran batched
    expect(server.engine.numRunning).toBe(0);
  });

  it('aborting a stream mid-way cancels it and frees its slot and KV blocks', async () => {
    const abortsBefore = server.metrics.finished.get('abort');
    const ac = new AbortController();
    const stream = await client.completions.create(
      withExtra({ model: MODEL, prompt: 'Tell me a long story', temperature: 1, seed: 1, max_tokens: 480, stream: true }, { ignore_eos: true }),
      { signal: ac.signal },
    );
    let chunks = 0;
    // the client ends the iteration quietly once aborted
    for await (const _ of stream) if (++chunks === 3) ac.abort();
    expect(chunks).toBe(3);
    const until = Date.now() + 5000;
    while (server.engine.hasWork() && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    expect(server.engine.numRunning).toBe(0);
    expect(server.engine.numWaiting).toBe(0);
    const mem = server.engine.memory();
    expect(mem.slotsUsed).toBe(0);
    expect(mem.kvBlocksUsed).toBe(0);
    expect(server.metrics.finished.get('abort')).toBe(abortsBefore + 1);
  });

  it('bad requests get 400 with an OpenAI error body', async () => {
    const post = async (path: string, body: string) => {
      const r = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      return { status: r.status, body: (await r.json()) as { error: { message: string; type: string; param: string | null; code: string | null } } };
    };
    const bad = await post('/v1/completions', '{"prompt": "x", ');
    expect(bad.status).toBe(400);
    expect(bad.body.error.type).toBe('invalid_request_error');
    expect(bad.body.error.message).toMatch(/JSON/i);
    expect(Object.keys(bad.body.error).sort()).toEqual(['code', 'message', 'param', 'type']);

    const cases: [() => Promise<unknown>, string, RegExp][] = [
      [() => client.completions.create({ model: MODEL, prompt: 'x', temperature: -1 }), 'temperature', /temperature: must be a number ≥ 0, got -1/],
      [() => client.completions.create({ model: MODEL, prompt: 'x', top_p: 2 }), 'top_p', /top_p: must be a number in \(0, 1\], got 2/],
      [() => client.chat.completions.create({ model: MODEL } as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming), 'messages', /messages: is required/],
      [() => client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], n: 0 }), 'n', /n: must be an integer/],
      [() => client.completions.create({ model: MODEL, prompt: [1, 99999] }), 'null', /promptIds\[1\]: 99999 is not a token id/],
      [() => client.completions.create({ model: MODEL, prompt: 'x', stop: [''] }), 'stop', /stop: must be a non-empty string/],
    ];
    for (const [call, param, re] of cases) {
      const err = await call().then(() => null, (e: unknown) => e);
      expect(err, param).toBeInstanceOf(OpenAI.BadRequestError);
      const e = err as InstanceType<typeof OpenAI.BadRequestError>;
      expect(e.status).toBe(400);
      expect(e.message, param).toMatch(re);
      expect(String(e.param), param).toBe(param);
      expect(e.type).toBe('invalid_request_error');
    }
    const wrongModel = await client.completions.create({ model: 'other', prompt: 'x' }).then(() => null, (e: unknown) => e);
    expect(wrongModel).toBeInstanceOf(OpenAI.NotFoundError);
    expect(server.engine.hasWork()).toBe(false);
  });

  it('/metrics is Prometheus text: typed series, cumulative histograms, counts that add up', async () => {
    const r = await fetch(`${url}/metrics`);
    expect(r.headers.get('content-type')).toMatch(/^text\/plain; version=0.0.4/);
    const text = await r.text();
    const types = new Map<string, string>();
    const values = new Map<string, number>();
    for (const line of text.trimEnd().split('\n')) {
      const t = /^# TYPE (\w+) (counter|gauge|histogram)$/.exec(line);
      if (t) { types.set(t[1]!, t[2]!); continue; }
      if (line.startsWith('# HELP ')) continue;
      const m = /^(\w+)(\{(\w+)="([^"]*)"\})? (-?[\d.e+-]+|\+Inf|NaN)$/.exec(line);
      expect(m, line).not.toBeNull();
      const family = m![1]!.replace(/_(bucket|sum|count)$/, '');
      expect(types.has(m![1]!) || types.get(family) === 'histogram', line).toBe(true);
      values.set(m![1]! + (m![2] ?? ''), Number(m![5]));
    }
    for (const name of ['m1_queue_depth', 'm1_running_sequences', 'm1_tokens_per_second']) expect(types.get(name)).toBe('gauge');
    expect(types.get('m1_generated_tokens_total')).toBe('counter');
    expect(values.get('m1_running_sequences')).toBe(0);
    expect(values.get('m1_queue_depth')).toBe(0);
    expect(values.get('m1_tokens_per_second')).toBeGreaterThan(0);
    expect(values.get('m1_generated_tokens_total')).toBe(server.metrics.generatedTokens);
    // every finished sequence generated ≥ 1 token; the 64-stream test alone made 64·(24..28) tokens
    expect(values.get('m1_generated_tokens_total')).toBeGreaterThan(64 * 24);
    for (const h of ['m1_request_latency_seconds', 'm1_time_to_first_token_seconds']) {
      expect(types.get(h)).toBe('histogram');
      const buckets = [...values].filter(([k]) => k.startsWith(`${h}_bucket`)).map(([, v]) => v);
      for (let i = 1; i < buckets.length; i++) expect(buckets[i]).toBeGreaterThanOrEqual(buckets[i - 1]!);
      expect(buckets.at(-1)).toBe(values.get(`${h}_count`));
      expect(values.get(`${h}_count`)).toBeGreaterThanOrEqual(64 + 5); // the earlier non-aborted requests
    }
    expect(values.get('m1_http_requests_total{status="400"}')).toBeGreaterThanOrEqual(7);
    // each answered once, streams included: the timed requests, /v1/models and /health; the aborted stream as 499
    expect(values.get('m1_http_requests_total{status="200"}')).toBe(values.get('m1_request_latency_seconds_count')! + 2);
    expect(values.get('m1_http_requests_total{status="499"}')).toBe(1);
    expect(values.get('m1_sequences_finished_total{reason="abort"}')).toBe(1);
  });

  it('a full queue answers 429 (max-queue 1, batch 1)', async () => {
    const small = await createServerFromDir({ modelDir: dir, modelName: MODEL, maxBatch: 1, maxQueue: 1 });
    const u = await small.listen('127.0.0.1', 0);
    const c = new OpenAI({ baseURL: `${u}/v1`, apiKey: 'none', maxRetries: 0 });
    try {
      const results = await Promise.all(Array.from({ length: 5 }, (_, i) =>
        c.completions.create(withExtra({ model: MODEL, prompt: [1, 2, 3 + i], max_tokens: 40, seed: i }, { ignore_eos: true }))
          .then((r) => r.usage!.completion_tokens, (e: unknown) => e)));
      const limited = results.filter((r) => r instanceof OpenAI.RateLimitError) as InstanceType<typeof OpenAI.RateLimitError>[];
      const ok = results.filter((r) => typeof r === 'number');
      expect(limited.length).toBeGreaterThanOrEqual(1);
      expect(ok.length).toBeGreaterThanOrEqual(1);
      expect(ok.every((n) => n === 40)).toBe(true);
      expect(limited[0]!.status).toBe(429);
      expect(limited[0]!.type).toBe('rate_limit_error');
      expect(limited[0]!.headers.get('retry-after')).toBe('1');
    } finally {
      await small.drain(1000);
    }
  });

  it('drain: stops accepting, finishes the stream in flight, then closes', async () => {
    const s = await createServerFromDir({ modelDir: dir, modelName: MODEL, maxBatch: 4 });
    const u = await s.listen('127.0.0.1', 0);
    const c = new OpenAI({ baseURL: `${u}/v1`, apiKey: 'none', maxRetries: 0 });
    const stream = await c.completions.create(withExtra({ model: MODEL, prompt: 'Hello', max_tokens: 200, seed: 2, stream: true }, { ignore_eos: true }));
    let tokens = 0, finish: string | null = null, drained: Promise<void> | null = null, drainedBeforeEnd = false;
    for await (const ch of stream) {
      tokens += ch.choices[0]?.text.length ? 1 : 0;
      finish = ch.choices[0]?.finish_reason ?? finish;
      if (!drained) {
        drained = s.drain();
        drained.then(() => (drainedBeforeEnd = finish === null));
        // new work is refused: the listener is closed (or a keep-alive connection gets 503)
        const refused = await fetch(`${u}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"prompt": "x"}' })
          .then((r) => r.status, () => 'refused');
        expect([503, 'refused']).toContain(refused);
      }
    }
    expect(finish).toBe('length');
    expect(tokens).toBeGreaterThan(0);
    await drained;
    expect(drainedBeforeEnd).toBe(false);
    expect(s.app.server.listening).toBe(false);
    expect(s.engine.hasWork()).toBe(false);
  });

  it('an engine step that throws fails the requests in flight with 500 and marks /health 503', async () => {
    const s = await createServerFromDir({ modelDir: dir, modelName: MODEL, maxBatch: 4 });
    const u = await s.listen('127.0.0.1', 0);
    const c = new OpenAI({ baseURL: `${u}/v1`, apiKey: 'none', maxRetries: 0 });
    s.engine.step = () => {
      throw new Error('device lost');
    };
    try {
      const err = await c.completions.create({ model: MODEL, prompt: 'x', max_tokens: 4 }).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.InternalServerError);
      expect((err as Error).message).toMatch(/the engine failed: device lost/);
      expect((await fetch(`${u}/health`)).status).toBe(503);
      const again = await c.completions.create({ model: MODEL, prompt: 'x', max_tokens: 4 }).then(() => null, (e: unknown) => e);
      expect((again as InstanceType<typeof OpenAI.APIError>).status).toBe(503);
    } finally {
      await s.drain(1000);
    }
  });
});
