// m1 generate — sample continuations of one prompt with the batched engine; streams text, or prints JSON.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { BACKEND_NAMES, createBackend } from '../../backend/registry.js';
import { Engine, type SampleOutput } from '../../infer/engine.js';
import { loadGenerationDefaults } from '../../infer/generation-config.js';
import { MAX_TOP_LOGPROBS, samplingParams } from '../../infer/sampling.js';
import { loadModel } from '../../model/checkpoint.js';
import { Tokenizer } from '../../model/tokenizer.js';
import { UserError } from '../../util/errors.js';
import { addSamplingOptions, type SamplingFlags, idsFlag, intFlag } from '../options.js';

interface GenerateFlags extends SamplingFlags {
  model: string;
  prompt?: string;
  promptIds?: number[];
  chat?: boolean;
  n: number;
  maxTokens: number;
  seed?: number;
  stop?: string[];
  stopTokenIds?: number[];
  ignoreEos?: boolean;
  json?: boolean;
  topLogprobs?: number;
  cudaGraphs?: boolean;
  backend: string;
}

export function registerGenerate(program: Command): void {
  const cmd = program
    .command('generate')
    .description('generate continuations of a prompt (streams text; --json prints one object with every sample)')
    .requiredOption('--model <dir>', 'model folder')
    .option('--prompt <text>', 'prompt text (BOS is added when the tokenizer has one)')
    .option('--prompt-ids <list>', 'prompt as comma-separated token ids', idsFlag('--prompt-ids'))
    .option('--chat', 'wrap --prompt as a user message in the model\'s chat template');
  addSamplingOptions(cmd)
    .option('-n, --n <n>', 'samples of the prompt (they share one prefill)', intFlag('-n', { min: 1 }), 1)
    .option('--max-tokens <k>', 'most generated tokens per sample', intFlag('--max-tokens', { min: 1 }), 256)
    .option('--seed <s>', 'random seed (same seed, same samples)', intFlag('--seed', { min: 0 }))
    .option('--stop <strings...>', 'stop strings (the text is cut right before the first one)')
    .option('--stop-token-ids <list>', 'extra stop token ids', idsFlag('--stop-token-ids'))
    .option('--ignore-eos', 'do not stop at the model\'s eos tokens')
    .option('--json', 'print one JSON object {samples: [{token_ids, text, logprobs, finish_reason}], ...}')
    .option('--top-logprobs <k>', `with --json: the k most likely tokens at each position, k in [0, ${MAX_TOP_LOGPROBS}] (samples[i].top_logprobs)`,
      intFlag('--top-logprobs', { min: 0, max: MAX_TOP_LOGPROBS }))
    .option('--backend <name>', `compute backend: ${BACKEND_NAMES.join(' | ')}`, 'cpu')
    .option('--cuda-graphs', 'replay decode steps as recorded CUDA graphs (one per batch size; --backend cuda, ignored by the cpu backend)')
    .action(async (o: GenerateFlags) => {
      await runGenerate(o);
    });
}

