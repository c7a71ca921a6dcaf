// Tokenizer + chat template: a thin, strict wrapper around @huggingface/tokenizers (tokenizer.json) and
// @huggingface/jinja (tokenizer_config.json's chat_template), so a Hugging Face model folder works as is.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { Environment, Interpreter, Template } from '@huggingface/jinja';
import { UserError } from '../util/errors.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string;
}

export interface EncodeOptions {
  /** add what the tokenizer.json post-processor adds (Llama-3.1+: `<|begin_of_text|>`); default false */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** drop tokens marked `special` in tokenizer.json (bos, eot, headers, pad) */
  skipSpecialTokens?: boolean;
}

export interface ChatTemplateOptions {
  /** append the assistant header so the model continues as the assistant */
  addGenerationPrompt?: boolean;
  /** extra template variables (e.g. `date_string`, `tools`); they may also replace `strftime_now` */
  extra?: Record<string, unknown>;
}

type JsonObject = Record<string, unknown>;

const UTF8_REPLACEMENT = '\uFFFD';

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** tokenizer_config.json stores special tokens as a string or as a serialized AddedToken `{content, ...}`. */
function specialTokenContent(config: JsonObject, field: string): string | null {
  const value = config[field];
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  if (isObject(value) && typeof value.content === 'string') return value.content;
  throw new UserError(`tokenizer_config.json: field "${field}" must be a string or {"content": string}`);
}

/** `chat_template` is a string, or (multi-template configs) a list of {name, template}; "default" wins. */
function chatTemplateSource(config: JsonObject): string | null {
  const value = config.chat_template;
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const entries = value.filter(
      (e): e is { name: string; template: string } =>
        isObject(e) && typeof e.name === 'string' && typeof e.template === 'string',
    );
    const chosen = entries.find((e) => e.name === 'default') ?? entries[0];
    if (chosen) return chosen.template;
  }
  throw new UserError('tokenizer_config.json: field "chat_template" must be a string or a list of {name, template}');
}

function readJsonFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UserError(`${path}: cannot read file (${(err as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UserError(`${path}: not valid JSON (${(err as Error).message})`);
  }
}

const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
const WEEKDAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];

/**
 * Python's `time.strftime` in the C locale, for the directives chat templates use (Llama-3.1+ renders
 * "Today Date: {{ strftime_now('%d %b %Y') }}"). English names always: @huggingface/jinja's own version
 * follows the host locale, which would change the prompt from one machine to the next.
 * Unknown directives pass through unchanged, as in glibc.
 */
export function strftime(date: Date, format: string): string {
  const pad = (n: number, width = 2): string => String(n).padStart(width, '0');
  return format.replace(/%[a-zA-Z%]/g, (directive) => {
    switch (directive) {
      case '%Y': return String(date.getFullYear());
      case '%y': return pad(date.getFullYear() % 100);
      case '%m': return pad(date.getMonth() + 1);
      case '%d': return pad(date.getDate());
      case '%e': return String(date.getDate()).padStart(2, ' ');
      case '%b': return MONTHS[date.getMonth()]!.slice(0, 3);
      case '%B': return MONTHS[date.getMonth()]!;
      case '%a': return WEEKDAYS[date.getDay()]!.slice(0, 3);
      case '%A': return WEEKDAYS[date.getDay()]!;
      case '%H': return pad(date.getHours());
      case '%I': return pad(((date.getHours() + 11) % 12) + 1);
      case '%p': return date.getHours() < 12 ? 'AM' : 'PM';
      case '%M': return pad(date.getMinutes());
      case '%S': return pad(date.getSeconds());
      case '%j': {
        const startOfYear = new Date(date.getFullYear(), 0, 1);
        const day = Math.round((new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime() - startOfYear.getTime()) / 86_400_000);
        return pad(day + 1, 3);
      }
      case '%%': return '%';
      default: return directive;
    }
  });
}

/** Python's range(), as jinja templates call it. */
function pythonRange(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0) throw new Error('chat template: range() step must not be zero');
  const out: number[] = [];
  for (let i = start; step > 0 ? i < stop : i > stop; i += step) out.push(i);
  return out;
}

/**
 * Template.render() declares its globals (strftime_now, raise_exception, ...) in the same scope as the
 * caller's variables and refuses to redeclare them, so ours could not replace its locale-dependent
 * strftime_now. Globals therefore go in a parent scope, the caller's variables in a child scope that
 * shadows it (so `extra` can still stub strftime_now, e.g. for a fixed date).
 */
function renderTemplate(template: Template, context: Record<string, unknown>): string {
  const globals = new Environment();
  const builtins: Record<string, unknown> = {
    true: true, false: false, none: null, True: true, False: false, None: null,
    range: pythonRange,
    strftime_now: (format: string) => strftime(new Date(), format),
    raise_exception: (message: string) => {
      throw new UserError(`chat template: ${message}`);
    },
  };
  for (const [name, value] of Object.entries(builtins)) globals.set(name, value);
  const scope = new Environment(globals);
  for (const [name, value] of Object.entries(context)) scope.set(name, value);
  const result = new Interpreter(scope).run(template.parsed);
  if (typeof result.value !== 'string') throw new Error('chat template: rendering did not produce a string');
  return result.value;
}

export class Tokenizer {
  readonly vocabSize: number;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  readonly padTokenId: number | null;
  /** token strings as the chat template sees them (`bos_token`, `eos_token`) */
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly padToken: string | null;

  private readonly inner: HfTokenizer;
  private readonly chatTemplate: Template | null;

  private constructor(inner: HfTokenizer, config: JsonObject, chatTemplate: string | null) {
    this.inner = inner;

    // Embedding rows must cover every id, including added tokens placed past the BPE vocabulary
    // (Llama-3: 128000 BPE tokens + 256 specials = 128256).
    let maxId = -1;
    for (const id of inner.get_vocab(true).values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;

    const resolve = (field: string): [string | null, number | null] => {
      const content = specialTokenContent(config, field);
      if (content === null) return [null, null];
      const id = inner.token_to_id(content);
      if (id === undefined) {
        throw new UserError(`tokenizer_config.json: ${field} "${content}" is not in the tokenizer.json vocabulary`);
      }
      return [content, id];
    };
    [this.bosToken, this.bosTokenId] = resolve('bos_token');
    [this.eosToken, this.eosTokenId] = resolve('eos_token');
    [this.padToken, this.padTokenId] = resolve('pad_token');

    if (chatTemplate === null) {
      this.chatTemplate = null;
    } else {
      try {
        this.chatTemplate = new Template(chatTemplate);
      } catch (err) {
        throw new UserError(`tokenizer_config.json: chat_template does not parse (${(err as Error).message})`);
      }
    }
  }

  /**
   * Load `tokenizer.json` (required) and `tokenizer_config.json` (optional) from a model folder.
   * A `chat_template.jinja` file (newer Hugging Face layout) supplies the template when the config has none.
   */
  static fromDir(dir: string): Tokenizer {
    const tokenizerPath = join(dir, 'tokenizer.json');
    if (!existsSync(tokenizerPath)) throw new UserError(`${tokenizerPath}: file not found`);
    const tokenizerJson = readJsonFile(tokenizerPath);
    if (!isObject(tokenizerJson)) throw new UserError(`${tokenizerPath}: expected a JSON object`);

    const configPath = join(dir, 'tokenizer_config.json');
    let config: JsonObject | null = null;
    if (existsSync(configPath)) {
      const parsed = readJsonFile(configPath);
      if (!isObject(parsed)) throw new UserError(`${configPath}: expected a JSON object`);
      config = parsed;
    }

    const templatePath = join(dir, 'chat_template.jinja');
    if ((config === null || config.chat_template == null) && existsSync(templatePath)) {
      config = { ...(config ?? {}), chat_template: readFileSync(templatePath, 'utf8') };
    }

    try {
      return Tokenizer.fromObjects(tokenizerJson, config);
    } catch (err) {
      throw new UserError(`${dir}: ${(err as Error).message}`);
    }
  }

  static fromObjects(tokenizerJson: object, tokenizerConfig: object | null): Tokenizer {
    if (!isObject(tokenizerJson)) throw new UserError('tokenizer.json: expected a JSON object');
    if (!isObject(tokenizerJson.model)) throw new UserError('tokenizer.json: missing object field "model"');
    if (!Array.isArray(tokenizerJson.added_tokens)) {
      throw new UserError('tokenizer.json: missing array field "added_tokens"');
    }
    if (tokenizerConfig !== null && !isObject(tokenizerConfig)) {
      throw new UserError('tokenizer_config.json: expected a JSON object');
    }
    const config: JsonObject = tokenizerConfig === null ? {} : { ...tokenizerConfig };
    let inner: HfTokenizer;
    try {
      inner = new HfTokenizer(tokenizerJson, config);
    } catch (err) {
      throw new UserError(`tokenizer.json: cannot build tokenizer (${(err as Error).message})`);
    }
    return new Tokenizer(inner, config, chatTemplateSource(config));
  }

  /**
   * Text → ids. Special-token strings inside `text` (e.g. `<|eot_id|>`) become their special ids, as in
   * Hugging Face's default; that is what lets a rendered chat template be encoded as plain text.
   */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new Error(`Tokenizer.encode: text must be a string, got ${typeof text}`);
    if (text.length === 0 && !opts.addSpecialTokens) return [];
    const ids = this.inner.encode(text, { add_special_tokens: opts.addSpecialTokens ?? false }).ids;
    for (let i = 0; i < ids.length; i++) {
      // A vocabulary without every byte and without unk_token leaves holes; never let them reach an embedding.
      if (!Number.isInteger(ids[i])) {
        throw new Error(`Tokenizer.encode: no token id for piece ${i} of ${JSON.stringify(text.slice(0, 40))} (no unk_token)`);
      }
    }
    return ids;
  }

  /**
   * Ids → text. Exact inverse of `encode` for byte-level BPE: Hugging Face's lossy
   * `clean_up_tokenization_spaces` (" ," → ",") is never applied, whatever the config says.
   */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    if (ids.length === 0) return '';
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize || this.inner.id_to_token(id) === undefined) {
        throw new Error(`Tokenizer.decode: ids[${i}] = ${id} is not a token id (vocabulary size ${this.vocabSize})`);
      }
    }
    return this.inner.decode(ids as number[], {
      skip_special_tokens: opts.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: false,
    });
  }

  tokenToId(token: string): number | null {
    return this.inner.token_to_id(token) ?? null;
  }

  idToToken(id: number): string | null {
    return this.inner.id_to_token(id) ?? null;
  }

  hasChatTemplate(): boolean {
    return this.chatTemplate !== null;
  }

  applyChatTemplate(messages: readonly ChatMessage[], opts: ChatTemplateOptions = {}): string {
    if (this.chatTemplate === null) {
      throw new UserError('tokenizer has no chat template (tokenizer_config.json has no "chat_template" field)');
    }
    if (!Array.isArray(messages)) throw new Error('applyChatTemplate: messages must be an array');
    messages.forEach((m, i) => {
      if (!isObject(m) || typeof m.role !== 'string' || typeof m.content !== 'string') {
        throw new Error(`applyChatTemplate: messages[${i}] must be {role: string, content: string}`);
      }
    });
    const context: Record<string, unknown> = {
      ...opts.extra,
      messages: messages.map((m) => ({ ...m })),
      bos_token: this.bosToken ?? '',
      eos_token: this.eosToken ?? '',
      pad_token: this.padToken ?? '',
      add_generation_prompt: opts.addGenerationPrompt ?? false,
    };
    return renderTemplate(this.chatTemplate, context);
  }

  /** The rendered template already starts with `<|begin_of_text|>`, so no post-processor BOS is added. */
  encodeChat(messages: readonly ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): number[] {
    return this.encode(this.applyChatTemplate(messages, opts), { addSpecialTokens: false });
  }
}

/**
 * Text for a stream of generated ids, piece by piece, never splitting a UTF-8 character: a token may
 * carry only part of a character's bytes, and decoding it alone gives U+FFFD.
 *
 * It decodes a short window of ids (not everything so far, which would be quadratic in the length of
 * a long reasoning trace): `ids[prefixStart:]`, minus the text of `ids[prefixStart:readStart]`. The
 * window starts one emitted step back so decoders whose output depends on the preceding token (e.g.
 * SentencePiece's leading-space rule) see the same context as a full decode. Text is emitted up to the
 * last character that is not U+FFFD; the window moves on once a decode ends on a complete character.
 * Concatenating every push() and the final flush() gives exactly decode(all ids).
 */
export class StreamDecoder {
  private readonly tok: Tokenizer;
  private readonly skipSpecialTokens: boolean;
  private ids: number[] = [];
  private prefixStart = 0;
  private readStart = 0;
  private prefixText = '';
  /** chars of the text after prefixText already returned */
  private emitted = 0;

  constructor(tok: Tokenizer, opts: DecodeOptions = {}) {
    this.tok = tok;
    this.skipSpecialTokens = opts.skipSpecialTokens ?? false;
  }

  /** Add one generated id; returns the newly completed text (often '' mid-character). */
  push(id: number): string {
    this.ids.push(id);
    const windowIds = this.ids.slice(this.prefixStart);
    const text = this.tok.decode(windowIds, { skipSpecialTokens: this.skipSpecialTokens });
    // A decoder that rewrote earlier text would make slicing wrong; wait for flush() rather than emit garbage.
    if (!text.startsWith(this.prefixText)) return '';
    const suffix = text.slice(this.prefixText.length);

    let stableEnd = suffix.length;
    while (stableEnd > 0 && suffix[stableEnd - 1] === UTF8_REPLACEMENT) stableEnd--;
    let out = '';
    if (stableEnd > this.emitted) {
      out = suffix.slice(this.emitted, stableEnd);
      this.emitted = stableEnd;
    }
    if (stableEnd === suffix.length && suffix.length > 0) {
      // Ends on a whole character: the bytes so far can no longer change, so the window can move.
      this.prefixStart = this.readStart;
      this.readStart = this.ids.length;
      this.prefixText = this.tok.decode(this.ids.slice(this.prefixStart, this.readStart), {
        skipSpecialTokens: this.skipSpecialTokens,
      });
      this.emitted = 0;
      this.ids = this.ids.slice(this.prefixStart);
      this.readStart -= this.prefixStart;
      this.prefixStart = 0;
    }
    return out;
  }

  /** End of stream: return what is left, including U+FFFD for bytes that never formed a character. */
  flush(): string {
    const text = this.tok.decode(this.ids.slice(this.prefixStart), { skipSpecialTokens: this.skipSpecialTokens });
    const out = text.slice(Math.min(text.length, this.prefixText.length + this.emitted));
    this.ids = [];
    this.prefixStart = 0;
    this.readStart = 0;
    this.prefixText = '';
    this.emitted = 0;
    return out;
  }
}

/** Write tokenizer.json and tokenizer_config.json; each goes to a temporary name first, then is renamed. */
export function saveTokenizer(dir: string, tokenizerJson: object, tokenizerConfig: object): void {
  mkdirSync(dir, { recursive: true });
  const files: [string, object][] = [
    ['tokenizer.json', tokenizerJson],
    ['tokenizer_config.json', tokenizerConfig],
  ];
  for (const [name, value] of files) {
    const path = join(dir, name);
    const tmp = `${path}.tmp-${process.pid}`;
    try {
      writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n');
      renameSync(tmp, path);
    } catch (err) {
      rmSync(tmp, { force: true });
      throw new UserError(`${path}: cannot write (${(err as Error).message})`);
    }
  }
}
