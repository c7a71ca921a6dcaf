// The OpenAI-compatible HTTP server: /v1/completions, /v1/chat/completions (plain JSON or server-sent
// events), /v1/models, /health, /metrics. Every request becomes one engine request (n samples share
// its prefill); one EngineLoop steps the shared engine, so requests arriving at any time join the
// running batch at the next step. A client that disconnects is cancelled at once, which frees its
// state slots and KV blocks for the requests behind it.
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import type { Engine, GenerationEvent, RequestHandle, RequestOutput, SampleOutput, TopLogprob } from '../infer/engine.js';
import type { SamplingParams } from '../infer/sampling.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { UserError } from '../util/errors.js';
import { ApiError, badField } from './errors.js';
import { EngineLoop } from './loop.js';
import { ServerMetrics } from './metrics.js';
import { parseChatRequest, parseCompletionRequest, type ParsedRequest, type PromptInput } from './protocol.js';

export interface ServerOptions {
  engine: Engine;
  /** null: token-id prompts only, and completions carry no text (use return_token_ids) */
  tokenizer: Tokenizer | null;
  /** the id /v1/models lists and requests must name (when they name one) */
  modelName: string;
  /** requests waiting for a batch slot beyond which new ones get 429; default 256 */
  maxQueue?: number;
  /** sampling defaults of the model folder (generation_config.json), under the request's own fields */
  samplingDefaults?: Partial<SamplingParams>;
  /** how long drain() lets in-flight requests run before cancelling them; default 10 minutes */
  drainTimeoutMs?: number;
  /** one line per notable event (engine failure, drain); default silent */
  log?: (line: string) => void;
}

/** one request in flight: drain() waits for `done`; `fail` ends it when the engine breaks */
interface InFlight {
  done: Promise<void>;
  fail: (e: ApiError) => void;
}

interface ChoiceLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[];
  text_offset: number[];
}

interface ChatTopLogprob {
  token: string;
  logprob: number;
  bytes: number[];
}

interface ChatLogprob extends ChatTopLogprob {
  top_logprobs: ChatTopLogprob[];
}

export class OpenAIServer {
  readonly app: FastifyInstance;
  readonly metrics = new ServerMetrics();
  readonly loop: EngineLoop;
  readonly engine: Engine;
  readonly modelName: string;
  readonly maxQueue: number;
  private readonly tokenizer: Tokenizer | null;
  private readonly defaults: Partial<SamplingParams>;
  private readonly drainTimeoutMs: number;
  private readonly log: (line: string) => void;
  private readonly inFlight = new Map<string, InFlight>();
  private draining: Promise<void> | null = null;
  /** tokens emitted since the last engine step ended (events arrive inside step()) */
  private stepTokens = 0;
  private readonly createdAt = Math.floor(Date.now() / 1000);

  constructor(opts: ServerOptions) {
    this.engine = opts.engine;
    this.tokenizer = opts.tokenizer;
    this.modelName = opts.modelName;
    this.maxQueue = opts.maxQueue ?? 256;
    if (!(Number.isInteger(this.maxQueue) && this.maxQueue >= 1)) throw new UserError(`maxQueue must be a positive integer, got ${String(opts.maxQueue)}`);
    this.defaults = opts.samplingDefaults ?? {};
    this.drainTimeoutMs = opts.drainTimeoutMs ?? 600_000;
    this.log = opts.log ?? (() => {});
    this.loop = new EngineLoop(this.engine, {
      afterStep: () => {
        this.metrics.addTokens(this.stepTokens);
        this.stepTokens = 0;
      },
      onError: (e) => this.failAll(e),
    });
    this.app = Fastify({ logger: false, bodyLimit: 16 * 1024 * 1024 });
    this.routes();
  }

  /** listen on host:port (0: an ephemeral port); returns the base URL */
  async listen(host: string, port: number): Promise<string> {
    await this.app.listen({ host, port });
    const addr = this.app.server.address();
    if (addr === null || typeof addr === 'string') throw new Error(`server: unexpected listen address ${String(addr)}`);
    const h = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    return `http://${h}:${addr.port}`;
  }

  get isDraining(): boolean {
    return this.draining !== null;
  }

