// A model folder → a ready OpenAIServer: backend, weights, tokenizer (when the folder has one), the
// stop ids and sampling defaults of config.json / generation_config.json, and one shared engine.
// `m1 serve` and bench/serve.ts both start servers this way.
import { existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { createBackend } from '../backend/registry.js';
import { Engine } from '../infer/engine.js';
import { loadGenerationDefaults } from '../infer/generation-config.js';
import { loadModel } from '../model/checkpoint.js';
import { Tokenizer } from '../model/tokenizer.js';
import { OpenAIServer } from './server.js';

export interface ServeOptions {
  modelDir: string;
  backend?: string;
  /** the model id of the API; default the folder's name */
  modelName?: string;
  maxBatch?: number;
  maxQueue?: number;
  /** longest sequence; default the model's max_position_embeddings */
  maxContext?: number;
  /** decode with recorded CUDA graphs (EngineOptions.graphs) */
  graphs?: boolean;
  drainTimeoutMs?: number;
  log?: (line: string) => void;
}

export async function createServerFromDir(o: ServeOptions): Promise<OpenAIServer> {
  const be = await createBackend(o.backend ?? 'cpu');
  const { model, cfg } = loadModel(o.modelDir, be);
  const tokenizer = existsSync(join(o.modelDir, 'tokenizer.json')) ? Tokenizer.fromDir(o.modelDir) : null;
  const defaults = loadGenerationDefaults(o.modelDir, cfg);
  const stopTokenIds = [...defaults.eosTokenIds];
  if (tokenizer?.eosTokenId != null && !stopTokenIds.includes(tokenizer.eosTokenId)) stopTokenIds.push(tokenizer.eosTokenId);
  const engine = new Engine(model, { tokenizer, stopTokenIds, maxBatch: o.maxBatch, maxContext: o.maxContext, graphs: o.graphs ?? false });
  return new OpenAIServer({
    engine, tokenizer, modelName: o.modelName ?? basename(resolve(o.modelDir)), maxQueue: o.maxQueue,
    samplingDefaults: defaults.sampling, drainTimeoutMs: o.drainTimeoutMs, log: o.log,
  });
}
