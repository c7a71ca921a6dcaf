// OpenAI request bodies → what the engine needs. Every check names the field as the client wrote it
// (`top_p`, `messages[2].content`), so a 400 tells the caller exactly what to fix. `null` means "not
// set", as the official clients send it. Fields this server cannot honour (echo, penalties,
// logit_bias, best_of > n) are refused rather than silently ignored.
import type { ChatMessage } from '../model/tokenizer.js';
import { MAX_TOP_LOGPROBS, type SamplingParams } from '../infer/sampling.js';
import { ApiError, badField } from './errors.js';

/** most alternatives per position a client may ask for (OpenAI: 20 for chat, 5 for completions; we allow 20 for both) */
export { MAX_TOP_LOGPROBS };

/** a prompt before tokenization: text, or token ids */
export type PromptInput = { kind: 'text'; text: string } | { kind: 'ids'; ids: number[] } | { kind: 'chat'; messages: ChatMessage[] };

export interface ParsedRequest {
  endpoint: 'completions' | 'chat';
  model: string | null;
  prompt: PromptInput;
  n: number;
  stream: boolean;
  includeUsage: boolean;
  /** null: up to the context length */
  maxTokens: number | null;
  /** only the fields the request set (the model folder's defaults fill the rest) */
  sampling: Partial<SamplingParams>;
  stop: string[];
  stopTokenIds: number[];
  ignoreEos: boolean;
  seed: number | undefined;
  /** null: no logprobs; k ≥ 0: the chosen token's logprob plus the k most likely tokens at each position */
  logprobs: number | null;
  returnTokenIds: boolean;
}

type Body = Record<string, unknown>;

function get(body: Body, key: string): unknown {
  const v = body[key];
  return v === null ? undefined : v;
}

function optNumber(body: Body, key: string, check: (x: number) => boolean, range: string): number | undefined {
  const v = get(body, key);
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || !check(v)) throw badField(key, `must be ${range}, got ${JSON.stringify(v)}`);
  return v;
}

function optInt(body: Body, key: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const v = get(body, key);
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw badField(key, `must be an integer in [${min}, ${max === Number.MAX_SAFE_INTEGER ? '∞' : max}], got ${JSON.stringify(v)}`);
  }
  return v;
}

