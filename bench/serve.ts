// npm run bench:serve — load test of the OpenAI-compatible server: `--concurrency` clients send
// `--requests` streamed completions in total (random byte-token prompts, fixed generation length, eos
// ignored) and the script reports requests/s, generated tokens/s, and p50/p99 latency and time to
// first token. It targets a running server (--url, loopback only) or starts one in-process on
// 127.0.0.1 from --model DIR, or from a freshly initialised preset (--preset, random weights).
// Writes bench/results/serve-<date>.json.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { initWeights, validateConfigs, writeConfigs } from '../src/model/checkpoint.js';
import { findPreset } from '../src/model/presets.js';
import { writeTokenizerFor } from '../src/model/tokenizer-files.js';
import { createServerFromDir } from '../src/serve/load.js';
import type { OpenAIServer } from '../src/serve/server.js';
import { Rng } from '../src/util/rng.js';
import { table, writeResult } from './common.js';

const posInt = (name: string) => (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got "${v}"`);
  return n;
};

const program = new Command()
  .description('load-test the OpenAI-compatible server (m1 serve)')
  .option('--url <url>', 'a running server on loopback, e.g. http://127.0.0.1:8000 (default: start one in-process)')
  .option('--model <dir>', 'model folder for the in-process server')
  .option('--preset <name>', 'm1 preset to initialise with random weights when neither --url nor --model is given', 'tiny')
  .option('--backend <name>', 'backend of the in-process server', 'cpu')
  .option('--max-batch <n>', 'batch of the in-process server', posInt('--max-batch'), 64)
  .option('--concurrency <n>', 'requests in flight at once', posInt('--concurrency'), 8)
  .option('--requests <n>', 'requests in total', posInt('--requests'), 64)
  .option('--prompt-len <n>', 'prompt tokens per request', posInt('--prompt-len'), 32)
  .option('--max-tokens <n>', 'generated tokens per request (eos ignored)', posInt('--max-tokens'), 64)
  .option('--timeout <s>', 'per-request timeout in seconds', posInt('--timeout'), 300)
  .parse(process.argv);

interface Flags {
  url?: string; model?: string; preset: string; backend: string; maxBatch: number; concurrency: number; requests: number;
  promptLen: number; maxTokens: number; timeout: number;
}
const o = program.opts<Flags>();

interface Sample { latencyS: number; ttftS: number | null; tokens: number; ok: boolean; error?: string }

/** the server must be on this machine: the bench never sends load elsewhere */
function checkLoopback(url: string): string {
  const u = new URL(url);
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname)) throw new Error(`--url must be a loopback address (127.0.0.1, localhost, [::1]), got ${u.hostname}`);
  return u.origin;
}

async function startServer(): Promise<{ server: OpenAIServer; url: string; cleanup: () => void }> {
  let dir = o.model;
  let cleanup = () => {};
  if (!dir) {
    const p = findPreset('m1', o.preset);
    dir = mkdtempSync(join(tmpdir(), 'm1ts-bench-serve-'));
    const tmp = dir;
    cleanup = () => rmSync(tmp, { recursive: true, force: true });
    writeConfigs(dir, { config: p.config, mambaConfig: p.mambaConfig }, 'f32');
    writeTokenizerFor(dir, 'tiny');
    initWeights(dir, validateConfigs(p.config, p.mambaConfig), 0, 'f32');
  }
  const server = await createServerFromDir({ modelDir: dir, backend: o.backend, maxBatch: o.maxBatch, maxQueue: o.requests + 1 });
  return { server, url: await server.listen('127.0.0.1', 0), cleanup };
}

/** one streamed completion; TTFT is the arrival of the first chunk that carries a token */
async function one(url: string, i: number): Promise<Sample> {
  const rng = new Rng(1000 + i);
  const prompt = Array.from({ length: o.promptLen }, () => 1 + rng.int(255));
  const t0 = performance.now();
  let ttft: number | null = null;
  let tokens = 0;
  try {
    const res = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt, max_tokens: o.maxTokens, ignore_eos: true, seed: i, stream: true, stream_options: { include_usage: true }, logprobs: 0 }),
      signal: AbortSignal.timeout(o.timeout * 1000),
    });
    if (!res.ok || !res.body) return { latencyS: (performance.now() - t0) / 1000, ttftS: null, tokens: 0, ok: false, error: `HTTP ${res.status}: ${await res.text()}` };
    const decoder = new TextDecoder();
    let buf = '';
    let done = false;
    for await (const bytes of res.body) {
      buf += decoder.decode(bytes as Uint8Array, { stream: true });
      let cut: number;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        if (!event.startsWith('data: ')) continue;
        const data = event.slice(6);
        if (data === '[DONE]') { done = true; continue; }
        const j = JSON.parse(data) as { choices: { logprobs: { tokens: string[] } | null }[]; usage?: { completion_tokens: number } };
        // logprobs: 0 makes every token its own chunk, so the first one marks the first token
        if (ttft === null && j.choices.some((c) => (c.logprobs?.tokens.length ?? 0) > 0)) ttft = (performance.now() - t0) / 1000;
        if (j.usage) tokens = j.usage.completion_tokens;
      }
    }
    return { latencyS: (performance.now() - t0) / 1000, ttftS: ttft, tokens, ok: done, error: done ? undefined : 'stream ended without [DONE]' };
  } catch (e) {
    return { latencyS: (performance.now() - t0) / 1000, ttftS: ttft, tokens, ok: false, error: (e as Error).message };
  }
}

/** nearest-rank percentile */
function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

async function main(): Promise<void> {
  const started = o.url ? null : await startServer();
  const url = o.url ? checkLoopback(o.url) : started!.url;
  try {
    await one(url, -1); // warm-up: first-call costs (allocations, JIT) stay out of the numbers
    const samples: Sample[] = [];
    let next = 0;
    const t0 = performance.now();
    const worker = async () => {
      while (next < o.requests) samples.push(await one(url, next++));
    };
    await Promise.all(Array.from({ length: Math.min(o.concurrency, o.requests) }, worker));
    const wallS = (performance.now() - t0) / 1000;
    const ok = samples.filter((s) => s.ok);
    const tokens = ok.reduce((a, s) => a + s.tokens, 0);
    const lat = ok.map((s) => s.latencyS), ttft = ok.flatMap((s) => (s.ttftS === null ? [] : [s.ttftS]));
    const summary = {
      requests: o.requests, ok: ok.length, failed: samples.length - ok.length, concurrency: o.concurrency, promptLen: o.promptLen, maxTokens: o.maxTokens,
      wallS, requestsPerS: ok.length / wallS, tokensPerS: tokens / wallS,
      latencyP50S: pct(lat, 50), latencyP99S: pct(lat, 99), ttftP50S: pct(ttft, 50), ttftP99S: pct(ttft, 99),
    };
    console.log(table(
      ['concurrency', 'requests', 'ok', 'req/s', 'tok/s', 'p50 s', 'p99 s', 'ttft p50 s', 'ttft p99 s'],
      [[o.concurrency, o.requests, ok.length, summary.requestsPerS, summary.tokensPerS, summary.latencyP50S, summary.latencyP99S, summary.ttftP50S, summary.ttftP99S]],
    ));
    const firstError = samples.find((s) => !s.ok)?.error;
    if (firstError) console.log(`first error: ${firstError}`);
    const path = writeResult('serve', { target: o.url ? url : { model: o.model ?? `m1/${o.preset} (random weights)`, backend: o.backend, maxBatch: o.maxBatch }, ...summary });
    console.log(`wrote ${path}`);
  } finally {
    if (started) {
      await started.server.drain(10_000);
      started.cleanup();
    }
  }
}

main().catch((e: unknown) => {
  console.error((e as Error).stack ?? String(e));
  process.exitCode = 1;
});