  /**
   * Graceful shutdown: stop accepting (the listener closes; new requests get 503), let every request
   * in flight finish (cancelling what is left after the drain timeout), then close all connections.
   */
  drain(timeoutMs = this.drainTimeoutMs): Promise<void> {
    this.draining ??= (async () => {
      const pending = [...this.inFlight.values()].map((f) => f.done);
      this.log(`draining: ${pending.length} request(s) in flight`);
      const closing = this.app.close();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        Promise.allSettled(pending).then(() => false),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs))),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        this.log(`drain timeout after ${timeoutMs} ms: cancelling ${this.inFlight.size} request(s)`);
        for (const id of [...this.inFlight.keys()]) this.engine.cancel(id);
        await Promise.allSettled([...this.inFlight.values()].map((f) => f.done));
      }
      // keep-alive connections whose last response ended during the drain are idle now
      this.app.server.closeIdleConnections();
      await closing;
      await this.loop.idle();
    })();
    return this.draining;
  }

  // ---------------------------------------------------------------- routes

  private routes(): void {
    const app = this.app;
    app.setErrorHandler((err: FastifyError | ApiError, _req, reply) => {
      if (err instanceof ApiError) return reply.code(err.status).send(err.body());
      const status = err.statusCode ?? 500;
      if (status >= 500) {
        this.log(`internal error: ${err.stack ?? err.message}`);
        return reply.code(status).send(new ApiError(status, `internal error: ${err.message}`, 'internal_error', null, 'internal_error').body());
      }
      // fastify's own 4xx: malformed JSON, empty body, unsupported content type, body too large
      return reply.code(status).send(new ApiError(status, err.message, 'invalid_request_error', null, err.code ?? null).body());
    });
    app.setNotFoundHandler((req, reply) => {
      reply.code(404).send(new ApiError(404, `no route ${req.method} ${req.url}`, 'not_found_error', null, 'not_found').body());
    });
    app.addHook('onResponse', async (_req, reply) => {
      this.metrics.requests.inc(String(reply.statusCode));
    });

    app.get('/health', async (_req, reply) => {
      const ok = !this.isDraining && this.loop.failure === null;
      return reply.code(ok ? 200 : 503).send({ status: ok ? 'ok' : this.isDraining ? 'draining' : 'engine failed' });
    });
    app.get('/v1/models', async () => ({
      object: 'list',
      data: [{ id: this.modelName, object: 'model', created: this.createdAt, owned_by: 'm1ts', max_model_len: this.engine.maxContext }],
    }));
    app.get('/metrics', async (_req, reply) => {
      const mem = this.engine.memory();
      const text = this.metrics.render({
        waiting: this.engine.numWaiting, running: this.engine.numRunning, kvBlocksUsed: mem.kvBlocksUsed, slotsUsed: mem.slotsUsed,
      });
      return reply.type('text/plain; version=0.0.4; charset=utf-8').send(text);
    });
    app.post('/v1/completions', async (req, reply) => this.generate(reply, parseCompletionRequest(req.body)));
    app.post('/v1/chat/completions', async (req, reply) => this.generate(reply, parseChatRequest(req.body)));
  }

  // ---------------------------------------------------------------- generation

  private tokenize(p: PromptInput): number[] {
    const tok = this.tokenizer;
    if (p.kind === 'ids') return p.ids;
    if (!tok) {
      throw p.kind === 'chat'
        ? badField('messages', 'this model has no tokenizer.json, so chat is unavailable; use /v1/completions with token ids')
        : badField('prompt', 'this model has no tokenizer.json: give the prompt as token ids');
    }
    if (p.kind === 'chat') {
      if (!tok.hasChatTemplate()) throw badField('messages', 'this model\'s tokenizer has no chat template');
      try {
        return tok.encodeChat(p.messages, { addGenerationPrompt: true });
      } catch (e) {
        throw badField('messages', `the chat template failed: ${(e as Error).message}`);
      }
    }
    // as `m1 generate --prompt`: BOS first when the tokenizer has one
    const ids = tok.encode(p.text, { addSpecialTokens: true });
    return tok.bosTokenId !== null && ids[0] !== tok.bosTokenId ? [tok.bosTokenId, ...ids] : ids;
  }

  private async generate(reply: FastifyReply, p: ParsedRequest): Promise<unknown> {
    const t0 = performance.now();
    const engine = this.engine;
    if (this.isDraining) throw new ApiError(503, 'the server is shutting down', 'service_unavailable', null, 'draining');
    if (this.loop.failure !== null) throw new ApiError(503, 'the engine failed and is stopped; restart the server', 'service_unavailable', null, 'engine_failed');
    if (p.model !== null && p.model !== this.modelName) {
      throw new ApiError(404, `the model "${p.model}" does not exist (this server serves "${this.modelName}")`, 'not_found_error', 'model', 'model_not_found');
    }
    if (p.n > engine.maxBatch) throw badField('n', `${p.n} samples exceed the server's batch of ${engine.maxBatch} sequences`);
    const promptIds = this.tokenize(p.prompt);
    if (engine.numWaiting >= this.maxQueue) {
      reply.header('retry-after', '1');
      throw new ApiError(429, `the server is at capacity (${engine.numWaiting} requests waiting); retry later`, 'rate_limit_error', null, 'queue_full');
    }

    const chat = p.endpoint === 'chat';
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-${randomUUID().replace(/-/g, '')}`;
    const created = Math.floor(Date.now() / 1000);
    const res = reply.raw;
    const wantLogprobs = p.logprobs !== null;
    const textOffset = new Array<number>(p.n).fill(0);
    let firstTokenAt: number | null = null;
    let closed = false; // the client went away, or we ended the response
    const sse = (obj: unknown) => {
      if (!closed) res.write(`data: ${JSON.stringify(obj)}\n\n`);
    };
    const chunk = (choice: Record<string, unknown>) => sse({ id, object: chat ? 'chat.completion.chunk' : 'text_completion', created, model: this.modelName, choices: [choice] });

    const onEvent = (e: GenerationEvent) => {
      if (e.type === 'token') {
        this.stepTokens++;
        firstTokenAt ??= performance.now();
        if (!p.stream || (e.text === '' && !wantLogprobs)) return;
        if (chat) {
          const lp = wantLogprobs ? { content: [this.chatLogprob(e.tokenId, e.logprob, e.topLogprobs ?? [])] } : null;
          chunk({ index: e.sample, delta: { content: e.text }, logprobs: lp, finish_reason: null });
        } else {
          const lp = wantLogprobs ? this.completionLogprobs([e.tokenId], [e.logprob], [e.topLogprobs ?? []], textOffset[e.sample]!) : null;
          textOffset[e.sample]! += e.text.length;
          chunk({ index: e.sample, text: e.text, logprobs: lp, finish_reason: null, ...(p.returnTokenIds ? { token_ids: [e.tokenId] } : {}) });
        }
      } else if (e.type === 'finished') {
        this.metrics.finished.inc(e.output.finishReason);
        if (!p.stream || e.output.finishReason === 'abort') return;
        const stopReason = e.output.stopReason;
        if (chat) chunk({ index: e.sample, delta: {}, logprobs: null, finish_reason: e.output.finishReason, stop_reason: stopReason });
        else chunk({ index: e.sample, text: '', logprobs: null, finish_reason: e.output.finishReason, stop_reason: stopReason });
      }
    };

    let handle: RequestHandle;
    try {
      handle = engine.addRequest({
        promptIds, n: p.n, sampling: { ...this.defaults, ...p.sampling }, maxTokens: p.maxTokens ?? undefined, stopTokenIds: p.stopTokenIds,
        stopStrings: p.stop, ignoreEos: p.ignoreEos, seed: p.seed, topLogprobs: p.logprobs ?? 0, requestId: id, onEvent,
      });
    } catch (e) {
      if (e instanceof UserError) throw new ApiError(400, e.message, 'invalid_request_error', null, 'invalid_value');
      throw e;
    }
    this.metrics.promptTokens += promptIds.length;

    // set by failAll() when the engine breaks under this request
    const broken: { error: ApiError | null } = { error: null };
    let onBroken!: (v: null) => void;
    const brokenSignal = new Promise<null>((resolve) => (onBroken = resolve));
    let settle!: () => void;
    const done = new Promise<void>((resolve) => (settle = resolve));
    this.inFlight.set(id, { done, fail: (err) => { broken.error = err; onBroken(null); } });
    // the response's 'close' fires when the client disconnects (or after we end it): cancel, freeing slots
    res.on('close', () => {
      if (closed) return;
      closed = true;
      // fastify runs no onResponse for a response that never finished: count it as nginx's 499
      this.metrics.requests.inc('499');
      engine.cancel(id);
    });
    if (p.stream) {
      reply.hijack();
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
      // chat streams open each choice with the assistant role, as OpenAI's do
      if (chat) for (let i = 0; i < p.n; i++) chunk({ index: i, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null });
    }
    this.loop.wake();

    try {
      // a broken engine may never finish the request: do not wait for it then
      const out = await Promise.race([handle.result, brokenSignal]);
      const aborted = out === null || out.samples.some((s) => s.finishReason === 'abort');
      if (!aborted) {
        this.metrics.latency.observe((performance.now() - t0) / 1000);
        if (firstTokenAt !== null) this.metrics.ttft.observe((firstTokenAt - t0) / 1000);
      }
      if (p.stream) {
        // an SSE stream has sent its 200 already: a failure can only be reported in-band
        if (broken.error !== null || out === null) sse((broken.error ?? new ApiError(500, 'request failed', 'internal_error')).body());
        else if (p.includeUsage) sse({ id, object: chat ? 'chat.completion.chunk' : 'text_completion', created, model: this.modelName, choices: [], usage: usageOf(out) });
        if (!closed) {
          closed = true;
          res.end('data: [DONE]\n\n');
        }
        return undefined;
      }
      if (closed) {
        // nobody to answer; keep fastify from writing to a closed socket
        reply.hijack();
        return undefined;
      }
      closed = true; // fastify answers from here on
      if (broken.error !== null || out === null) throw broken.error ?? new ApiError(500, 'request failed', 'internal_error');
      const choices = out.samples.map((s) => (chat ? this.chatChoice(s, p) : this.completionChoice(s, p)));
      return { id, object: chat ? 'chat.completion' : 'text_completion', created, model: this.modelName, choices, usage: usageOf(out) };
    } finally {
      this.inFlight.delete(id);
      settle();
    }
  }

  /** a step threw: end every request in flight with a 500 (the engine's state is unknown) */
  private failAll(e: unknown): void {
    this.log(`engine step failed: ${(e as Error)?.stack ?? String(e)}`);
    const err = new ApiError(500, `the engine failed: ${(e as Error)?.message ?? String(e)}`, 'internal_error', null, 'engine_failed');
    for (const [id, f] of [...this.inFlight]) {
      f.fail(err);
      try {
        this.engine.cancel(id);
      } catch {
        // the engine is broken; the request settles through fail() above
      }
    }
  }

  // ---------------------------------------------------------------- response pieces

  /** a token's own text; ids the tokenizer does not know show as token_id:N (vLLM's spelling) */
  private tokenText(id: number): string {
    const tok = this.tokenizer;
    if (tok && id < tok.vocabSize && tok.idToToken(id) !== null) return tok.decode([id]);
    return `token_id:${id}`;
  }

  /**
   * Completions logprobs of consecutive tokens starting at text offset `offset`; top[i] are position
   * i's k most likely tokens, best first (the engine's alternatives; empty when k = 0). The legacy
   * format keys them by text: an id whose text is already a key (e.g. two lone UTF-8 bytes, both
   * "\ufffd") is keyed `token_id:N` instead, so the client still gets all k. A JSON object's key order
   * is not a ranking (integer-like keys come first), so clients sort by value.
   */
  private completionLogprobs(ids: readonly number[], logprobs: readonly number[], top: readonly (readonly TopLogprob[])[], offset: number): ChoiceLogprobs {
    const tokens = ids.map((t) => this.tokenText(t));
    const text_offset: number[] = [];
    for (const t of tokens) {
      text_offset.push(offset);
      offset += t.length;
    }
    const top_logprobs = top.map((alts) => {
      // no prototype: a token spelled "__proto__" is a key like any other
      const d = Object.create(null) as Record<string, number>;
      for (const a of alts) {
        const text = this.tokenText(a.tokenId);
        d[Object.hasOwn(d, text) ? `token_id:${a.tokenId}` : text] = a.logprob;
      }
      return d;
    });
    return { tokens, token_logprobs: [...logprobs], top_logprobs, text_offset };
  }

  private chatTop(id: number, logprob: number): ChatTopLogprob {
    const token = this.tokenText(id);
    return { token, logprob, bytes: [...Buffer.from(token, 'utf8')] };
  }

  /** chat's entry of one generated token: the token, then its position's alternatives, best first */
  private chatLogprob(id: number, logprob: number, top: readonly TopLogprob[]): ChatLogprob {
    return { ...this.chatTop(id, logprob), top_logprobs: top.map((a) => this.chatTop(a.tokenId, a.logprob)) };
  }

  private completionChoice(s: SampleOutput, p: ParsedRequest): Record<string, unknown> {
    return {
      index: s.index, text: s.text ?? '',
      logprobs: p.logprobs !== null ? this.completionLogprobs(s.tokenIds, s.logprobs, s.topLogprobs ?? s.tokenIds.map(() => []), 0) : null,
      finish_reason: s.finishReason, stop_reason: s.stopReason,
      ...(p.returnTokenIds ? { token_ids: s.tokenIds } : {}),
    };
  }

  private chatChoice(s: SampleOutput, p: ParsedRequest): Record<string, unknown> {
    return {
      index: s.index, message: { role: 'assistant', content: s.text ?? '' },
      logprobs: p.logprobs !== null ? { content: s.tokenIds.map((t, i) => this.chatLogprob(t, s.logprobs[i]!, s.topLogprobs?.[i] ?? [])) } : null,
      finish_reason: s.finishReason, stop_reason: s.stopReason,
    };
  }
}

function usageOf(out: RequestOutput): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
  const prompt = out.promptTokenIds.length;
  const completion = out.samples.reduce((s, x) => s + x.tokenIds.length, 0);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}