async function runGenerate(o: GenerateFlags): Promise<void> {
  if ((o.prompt === undefined) === (o.promptIds === undefined)) throw new UserError('give exactly one of --prompt or --prompt-ids');
  if (o.chat && o.prompt === undefined) throw new UserError('--chat needs --prompt (a text message to wrap in the chat template)');
  if (o.topLogprobs !== undefined && !o.json) throw new UserError('--top-logprobs: the alternatives are printed with --json only; add --json');
  // check the sampling flags before the (slow) model load
  samplingParams({ temperature: o.temperature, topP: o.topP, topK: o.topK, minP: o.minP });
  const be = await createBackend(o.backend);
  const { model, cfg } = loadModel(o.model, be);
  const tok = existsSync(join(o.model, 'tokenizer.json')) ? Tokenizer.fromDir(o.model) : null;
  if (!tok && o.prompt !== undefined) throw new UserError(`--prompt: ${o.model} has no tokenizer.json; use --prompt-ids`);
  if (!tok && o.stop) throw new UserError(`--stop: ${o.model} has no tokenizer.json to decode text with`);

  let promptIds: number[];
  if (o.promptIds) promptIds = o.promptIds;
  else if (o.chat) promptIds = tok!.encodeChat([{ role: 'user', content: o.prompt! }], { addGenerationPrompt: true });
  else {
    promptIds = tok!.encode(o.prompt!, { addSpecialTokens: true });
    if (tok!.bosTokenId !== null && promptIds[0] !== tok!.bosTokenId) promptIds = [tok!.bosTokenId, ...promptIds];
  }

  const defaults = loadGenerationDefaults(o.model, cfg);
  const stopTokenIds = [...defaults.eosTokenIds];
  if (tok?.eosTokenId !== null && tok?.eosTokenId !== undefined && !stopTokenIds.includes(tok.eosTokenId)) stopTokenIds.push(tok.eosTokenId);
  const sampling = {
    ...defaults.sampling,
    ...Object.fromEntries(Object.entries({ temperature: o.temperature, topP: o.topP, topK: o.topK, minP: o.minP }).filter(([, v]) => v !== undefined)),
  };

  const engine = new Engine(model, {
    tokenizer: tok, stopTokenIds, maxBatch: Math.max(o.n, 1),
    // graphs plan paged attention for the whole context: size it to this prompt + --max-tokens
    ...(o.cudaGraphs ? { graphs: true, maxContext: Math.min(cfg.llama.maxPositionEmbeddings, promptIds.length + o.maxTokens) } : {}),
  });
  const streaming = !o.json && o.n === 1;
  const t0 = performance.now();
  let firstTokenAt: number | null = null;
  const handle = engine.addRequest({
    promptIds, n: o.n, sampling, maxTokens: o.maxTokens, seed: o.seed, stopStrings: o.stop, stopTokenIds: o.stopTokenIds,
    ignoreEos: o.ignoreEos, topLogprobs: o.topLogprobs,
    onEvent: (e) => {
      if (e.type === 'token') {
        firstTokenAt ??= performance.now();
        if (streaming) process.stdout.write(tok ? e.text : `${e.tokenId} `);
      } else if (e.type === 'finished' && !o.json && !streaming) {
        process.stdout.write(`--- sample ${e.sample} (${e.output.finishReason}) ---\n${formatSample(e.output)}\n`);
      }
    },
  });
  engine.runUntilIdle();
  const output = await handle.result;
  const seconds = (performance.now() - t0) / 1000;
  const generated = output.samples.reduce((s, x) => s + x.tokenIds.length, 0);
  if (o.json) {
    process.stdout.write(JSON.stringify({
      model: o.model,
      prompt_token_ids: output.promptTokenIds,
      samples: output.samples.map((s) => ({
        index: s.index, token_ids: s.tokenIds, text: s.text, logprobs: s.logprobs,
        // per generated token: its position's k most likely tokens, best first (text when the tokenizer knows the id)
        ...(s.topLogprobs ? { top_logprobs: s.topLogprobs.map((alts) => alts.map((a) => ({ token_id: a.tokenId, token: tokenText(tok, a.tokenId), logprob: a.logprob }))) } : {}),
        finish_reason: s.finishReason, stop_reason: s.stopReason,
      })),
      usage: { prompt_tokens: promptIds.length, completion_tokens: generated },
      seconds,
      time_to_first_token_s: firstTokenAt === null ? null : (firstTokenAt - t0) / 1000,
    }) + '\n');
    return;
  }
  if (streaming) process.stdout.write('\n');
  const s = output.samples[0]!;
  process.stderr.write(`[${generated} tokens in ${seconds.toFixed(2)} s, ${(generated / seconds).toFixed(1)} tok/s; finish_reason ${o.n === 1 ? s.finishReason : output.samples.map((x) => x.finishReason).join(',')}]\n`);
}

/** a token's own text, or null without a tokenizer or for an id it does not know */
function tokenText(tok: Tokenizer | null, id: number): string | null {
  return tok && id < tok.vocabSize && tok.idToToken(id) !== null ? tok.decode([id]) : null;
}

function formatSample(s: SampleOutput): string {
  return s.text ?? s.tokenIds.join(' ');
}
