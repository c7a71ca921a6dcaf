// A real Hugging Face tokenizer.json for tiny models and the offline demo: byte-level BPE with the 256
// byte tokens and no merges (token id == byte value), plus Llama-3's special tokens and chat template,
// so every code path that handles Llama-3 (headers, <|eot_id|> as eos, pad id) runs unchanged on it.

/** Special tokens, placed right after the 256 byte tokens; vocabulary size 262. */
export const TINY_SPECIAL_TOKENS: Readonly<Record<string, number>> = Object.freeze({
  '<|begin_of_text|>': 256,
  '<|end_of_text|>': 257,
  '<|start_header_id|>': 258,
  '<|end_header_id|>': 259,
  '<|eot_id|>': 260,
  '<|finetune_right_pad_id|>': 261,
});

export const TINY_VOCAB_SIZE = 262;

/**
 * Llama-3.1's template without the system-prompt date block: bos, then per message
 * `<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>`. Content is trimmed, as the real
 * template does, so training text and inference prompts agree with Llama-3's.
 */
const TINY_CHAT_TEMPLATE =
  '{{- bos_token }}' +
  '{%- for message in messages %}' +
  "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}" +
  '{%- endfor %}' +
  '{%- if add_generation_prompt %}' +
  "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}" +
  '{%- endif %}';

/**
 * GPT-2's byte → printable-character map used by ByteLevel (pre-tokenizer and decoder): printable
 * Latin-1 bytes map to themselves, the rest to U+0100 onwards, so every token is a visible string.
 */
function bytesToUnicode(): string[] {
  const direct: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) direct.push(b);
  for (let b = 0xa1; b <= 0xac; b++) direct.push(b);
  for (let b = 0xae; b <= 0xff; b++) direct.push(b);
  const table: string[] = new Array<string>(256);
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = direct.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + shifted++);
  }
  return table;
}

export function tinyTokenizerFiles(): { tokenizerJson: object; tokenizerConfig: object } {
  const byteChars = bytesToUnicode();
  const vocab: Record<string, number> = {};
  byteChars.forEach((ch, byte) => {
    vocab[ch] = byte;
  });

  const addedTokens = Object.entries(TINY_SPECIAL_TOKENS).map(([content, id]) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));

  const bos = '<|begin_of_text|>';
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    // add_prefix_space false: encode must not invent a leading space, or decode(encode(s)) != s.
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    // Same shape as Llama-3.1's: encode(..., addSpecialTokens) prepends <|begin_of_text|>.
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
          special_tokens: { [bos]: { id: bos, ids: [TINY_SPECIAL_TOKENS[bos]], tokens: [bos] } },
        },
      ],
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: [] as string[][],
    },
  };

  const addedTokensDecoder: Record<string, object> = {};
  for (const t of addedTokens) {
    const { id, ...rest } = t;
    addedTokensDecoder[String(id)] = rest;
  }
  const tokenizerConfig = {
    added_tokens_decoder: addedTokensDecoder,
    bos_token: bos,
    eos_token: '<|eot_id|>',
    pad_token: '<|finetune_right_pad_id|>',
    chat_template: TINY_CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    model_input_names: ['input_ids', 'attention_mask'],
    model_max_length: 131072,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
  return { tokenizerJson, tokenizerConfig };
}