function optBool(body: Body, key: string): boolean | undefined {
  const v = get(body, key);
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw badField(key, `must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function isIdList(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0);
}

/** `stop`: a string or a list of strings */
function parseStop(body: Body): string[] {
  const v = get(body, 'stop');
  if (v === undefined) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || !list.every((s) => typeof s === 'string' && s.length > 0)) {
    throw badField('stop', `must be a non-empty string or a list of non-empty strings, got ${JSON.stringify(v)}`);
  }
  if (list.length > 16) throw badField('stop', `at most 16 stop strings, got ${list.length}`);
  return list as string[];
}

/** refuse options that would change the output in ways this server does not implement */
function refuseUnsupported(body: Body, n: number): void {
  for (const key of ['presence_penalty', 'frequency_penalty']) {
    const v = get(body, key);
    if (v !== undefined && v !== 0) throw badField(key, 'is not supported by this server (only 0)');
  }
  const bias = get(body, 'logit_bias');
  if (bias !== undefined && (typeof bias !== 'object' || Object.keys(bias as object).length > 0)) throw badField('logit_bias', 'is not supported by this server');
  if (get(body, 'echo') === true) throw badField('echo', 'is not supported by this server');
  const suffix = get(body, 'suffix');
  if (suffix !== undefined && suffix !== '') throw badField('suffix', 'is not supported by this server');
  const bestOf = get(body, 'best_of');
  if (bestOf !== undefined && bestOf !== n) throw badField('best_of', `is not supported by this server (only equal to n = ${n})`);
  const tools = get(body, 'tools');
  if (Array.isArray(tools) && tools.length > 0) throw badField('tools', 'tool calling is not supported by this server');
}

/** the fields both endpoints share */
function parseCommon(body: Body, endpoint: 'completions' | 'chat', prompt: PromptInput): ParsedRequest {
  const model = get(body, 'model');
  if (model !== undefined && typeof model !== 'string') throw badField('model', `must be a string, got ${JSON.stringify(model)}`);
  const n = optInt(body, 'n', 1, 1024) ?? 1;
  const stream = optBool(body, 'stream') ?? false;
  const so = get(body, 'stream_options');
  let includeUsage = false;
  if (so !== undefined) {
    if (typeof so !== 'object' || Array.isArray(so)) throw badField('stream_options', 'must be an object');
    const iu = (so as Body)['include_usage'];
    if (iu !== undefined && iu !== null && typeof iu !== 'boolean') throw badField('stream_options.include_usage', 'must be true or false');
    includeUsage = iu === true;
  }
  const sampling: Partial<SamplingParams> = {};
  const temperature = optNumber(body, 'temperature', (x) => x >= 0, 'a number ≥ 0');
  if (temperature !== undefined) sampling.temperature = temperature;
  const topP = optNumber(body, 'top_p', (x) => x > 0 && x <= 1, 'a number in (0, 1]');
  if (topP !== undefined) sampling.topP = topP;
  const topK = optInt(body, 'top_k', -1);
  if (topK !== undefined) sampling.topK = topK;
  const minP = optNumber(body, 'min_p', (x) => x >= 0 && x <= 1, 'a number in [0, 1]');
  if (minP !== undefined) sampling.minP = minP;

  // chat's newer name wins; completions default to 16 tokens as OpenAI's API does
  const maxTokens = (endpoint === 'chat' ? optInt(body, 'max_completion_tokens', 1) : undefined) ?? optInt(body, 'max_tokens', 1);

  let logprobs: number | null = null;
  if (endpoint === 'completions') {
    const lp = get(body, 'logprobs');
    if (lp !== undefined && lp !== false) logprobs = optInt(body, 'logprobs', 0, MAX_TOP_LOGPROBS) ?? null;
  } else {
    const want = optBool(body, 'logprobs') ?? false;
    const top = optInt(body, 'top_logprobs', 0, MAX_TOP_LOGPROBS);
    // as OpenAI and vLLM: top_logprobs (even 0) is only meaningful with logprobs on
    if (top !== undefined && !want) throw badField('top_logprobs', 'needs "logprobs": true');
    if (want) logprobs = top ?? 0;
  }
  const stopTokenIds = get(body, 'stop_token_ids') ?? [];
  if (!isIdList(stopTokenIds)) throw badField('stop_token_ids', `must be a list of token ids, got ${JSON.stringify(stopTokenIds)}`);
  refuseUnsupported(body, n);
  return {
    endpoint, model: (model as string | undefined) ?? null, prompt, n, stream, includeUsage,
    maxTokens: maxTokens ?? (endpoint === 'completions' ? 16 : null),
    sampling, stop: parseStop(body), stopTokenIds, ignoreEos: optBool(body, 'ignore_eos') ?? false,
    seed: optInt(body, 'seed', 0), logprobs, returnTokenIds: optBool(body, 'return_token_ids') ?? false,
  };
}

function asBody(body: unknown): Body {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ApiError(400, 'the request body must be a JSON object', 'invalid_request_error', null, 'invalid_body');
  }
  return body as Body;
}

/** POST /v1/completions: `prompt` is text, token ids, or a list holding one of those */
export function parseCompletionRequest(raw: unknown): ParsedRequest {
  const body = asBody(raw);
  let p = body['prompt'];
  if (p === undefined || p === null) throw badField('prompt', 'is required');
  // a list of one prompt is the same prompt; several would be several requests
  if (Array.isArray(p) && p.length > 0 && (typeof p[0] === 'string' || Array.isArray(p[0]))) {
    if (p.length > 1) throw badField('prompt', `batched prompts are not supported: send one prompt per request (got ${p.length})`);
    p = p[0];
  }
  let prompt: PromptInput;
  if (typeof p === 'string') {
    if (p.length === 0) throw badField('prompt', 'is empty');
    prompt = { kind: 'text', text: p };
  } else if (isIdList(p)) {
    if (p.length === 0) throw badField('prompt', 'is an empty list of token ids');
    prompt = { kind: 'ids', ids: p };
  } else {
    throw badField('prompt', 'must be a string, a list of token ids, or a list holding one of those');
  }
  return parseCommon(body, 'completions', prompt);
}

/** POST /v1/chat/completions: `messages` with string content or text parts */
export function parseChatRequest(raw: unknown): ParsedRequest {
  const body = asBody(raw);
  const m = body['messages'];
  if (m === undefined || m === null) throw badField('messages', 'is required');
  if (!Array.isArray(m) || m.length === 0) throw badField('messages', 'must be a non-empty list of messages');
  const messages: ChatMessage[] = m.map((msg: unknown, i) => {
    const at = `messages[${i}]`;
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) throw badField(at, 'must be an object {role, content}');
    const { role, content } = msg as Body;
    if (typeof role !== 'string' || role.length === 0) throw badField(`${at}.role`, 'must be a non-empty string');
    return { role, content: messageText(content, `${at}.content`) };
  });
  return parseCommon(body, 'chat', { kind: 'chat', messages });
}

/** content: a string, null (an assistant turn with no text), or a list of {type: "text", text} parts */
function messageText(content: unknown, at: string): string {
  if (content === null || content === undefined) return '';
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content.map((part: unknown, j) => {
      const p = part as Body | null;
      if (typeof p !== 'object' || p === null || p['type'] !== 'text' || typeof p['text'] !== 'string') {
        throw badField(`${at}[${j}]`, 'only {"type": "text", "text": ...} parts are supported');
      }
      return p['text'];
    }).join('');
  }
  throw badField(at, 'must be a string or a list of text parts');
}
