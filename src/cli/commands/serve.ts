// m1 serve — an OpenAI-compatible HTTP server over the continuous-batching engine. Runs until SIGTERM
// or SIGINT, then drains: stops accepting, finishes the requests in flight, closes, exits 0.
import type { Command } from 'commander';
import { BACKEND_NAMES } from '../../backend/registry.js';
import { createServerFromDir } from '../../serve/load.js';
import { intFlag } from '../options.js';

interface ServeFlags {
  model: string;
  host: string;
  port: number;
  maxBatch: number;
  maxQueue: number;
  maxContext?: number;
  servedModelName?: string;
  drainTimeout: number;
  backend: string;
  cudaGraphs?: boolean;
}

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('serve a model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models, /health, /metrics)')
    .requiredOption('--model <dir>', 'model folder')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port (0: any free port)', intFlag('--port', { min: 0, max: 65535 }), 8000)
    .option('--max-batch <n>', 'most sequences decoded together (a request with n samples counts n)', intFlag('--max-batch', { min: 1 }), 64)
    .option('--max-queue <n>', 'waiting requests beyond which new ones are refused with 429', intFlag('--max-queue', { min: 1 }), 256)
    .option('--max-context <n>', 'longest sequence, prompt + generated (default: max_position_embeddings)', intFlag('--max-context', { min: 2 }))
    .option('--served-model-name <name>', 'model id of the API (default: the folder name)')
    .option('--drain-timeout <s>', 'on SIGTERM, seconds to let requests finish before cancelling them', intFlag('--drain-timeout', { min: 0 }), 600)
    .option('--backend <name>', `compute backend: ${BACKEND_NAMES.join(' | ')}`, 'cpu')
    .option('--cuda-graphs', 'replay decode steps as recorded CUDA graphs (one per batch size; --backend cuda, ignored by the cpu backend); set --max-context to what requests need')
    .action(async (o: ServeFlags) => {
      await runServe(o);
    });
}

async function runServe(o: ServeFlags): Promise<void> {
  const log = (line: string) => process.stderr.write(`[m1 serve] ${line}\n`);
  const server = await createServerFromDir({
    modelDir: o.model, backend: o.backend, modelName: o.servedModelName, maxBatch: o.maxBatch, maxQueue: o.maxQueue,
    maxContext: o.maxContext, graphs: o.cudaGraphs === true, drainTimeoutMs: o.drainTimeout * 1000, log,
  });
  const url = await server.listen(o.host, o.port);
  log(`serving "${server.modelName}" on ${url} (max batch ${server.engine.maxBatch}, max queue ${server.maxQueue}, context ${server.engine.maxContext})`);
  await new Promise<void>((resolve, reject) => {
    const stop = (signal: string) => {
      log(`${signal}: draining (send it again to exit at once)`);
      // a second signal means "now": skip the drain
      process.once(signal as NodeJS.Signals, () => process.exit(1));
      server.drain().then(resolve, reject);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  log('drained; bye');
}
