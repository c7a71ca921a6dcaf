// The generation engine: continuous batching over per-sequence decode state (vLLM-style).
//
// A request (one prompt, n samples) waits until the batch has room for its n sequences, then gets
// prefilled once with the parallel forward, which leaves its state behind: conv + SSM state in one
// Mamba state slot, K/V in paged blocks. Its n samples fork from that state (Mamba slots copied with
// copyRows, KV blocks shared by refcount, copy-on-write of a partially filled last block). From then on
// every engine step advances every running sequence by one token in one batched `model.step`, samples,
// checks stops, and frees finished sequences at once, so waiting requests can take their place in the
// next step. Everything touches the model through the Backend interface only.
//
// Per step the host builds DecodeInfo in Int32Arrays allocated once (grown by doubling when needed)
// and views them with subarray, so a step allocates no vocabulary- or batch-sized host arrays besides
// what the sampler reads back.
import type { Backend, StepGraph } from '../backend/backend.js';
import type { DType, Tensor } from '../backend/tensor.js';
import type { CausalLM } from '../model/model.js';
import type { DecodeInfo, LayerState, StateWrite } from '../model/module.js';
import { plainSeqInfo } from '../model/module.js';
import { StreamDecoder, type Tokenizer } from '../model/tokenizer.js';
import { UserError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import { BlockTable, KvBlockPool, type BlockCopy } from './kv-blocks.js';
import { defaultSampler, isGreedy, MAX_TOP_LOGPROBS, samplingParams, type SampleRow, type SamplingParams, type TokenSampler } from './sampling.js';
import { StateSlotPool } from './state-slots.js';

/** recorded decode graphs an engine keeps (one per batch size; the least recently used goes first) */
const MAX_GRAPHS = 16;

export interface EngineOptions {
  /** most sequences decoded together (a request with n samples counts n); default 64 */
  maxBatch?: number;
  /** tokens per KV block; default 16 */
  blockSize?: number;
  /** KV blocks the cache may grow to; default enough for maxBatch sequences at full context */
  maxKvBlocks?: number;
  /** KV blocks allocated up front (the pool doubles when it runs out); default 64 */
  initialKvBlocks?: number;
  /**
   * storage of the KV cache; default: bf16 for a model with bf16 weights (half the memory and the decode
   * attention's bytes, as serving engines keep a model-dtype cache), else f32
   */
  kvDType?: DType;
  /**
   * storage of the Mamba-1 decode states (the SSM state and the conv window); default: bf16 for a hybrid with bf16
   * weights and Mamba-1 layers (the reference's — mamba_ssm keeps ssm_state and conv_state in the model dtype,
   * re-quantised every step — at half the states' memory and decode traffic), else f32. f32 keeps the recurrence
   * unrounded. Mamba-2 layers take f32 only.
   */
  ssmDType?: DType;
  /** longest sequence (prompt + generated); default max_position_embeddings of the model */
  maxContext?: number;
  /** decodes text for outputs and stop strings; without it outputs have text null */
  tokenizer?: Tokenizer | null;
  /** stop token ids of every request (eos from config.json / generation_config.json); default the config's eos */
  stopTokenIds?: readonly number[];
  /** replaces the default sampler (defaultSampler: on the backend when it has sampleRows, else on the host) */
  sampler?: TokenSampler;
  /**
   * n samples of one prompt fork one prefill (default true). false prefills each sample separately,
   * which gives the same tokens and exists to check exactly that.
   */
  sharePrefill?: boolean;
  /**
   * Diagnostics: synchronise the device after each decode step's model step to split its wall time into the host's
   * preparation (inputs, block tables), the model step on the device, and sampling plus accepting the tokens
   * (decodeTiming()). The sync costs a little; off by default.
   */
  timeDecode?: boolean;
  /**
   * Replay decode steps as recorded device graphs (backends with captureStepGraph: cuda), one per
   * batch size seen, the block table always at full context width (so set maxContext to what the
   * requests need: paged attention is planned, and its scratch sized, for maxContext keys); other
   * backends ignore it. Default
   * false. A graph bakes in the addresses of the weights and of the state pools: the pools are
   * handled here (graphs are dropped when they grow), but a caller that replaces the model's weight
   * tensors (not updating them in place) must call dropGraphs().
   */
  graphs?: boolean;
}

export interface GenerationRequest {
  /** prompt token ids (at least one, shorter than the context) */
  promptIds: readonly number[];
  /** samples of this prompt; default 1 */
  n?: number;
  sampling?: Partial<SamplingParams>;
  /** most generated tokens per sample; default up to the context length */
  maxTokens?: number;
  /** extra stop token ids (added to the engine's eos ids) */
  stopTokenIds?: readonly number[];
  /** stop when the decoded text contains one of these; the text is cut right before it */
  stopStrings?: readonly string[];
  /** do not stop at the engine's eos ids (the request's own stopTokenIds still apply) */
  ignoreEos?: boolean;
  /** sample i draws from Rng(sampleSeed(seed, i)): same seed, same tokens, whatever else runs */
  seed?: number;
  /**
   * report the k most likely tokens at each generated position, k in [0, 20]; default 0 (none). They
   * are log-softmax of the unmodified logits, like `logprobs`, best first, ties to the lower id; the
   * chosen token is among them only when it is in the top k. Asking does not change the tokens.
   */
  topLogprobs?: number;
  requestId?: string;
  /** called synchronously for each event of this request, inside step() */
  onEvent?: (e: GenerationEvent) => void;
}

/** one alternative at a generated position: log p(tokenId) under the unmodified model distribution */
export interface TopLogprob {
  tokenId: number;
  logprob: number;
}

/** 'stop': a stop token or stop string; 'length': max tokens or the context; 'abort': cancelled */
export type FinishReason = 'stop' | 'length' | 'abort';

export interface SampleOutput {
  index: number;
  /** generated tokens only; includes the stop token when one ended the sample */
  tokenIds: number[];
  /** decoded generated text (special tokens skipped, cut before a stop string); null without a tokenizer */
  text: string | null;
  /** logprobs[i] = log p(tokenIds[i]) under the unmodified model distribution */
  logprobs: number[];
  /** when the request asked for topLogprobs k ≥ 1: topLogprobs[i] = the k most likely tokens at position i, best first */
  topLogprobs?: TopLogprob[][];
  finishReason: FinishReason;
  /** the stop token id or stop string that ended the sample */
  stopReason: number | string | null;
}

export interface RequestOutput {
  requestId: string;
  promptTokenIds: number[];
  samples: SampleOutput[];
}

export type GenerationEvent =
  | {
    type: 'token'; requestId: string; sample: number; tokenId: number; logprob: number; text: string;
    /** the k most likely tokens at this position, when the request asked for topLogprobs k ≥ 1 */
    topLogprobs?: TopLogprob[];
  }
  | { type: 'finished'; requestId: string; sample: number; output: SampleOutput }
  | { type: 'done'; requestId: string; output: RequestOutput };

/** the Rng seed of sample `index` of a request seeded with `seed` */
export function sampleSeed(seed: number, index: number): number {
  const folded = (seed ^ Math.floor(seed / 4294967296)) >>> 0;
  return (folded + Math.imul(index, 0x9e3779b9)) >>> 0;
}

/**
 * Events of one request, as an async iterator, plus the final output as a promise. A request made
 * with an `onEvent` callback gets a handle that does not buffer events (the callback has them), so a
 * long generation does not pile up every token event in memory; iterating such a handle yields only
 * the final 'done' event.
 */
export class RequestHandle implements AsyncIterable<GenerationEvent> {
  readonly result: Promise<RequestOutput>;
  private resolveResult!: (o: RequestOutput) => void;
  private readonly queue: GenerationEvent[] = [];
  private readonly waiters: ((r: IteratorResult<GenerationEvent>) => void)[] = [];
  private closed = false;

  constructor(readonly requestId: string, private readonly buffer = true) {
    this.result = new Promise((resolve) => (this.resolveResult = resolve));
  }

  /** @internal the engine's side */
  push(e: GenerationEvent): void {
    if (!this.buffer && e.type !== 'done' && this.waiters.length === 0) return;
    const w = this.waiters.shift();
    if (w) w({ value: e, done: false });
    else this.queue.push(e);
    if (e.type === 'done') {
      this.closed = true;
      this.resolveResult(e.output);
      for (const x of this.waiters.splice(0)) x({ value: undefined, done: true });
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<GenerationEvent> {
    return {
      next: () => {
        const e = this.queue.shift();
        if (e) return Promise.resolve({ value: e, done: false });
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.waiters.push(resolve));
      },
    };
  }
}

interface RequestState {
  id: string;
  prompt: Int32Array;
  n: number;
  params: SamplingParams;
  /** alternatives per generated token (0: none) */
  topLogprobs: number;
  maxTokens: number;
  stopIds: Set<number>;
  stopStrings: string[];
  /** longest stop string − 1: streamed text holds back this many chars, which could start a stop string */
  holdBack: number;
  seed: number;
  /** KV blocks reserved at admission (only when maxKvBlocks limits the cache) */
  reserved: number;
  admitted: boolean;
  seqs: Sequence[];
  outputs: (SampleOutput | null)[];
  unfinished: number;
  handle: RequestHandle;
  onEvent?: (e: GenerationEvent) => void;
}

class Sequence {
  readonly generated: number[] = [];
  readonly logprobs: number[] = [];
  /** per generated token, when the request asked for alternatives */
  readonly topLogprobs: TopLogprob[][] = [];
  slot = -1;
  text = '';
  /** chars of `text` already streamed */
  streamed = 0;
  finished = false;
  constructor(
    readonly req: RequestState, readonly index: number, readonly table: BlockTable,
    readonly rng: Rng, readonly decoder: StreamDecoder | null,
  ) {}
  get lastToken(): number {
    return this.generated[this.generated.length - 1]!;
  }
}

export interface StepStats {
  /** prompts prefilled this step */
  prefilled: number;
  /** sequences decoded this step (one token each) */
  decoded: number;
  /** samples that finished this step */
  finished: number;
}

export class Engine {
  readonly maxBatch: number;
  readonly maxContext: number;
  readonly blockSize: number;
  private readonly be: Backend;
  private readonly states: LayerState[];
  private readonly timing: { steps: number; prepareMs: number; deviceMs: number; sampleMs: number } | null;
  private readonly kvPool: KvBlockPool;
  private readonly slotPool: StateSlotPool;
  private readonly sampler: TokenSampler;
  private readonly tokenizer: Tokenizer | null;
  private readonly defaultStopIds: number[];
  private readonly sharePrefill: boolean;
  private readonly useGraphs: boolean;
  /** recorded decode steps by batch size, least recently used first */
  private readonly graphs = new Map<number, StepGraph>();
  private lastDecodeN = -1;
  private readonly kvLimited: boolean;
  private reservedBlocks = 0;
  private readonly waiting: RequestState[] = [];
  private running: Sequence[] = [];
  private readonly requests = new Map<string, RequestState>();
  private nextId = 0;
  private readonly seedRng = new Rng((Date.now() ^ Math.floor(Math.random() * 4294967296)) >>> 0);

  // DecodeInfo buffers, reused every step (grown by doubling)
  private ids = new Int32Array(0);
  private slots = new Int32Array(0);
  private positions = new Int32Array(0);
  private slotMapping = new Int32Array(0);
  private seqLens = new Int32Array(0);
  private blockTables = new Int32Array(0);
  private sampledTokens = new Int32Array(0);
  private sampledLogprobs = new Float32Array(0);
  /** [cap, MAX_TOP_LOGPROBS] alternatives of the sampled rows */
  private sampledTopIds = new Int32Array(0);
  private sampledTopLogprobs = new Float32Array(0);

  /** storage of the KV cache (EngineOptions.kvDType) */
  readonly kvDType: DType;
  /** storage of the Mamba-1 decode states (EngineOptions.ssmDType) */
  readonly ssmDType: DType;

  constructor(readonly model: CausalLM, opts: EngineOptions = {}) {
    this.be = model.be;
    const posInt = (v: number | undefined, def: number, what: string): number => {
      const x = v ?? def;
      if (!(Number.isInteger(x) && x >= 1)) throw new UserError(`engine: ${what} must be a positive integer, got ${String(x)}`);
      return x;
    };
    this.maxBatch = posInt(opts.maxBatch, 64, 'maxBatch');
    this.blockSize = posInt(opts.blockSize, 16, 'blockSize');
    const ctx = model.cfg.llama.maxPositionEmbeddings;
    this.maxContext = posInt(opts.maxContext, ctx, 'maxContext');
    if (this.maxContext > ctx) throw new UserError(`engine: maxContext ${this.maxContext} exceeds the model's max_position_embeddings ${ctx}`);
    const worstCase = this.maxBatch * Math.ceil(this.maxContext / this.blockSize);
    const maxKvBlocks = posInt(opts.maxKvBlocks, worstCase, 'maxKvBlocks');
    this.kvLimited = maxKvBlocks < worstCase;
    const initialKv = Math.min(posInt(opts.initialKvBlocks, 64, 'initialKvBlocks'), maxKvBlocks);
    const initialSlots = Math.min(this.maxBatch, 16);
    this.kvDType = opts.kvDType ?? (model.embed.value.dtype === 'bf16' ? 'bf16' : 'f32');
    if (!['f32', 'bf16', 'f16'].includes(this.kvDType)) throw new UserError(`engine: kvDType must be f32, bf16 or f16, got ${String(this.kvDType)}`);
    this.ssmDType = opts.ssmDType ?? (model.embed.value.dtype === 'bf16' && !model.kinds.includes('mamba2') ? 'bf16' : 'f32');
    if (!['f32', 'bf16'].includes(this.ssmDType)) throw new UserError(`engine: ssmDType must be f32 or bf16, got ${String(this.ssmDType)}`);
    if (this.ssmDType !== 'f32' && model.kinds.includes('mamba2')) throw new UserError(`engine: ssmDType ${this.ssmDType} needs Mamba-1 layers; this model's Mamba-2 state is kept in f32`);
    this.states = model.allocateState({ slots: initialSlots, kvBlocks: initialKv, blockSize: this.blockSize, kvDType: this.kvDType, ssmDType: this.ssmDType });
    this.kvPool = new KvBlockPool(this.blockSize, initialKv, maxKvBlocks, (cap) => this.growPools('attention', cap));
    this.slotPool = new StateSlotPool(initialSlots, this.maxBatch, (cap) => this.growPools('mamba', cap));
    this.sampler = opts.sampler ?? defaultSampler(this.be, model.vocabSize);
    this.tokenizer = opts.tokenizer ?? null;
    this.defaultStopIds = [...(opts.stopTokenIds ?? model.cfg.llama.eosTokenIds)];
    for (const id of this.defaultStopIds) this.checkTokenId(id, 'stopTokenIds');
    this.sharePrefill = opts.sharePrefill ?? true;
    this.timing = opts.timeDecode ? { steps: 0, prepareMs: 0, deviceMs: 0, sampleMs: 0 } : null;
    this.useGraphs = (opts.graphs ?? false) && this.be.captureStepGraph !== undefined;
  }

  /** recorded decode graphs held now (see EngineOptions.graphs) */
  get numGraphs(): number {
    return this.graphs.size;
  }
  /**
   * Free what the engine holds on the backend: the decode graphs and the KV / state pools (on a GPU the
   * garbage collector does not see device memory, so an engine dropped without this keeps its pools until
   * a collection happens to run). The engine cannot be used afterwards.
   */
  dispose(): void {
    if (this.disposed) return;
    this.dropGraphs();
    for (const st of this.states) for (const t of Object.values(st)) if (typeof t === 'object' && t !== null) (t as Tensor).dispose();
    this.states.length = 0;
    this.disposed = true;
  }
  private disposed = false;
  private checkAlive(what: string): void {
    if (this.disposed) throw new UserError(`engine: ${what} after dispose()`);
  }

  /** free the recorded decode graphs; the next steps record new ones */
  dropGraphs(): void {
    for (const g of this.graphs.values()) g.dispose();
    this.graphs.clear();
  }

  /** sequences decoding now */
  get numRunning(): number {
    return this.running.length;
  }
  /** requests not yet admitted */
  get numWaiting(): number {
    return this.waiting.length;
  }
  hasWork(): boolean {
    return this.running.length > 0 || this.waiting.length > 0;
  }
  /** with EngineOptions.timeDecode: decode steps so far and their wall time split three ways (ms, summed); else null */
  decodeTiming(): { steps: number; prepareMs: number; deviceMs: number; sampleMs: number } | null {
    return this.timing ? { ...this.timing } : null;
  }
  /** pool usage: KV blocks held / allocated, state slots held / allocated */
  memory(): { kvBlocksUsed: number; kvBlocksCapacity: number; slotsUsed: number; slotsCapacity: number } {
    return { kvBlocksUsed: this.kvPool.used, kvBlocksCapacity: this.kvPool.capacity, slotsUsed: this.slotPool.used, slotsCapacity: this.slotPool.capacity };
  }

  private checkTokenId(id: number, field: string): void {
    const V = this.model.vocabSize;
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new UserError(`${field}: ${String(id)} is not a token id of this model (vocabulary [0, ${V}))`);
  }

  /** queue a request; it is admitted at the start of a later step() */
  addRequest(r: GenerationRequest): RequestHandle {
    this.checkAlive('addRequest');
    if (!Array.isArray(r.promptIds) && !ArrayBuffer.isView(r.promptIds)) throw new UserError('promptIds: must be an array of token ids');
    const L = r.promptIds.length;
    if (L === 0) throw new UserError('promptIds: the prompt is empty (give at least one token, e.g. BOS)');
    for (let i = 0; i < L; i++) this.checkTokenId(r.promptIds[i]!, `promptIds[${i}]`);
    if (L >= this.maxContext) {
      throw new UserError(`prompt has ${L} tokens but the context is ${this.maxContext} tokens (max_position_embeddings): it must be shorter to leave room for generated tokens`);
    }
    const n = r.n ?? 1;
    if (!Number.isInteger(n) || n < 1) throw new UserError(`n: must be a positive integer, got ${String(n)}`);
    if (n > this.maxBatch) throw new UserError(`n: ${n} samples exceed the engine's maxBatch ${this.maxBatch}`);
    const room = this.maxContext - L;
    const maxTokens = r.maxTokens ?? room;
    if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new UserError(`max_tokens: must be a positive integer, got ${String(maxTokens)}`);
    const params = samplingParams(r.sampling);
    const topLogprobs = r.topLogprobs ?? 0;
    if (!(Number.isInteger(topLogprobs) && topLogprobs >= 0 && topLogprobs <= MAX_TOP_LOGPROBS)) {
      throw new UserError(`top_logprobs: must be an integer in [0, ${MAX_TOP_LOGPROBS}], got ${String(r.topLogprobs)}`);
    }
    const stopIds = new Set<number>(r.ignoreEos ? [] : this.defaultStopIds);
    for (const id of r.stopTokenIds ?? []) {
      this.checkTokenId(id, 'stop_token_ids');
      stopIds.add(id);
    }
    const stopStrings = [...(r.stopStrings ?? [])];
    for (const s of stopStrings) if (typeof s !== 'string' || s.length === 0) throw new UserError(`stop: stop strings must be non-empty strings, got ${JSON.stringify(s)}`);
    if (stopStrings.length > 0 && !this.tokenizer) throw new UserError('stop: stop strings need a tokenizer (the model folder has no tokenizer.json)');
    if (r.seed !== undefined && !(Number.isSafeInteger(r.seed) && r.seed >= 0)) throw new UserError(`seed: must be a non-negative integer, got ${String(r.seed)}`);
    const id = r.requestId ?? `req-${this.nextId++}`;
    if (this.requests.has(id)) throw new UserError(`requestId: "${id}" is already in use`);
    // with a limited cache, reserve the worst case (sharing only makes it smaller) so a step never runs out
    const reserved = this.kvLimited && this.model.kinds.includes('attention')
      ? n * Math.ceil(Math.min(L + maxTokens, this.maxContext) / this.blockSize) : 0;
    if (reserved > this.kvPool.maxBlocks) {
      throw new UserError(`request needs up to ${reserved} KV blocks but the cache holds ${this.kvPool.maxBlocks} (lower max_tokens or n)`);
    }
    const req: RequestState = {
      id, prompt: Int32Array.from(r.promptIds), n, params, topLogprobs, maxTokens: Math.min(maxTokens, room), stopIds, stopStrings,
      holdBack: stopStrings.reduce((m, s) => Math.max(m, s.length - 1), 0),
      seed: r.seed ?? this.seedRng.nextU32(), reserved, admitted: false, seqs: [], outputs: Array<SampleOutput | null>(n).fill(null), unfinished: n,
      handle: new RequestHandle(id, r.onEvent === undefined), onEvent: r.onEvent,
    };
    this.requests.set(id, req);
    this.waiting.push(req);
    return req.handle;
  }

  /** stop a request now: waiting ones are dropped, running samples end with finish reason 'abort' */
  cancel(requestId: string): boolean {
    const req = this.requests.get(requestId);
    if (!req) return false;
    const w = this.waiting.indexOf(req);
    if (w >= 0) this.waiting.splice(w, 1);
    for (let i = 0; i < req.n; i++) {
      const seq = req.seqs[i];
      if (seq && !seq.finished) this.finish(seq, 'abort', null);
      else if (!seq) {
        this.complete(req, i, {
          index: i, tokenIds: [], text: this.tokenizer ? '' : null, logprobs: [], ...(req.topLogprobs > 0 ? { topLogprobs: [] } : {}),
          finishReason: 'abort', stopReason: null,
        });
      }
    }
    this.running = this.running.filter((s) => !s.finished);
    return true;
  }

  /** admit waiting requests (prefill), then decode one token for every sequence that was already running */
  step(): StepStats {
    this.checkAlive('step');
    const stats: StepStats = { prefilled: 0, decoded: 0, finished: 0 };
    const decoding = this.running;
    this.running = [...decoding];
    stats.prefilled = this.admit(stats);
    stats.decoded = this.decode(decoding.filter((s) => !s.finished), stats);
    this.running = this.running.filter((s) => !s.finished);
    return stats;
  }

  /** step until every request has finished (synchronous) */
  runUntilIdle(): void {
    while (this.hasWork()) this.step();
  }

  /**
   * step while there is work, yielding to the event loop between steps so that requests can join
   * (a server) and events reach async consumers; resolves when idle or when `signal` aborts.
   */
  async run(signal?: AbortSignal): Promise<void> {
    while (this.hasWork() && !signal?.aborted) {
      this.step();
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /** add the requests, run to completion, return their outputs in order */
  generate(requests: readonly GenerationRequest[]): RequestOutput[] {
    const states = requests.map((r) => this.requests.get(this.addRequest(r).requestId)!);
    this.runUntilIdle();
    return states.map((s) => outputOf(s));
  }

  // ---------------------------------------------------------------- admission and prefill

  private admit(stats: StepStats): number {
    const admitted: RequestState[] = [];
    let seqs = this.running.length;
    // first come, first served: a request that does not fit blocks those behind it (no starvation)
    while (this.waiting.length > 0) {
      const req = this.waiting[0]!;
      if (seqs + req.n > this.maxBatch) break;
      if (this.kvLimited && this.reservedBlocks + req.reserved > this.kvPool.maxBlocks) break;
      this.waiting.shift();
      this.reservedBlocks += req.reserved;
      req.admitted = true;
      seqs += req.n;
      admitted.push(req);
    }
    // one forward per prompt length (rows of one forward must be equally long)
    const byLength = new Map<number, RequestState[]>();
    for (const r of admitted) {
      const list = byLength.get(r.prompt.length) ?? [];
      list.push(r);
      byLength.set(r.prompt.length, list);
    }
    for (const [L, reqs] of byLength) this.prefill(L, reqs, stats);
    return admitted.length;
  }

  private newSequence(req: RequestState, index: number, table: BlockTable): Sequence {
    const decoder = this.tokenizer ? new StreamDecoder(this.tokenizer, { skipSpecialTokens: true }) : null;
    const seq = new Sequence(req, index, table, new Rng(sampleSeed(req.seed, index)), decoder);
    req.seqs[index] = seq;
    return seq;
  }

  /** prefill prompts of length L: one row per request (shared prefill) or per sample */
  private prefill(L: number, reqs: RequestState[], stats: StepStats): void {
    const be = this.be, D = this.model.hiddenSize;
    const rows: Sequence[] = [];
    for (const req of reqs) {
      const count = this.sharePrefill ? 1 : req.n;
      for (let i = 0; i < count; i++) rows.push(this.newSequence(req, i, new BlockTable(this.kvPool)));
    }
    const B = rows.length;
    const ids = new Int32Array(B * L);
    const stateWrite: StateWrite = { slots: new Int32Array(B), slotMapping: new Int32Array(B * L) };
    rows.forEach((seq, b) => {
      ids.set(seq.req.prompt, b * L);
      seq.slot = this.slotPool.allocate();
      stateWrite.slots[b] = seq.slot;
      seq.table.appendSlots(L, stateWrite.slotMapping, b * L);
    });
    // tidy: the forward's activations are freed at once (device memory is not the GC's to manage);
    // the state it leaves behind is written in place into pools made outside
    const hidden = be.tidy(() => this.model.forward(ids, plainSeqInfo(B, L), { states: this.states, stateWrite }).hidden);
    // the last position of each row predicts the first generated token: [B, L, D] → [B, D]
    const last = lastPositions(be, hidden, B, L, D);
    const logits = this.model.logits(last);

    // samples forked from a shared prefill: copy the Mamba state slot, share the KV blocks
    const sampleRows: number[] = [];
    const all: Sequence[] = [];
    const copySrc: number[] = [], copyDst: number[] = [];
    rows.forEach((seq, b) => {
      all.push(seq);
      sampleRows.push(b);
      if (!this.sharePrefill) return;
      for (let i = 1; i < seq.req.n; i++) {
        const fork = this.newSequence(seq.req, i, seq.table.fork());
        fork.slot = this.slotPool.allocate();
        copySrc.push(seq.slot);
        copyDst.push(fork.slot);
        all.push(fork);
        sampleRows.push(b);
      }
    });
    if (copySrc.length > 0) this.copyStateSlots(Int32Array.from(copySrc), Int32Array.from(copyDst));
    // rows of one request appear in sample order, so `all` lists every request's samples 0..n-1
    this.sampleAndAccept(logits, all, Int32Array.from(sampleRows), stats);
    logits.dispose();
    last.dispose();
    for (const seq of all) if (!seq.finished) this.running.push(seq);
  }

  /** copy Mamba conv + SSM state from slots src[i] to dst[i] in every Mamba layer */
  private copyStateSlots(src: Int32Array, dst: Int32Array): void {
    for (const st of this.states) {
      if (st.kind === 'attention') continue;
      this.be.copyRows(st.convState, src, dst);
      this.be.copyRows(st.ssmState, src, dst);
    }
  }

  /** apply copy-on-write block copies to every attention layer's K and V cache */
  private copyKvBlocks(copies: BlockCopy[]): void {
    const src = Int32Array.from(copies, (c) => c.src), dst = Int32Array.from(copies, (c) => c.dst);
    for (const st of this.states) {
      if (st.kind !== 'attention') continue;
      this.be.copyRows(st.kCache, src, dst);
      this.be.copyRows(st.vCache, src, dst);
    }
  }

  /** enlarge the first dimension of the pools of one kind (attention: KV blocks; mamba: state slots) */
  private growPools(kind: 'attention' | 'mamba', rows: number): void {
    this.dropGraphs(); // they hold the old pools' addresses
    const grow = (t: Tensor): Tensor => {
      const old = t.shape[0]!;
      if (rows <= old) return t;
      const rowSize = t.size / old;
      // every temporary view is disposed: a view holds its block, so a forgotten one would keep the old pool
      // on the device until the garbage collector (which does not see device memory) gets to it
      const extra = this.be.zeros([1, (rows - old) * rowSize], t.dtype);
      const flat = this.be.reshape(t, [1, t.size]);
      const joined = this.be.concatLastDim([flat, extra]);
      for (const x of [extra, flat, t]) x.dispose();
      const grown = this.be.reshape(joined, [rows, ...t.shape.slice(1)]);
      joined.dispose();
      return grown;
    };
    this.states.forEach((st, i) => {
      if (kind === 'attention' && st.kind === 'attention') this.states[i] = { kind: 'attention', kCache: grow(st.kCache), vCache: grow(st.vCache) };
      if (kind === 'mamba' && st.kind !== 'attention') this.states[i] = { kind: st.kind, convState: grow(st.convState), ssmState: grow(st.ssmState) } as LayerState;
    });
  }

  // ---------------------------------------------------------------- decode

  private ensureCapacity(n: number, tableEntries: number): void {
    if (this.ids.length < n) {
      const cap = Math.max(n, this.ids.length * 2, 8);
      this.ids = new Int32Array(cap);
      this.slots = new Int32Array(cap);
      this.positions = new Int32Array(cap);
      this.slotMapping = new Int32Array(cap);
      this.seqLens = new Int32Array(cap);
      this.sampledTokens = new Int32Array(cap);
      this.sampledLogprobs = new Float32Array(cap);
      this.sampledTopIds = new Int32Array(cap * MAX_TOP_LOGPROBS);
      this.sampledTopLogprobs = new Float32Array(cap * MAX_TOP_LOGPROBS);
    }
    if (this.blockTables.length < tableEntries) this.blockTables = new Int32Array(Math.max(tableEntries, this.blockTables.length * 2));
  }

  private decode(seqs: Sequence[], stats: StepStats): number {
    const n = seqs.length;
    if (n === 0) return 0;
    const t0 = this.timing ? performance.now() : 0;
    const bs = this.blockSize;
    // a recorded graph is replayed with the table width it was recorded with: the full context
    let maxBlocks = this.useGraphs ? Math.ceil(this.maxContext / bs) : 1;
    if (!this.useGraphs) for (const s of seqs) maxBlocks = Math.max(maxBlocks, Math.ceil((s.table.length + 1) / bs));
    this.ensureCapacity(n, n * maxBlocks);
    const copies: BlockCopy[] = [];
    for (let i = 0; i < n; i++) {
      const s = seqs[i]!;
      const pos = s.table.length;
      this.ids[i] = s.lastToken;
      this.slots[i] = s.slot;
      this.positions[i] = pos;
      this.slotMapping[i] = s.table.appendSlot(copies);
      this.seqLens[i] = pos + 1;
      const row = i * maxBlocks, blocks = s.table.blocks;
      for (let j = 0; j < maxBlocks; j++) this.blockTables[row + j] = j < blocks.length ? blocks[j]! : 0;
    }
    if (copies.length > 0) this.copyKvBlocks(copies);
    const ids = this.ids.subarray(0, n);
    const info: DecodeInfo = {
      n, slots: this.slots.subarray(0, n), positions: this.positions.subarray(0, n), slotMapping: this.slotMapping.subarray(0, n),
      blockTables: this.blockTables.subarray(0, n * maxBlocks), maxBlocks, seqLens: this.seqLens.subarray(0, n),
    };
    const t1 = this.timing ? performance.now() : 0;
    // record a graph for a batch size only once it repeats (a shrinking batch would record one per step)
    const graphed = this.useGraphs && (this.graphs.has(n) || this.lastDecodeN === n);
    this.lastDecodeN = n;
    if (graphed) {
      const inputs = [ids, info.slots, info.positions, info.slotMapping, info.blockTables, info.seqLens];
      let g = this.graphs.get(n);
      let logits: Tensor;
      if (g) {
        this.graphs.delete(n); // re-inserted as the most recently used
        logits = g.replay(inputs);
      } else {
        if (this.graphs.size >= MAX_GRAPHS) {
          const [oldest, og] = this.graphs.entries().next().value as [number, StepGraph];
          og.dispose();
          this.graphs.delete(oldest);
        }
        g = this.be.captureStepGraph!(inputs, () => this.be.tidy(() => this.model.step(ids, this.states, info)));
        logits = g.output;
      }
      this.graphs.set(n, g);
      const t2 = this.timeDevice(t0, t1);
      this.sampleAndAccept(logits, seqs, null, stats); // the graph owns logits
      this.timeSampling(t2);
      return n;
    }
    const logits = this.be.tidy(() => this.model.step(ids, this.states, info));
    const t2 = this.timeDevice(t0, t1);
    this.sampleAndAccept(logits, seqs, null, stats);
    logits.dispose();
    this.timeSampling(t2);
    return n;
  }
  /** timeDecode: the preparation (t0 → t1) and the model step, waited for; returns the time after it */
  private timeDevice(t0: number, t1: number): number {
    if (!this.timing) return 0;
    (this.be as { synchronize?: () => void }).synchronize?.();
    const t2 = performance.now();
    this.timing.steps++;
    this.timing.prepareMs += t1 - t0;
    this.timing.deviceMs += t2 - t1;
    return t2;
  }
  private timeSampling(t2: number): void {
    if (this.timing) this.timing.sampleMs += performance.now() - t2;
  }

  // ---------------------------------------------------------------- sampling and stops

  /** sample seqs[i] from logits row rowOf[i] (row i when null) and append the tokens */
  private sampleAndAccept(logits: Tensor, seqs: Sequence[], rowOf: Int32Array | null, stats: StepStats): void {
    const n = seqs.length;
    this.ensureCapacity(n, 0);
    const rows: SampleRow[] = seqs.map((s, i) => ({
      params: s.req.params,
      // greedy rows draw nothing, so switching a request to greedy does not shift any other stream
      uniform: isGreedy(s.req.params) ? 0 : s.rng.uniform(),
      logitsRow: rowOf ? rowOf[i]! : i,
      topLogprobs: s.req.topLogprobs,
    }));
    const S = MAX_TOP_LOGPROBS;
    const out = {
      tokens: this.sampledTokens.subarray(0, n), logprobs: this.sampledLogprobs.subarray(0, n),
      topIds: this.sampledTopIds.subarray(0, n * S), topLogprobs: this.sampledTopLogprobs.subarray(0, n * S),
    };
    this.sampler.sample(logits, rows, out);
    for (let i = 0; i < n; i++) {
      const k = seqs[i]!.req.topLogprobs;
      let top: TopLogprob[] | null = null;
      if (k > 0) {
        top = new Array<TopLogprob>(k);
        for (let j = 0; j < k; j++) top[j] = { tokenId: out.topIds[i * S + j]!, logprob: out.topLogprobs[i * S + j]! };
      }
      if (this.accept(seqs[i]!, out.tokens[i]!, out.logprobs[i]!, top)) stats.finished++;
    }
  }

  /** append one generated token (with its alternatives when asked for); returns true when the sample finished */
  private accept(seq: Sequence, token: number, logprob: number, top: TopLogprob[] | null): boolean {
    const req = seq.req;
    seq.generated.push(token);
    seq.logprobs.push(logprob);
    if (top) seq.topLogprobs.push(top);
    let reason: FinishReason | null = null;
    let stopReason: number | string | null = null;
    if (req.stopIds.has(token)) {
      reason = 'stop';
      stopReason = token;
    } else if (seq.decoder && this.hasText(token)) {
      const before = seq.text.length;
      seq.text += seq.decoder.push(token);
      const hit = this.findStop(seq, before);
      if (hit) {
        reason = 'stop';
        stopReason = hit;
      }
    }
    if (!reason && (seq.generated.length >= req.maxTokens || req.prompt.length + seq.generated.length >= this.maxContext)) reason = 'length';
    let delta = '';
    if (seq.decoder) {
      if (reason && typeof stopReason !== 'string') {
        // end of the stream: bytes the decoder held back become text, and may complete a stop string
        const before = seq.text.length;
        seq.text += seq.decoder.flush();
        const hit = this.findStop(seq, before);
        if (hit) {
          reason = 'stop';
          stopReason = hit;
        }
      }
      // text that could be the start of a stop string is held back until it is known not to be one
      const safe = reason ? seq.text.length : Math.max(seq.streamed, seq.text.length - req.holdBack);
      delta = seq.text.slice(seq.streamed, safe);
      seq.streamed = safe;
    }
    this.emit(req, { type: 'token', requestId: req.id, sample: seq.index, tokenId: token, logprob, text: delta, ...(top ? { topLogprobs: top } : {}) });
    if (reason) this.finish(seq, reason, stopReason);
    return reason !== null;
  }

  /**
   * Whether the tokenizer knows the id: a model's embedding often has more rows than the tokenizer has
   * tokens (padding to a multiple of 64, the tiny presets), and an untrained model may pick such an id.
   * It adds no text, as in vLLM.
   */
  private hasText(token: number): boolean {
    return token < this.tokenizer!.vocabSize && this.tokenizer!.idToToken(token) !== null;
  }

  /**
   * Earliest stop string in the text that may have appeared since `before` chars; cuts the text right
   * before it and returns it.
   */
  private findStop(seq: Sequence, before: number): string | null {
    const req = seq.req;
    if (req.stopStrings.length === 0) return null;
    const from = Math.max(0, before - req.holdBack);
    let best = -1, which: string | null = null;
    for (const s of req.stopStrings) {
      const at = seq.text.indexOf(s, from);
      if (at >= 0 && (best < 0 || at < best)) {
        best = at;
        which = s;
      }
    }
    if (which === null) return null;
    seq.text = seq.text.slice(0, best);
    return which;
  }

  private finish(seq: Sequence, reason: FinishReason, stopReason: number | string | null): void {
    const req = seq.req;
    seq.finished = true;
    if (reason === 'abort' && seq.decoder) seq.text += seq.decoder.flush();
    this.slotPool.release(seq.slot);
    seq.table.release();
    const output: SampleOutput = {
      index: seq.index, tokenIds: seq.generated.slice(), text: seq.decoder ? seq.text : null, logprobs: seq.logprobs.slice(),
      ...(req.topLogprobs > 0 ? { topLogprobs: seq.topLogprobs.slice() } : {}),
      finishReason: reason, stopReason,
    };
    this.emit(req, { type: 'finished', requestId: req.id, sample: seq.index, output });
    this.complete(req, seq.index, output);
  }

  private complete(req: RequestState, index: number, output: SampleOutput): void {
    req.outputs[index] = output;
    if (--req.unfinished > 0) return;
    if (req.admitted) this.reservedBlocks -= req.reserved;
    this.requests.delete(req.id);
    this.emit(req, { type: 'done', requestId: req.id, output: outputOf(req) });
  }

  private emit(req: RequestState, e: GenerationEvent): void {
    req.onEvent?.(e);
    req.handle.push(e);
  }
}

function outputOf(req: RequestState): RequestOutput {
  return { requestId: req.id, promptTokenIds: Array.from(req.prompt), samples: req.outputs.map((o) => o!) };
}

/** hidden [B, L, D] → its last position of each row [B, D]; `hidden` is consumed (disposed; for L = 1 the result is a view of its block) */
export function lastPositions(be: Backend, hidden: Tensor, B: number, L: number, D: number): Tensor {
  // the views are disposed too: each holds hidden's block on the device until the garbage collector runs
  const flat = be.reshape(hidden, [B, L * D]);
  hidden.dispose();
  if (L === 1) return flat;
  const [head, tail] = be.splitLastDim(flat, [(L - 1) * D, D]);
  head!.dispose();
  flat.dispose();
  return tail!;
}
