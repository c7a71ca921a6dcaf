import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { saveWeights, writeConfigs, initModel, validateConfigs, configsOf } from '../src/model/checkpoint.js';
import { findPreset } from '../src/model/presets.js';
import { saveTokenizer } from '../src/model/tokenizer.js';
import { tinyTokenizerFiles } from '../src/model/tiny-tokenizer.js';
import { defaultTeacherDir, formatDemoTable, QUICK_BUDGET, runDemo, spreadAttentionLayers, type DemoSummary } from '../src/train/demo.js';
import { pairedGain, standardError } from '../src/train/demo-eval.js';

const be = new CpuBackend();

/** a tiny transformer teacher folder (random weights) when the shipped one is absent */
function teacherDir(): string {
  const shipped = (() => {
    try {
      return defaultTeacherDir();
    } catch {
      return null;
    }
  })();
  if (shipped && existsSync(join(shipped, 'model.safetensors'))) return shipped;
  const dir = mkdtempSync(join(tmpdir(), 'm1-demo-teacher-'));
  const p = findPreset('llama', 'tiny');
  const cfg = validateConfigs({ ...p.config }, null);
  const model = initModel(be, cfg, 0);
  writeConfigs(dir, configsOf(cfg), 'f32');
  saveWeights(dir, model);
  const files = tinyTokenizerFiles();
  saveTokenizer(dir, files.tokenizerJson, files.tokenizerConfig);
  return dir;
}

describe('m1 demo (--quick budgets)', () => {
  it('runs every stage and writes summary.json with an accuracy in [0, 1] per stage, and report.html', async () => {
    const out = mkdtempSync(join(tmpdir(), 'm1-demo-'));
    const s = await runDemo({ be, out, seed: 1, budget: QUICK_BUDGET, teacherDir: teacherDir(), log: () => {}, progress: false });
    const file = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as DemoSummary;
    expect(file).toEqual(JSON.parse(JSON.stringify(s)));
    expect(file.stages.map((r) => r.stage)).toEqual(['teacher', 'converted', 'distilled', 'sft', 'grpo']);
    for (const r of file.stages) {
      expect(r.accuracy).toBeGreaterThanOrEqual(0);
      expect(r.accuracy).toBeLessThanOrEqual(1);
      expect(r.maj_at_k).toBeGreaterThanOrEqual(0);
      expect(r.maj_at_k).toBeLessThanOrEqual(1);
      expect(r.n).toBe(QUICK_BUDGET.eval.n);
      expect(r.problems).toBe(QUICK_BUDGET.eval.problems);
      expect(r.seconds).toBeGreaterThan(0);
      expect(existsSync(join(r.model, 'config.json'))).toBe(true);
    }
    expect(file.speed.map((p) => p.length)).toEqual(QUICK_BUDGET.speed.lengths);
    for (const p of file.speed) expect(p.teacher_tokens_per_s).toBeGreaterThan(0);
    expect(file.curves.grpo_reward.length).toBe(QUICK_BUDGET.grpo.steps);
    expect(file.curves.distill.length).toBe(QUICK_BUDGET.distill.steps);
    expect(typeof file.grpo_vs_sft.exceeds_2se).toBe('boolean');
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    expect(html).toContain('<svg');
    expect(html).toContain('vs SFT on the same');
    expect(formatDemoTable(s)).toMatch(/^teacher\s/m);
  }, 60_000);

  it('attention layers are spread over the stack (M1 keeps ~1/4)', () => {
    expect(spreadAttentionLayers(4, 1)).toEqual([2]);
    expect(spreadAttentionLayers(8, 2)).toEqual([2, 6]);
    expect(spreadAttentionLayers(28, 6)).toEqual([2, 7, 11, 16, 21, 25]);
  });

  it('standard errors: SE of the mean, and the paired SE of a gain', () => {
    expect(standardError([0, 1, 0, 1])).toBeCloseTo(Math.sqrt(1 / 3 / 4), 12);
    const g = pairedGain([0.5, 0.25, 0, 1], [0.75, 0.5, 0.25, 1]);
    expect(g.gain).toBeCloseTo(0.1875, 12);
    // differences 0.25, 0.25, 0.25, 0: sd = 0.125, SE = 0.0625
    expect(g.se).toBeCloseTo(0.0625, 12);
    expect(g.z).toBeCloseTo(3, 12);
  });
});

describe('m1 demo --set (budget overrides)', () => {
  it('sets numbers, strings, booleans and lists by path, leaving the base budget untouched', async () => {
    const { applyBudgetOverrides } = await import('../src/cli/commands/demo.js');
    const b = applyBudgetOverrides(QUICK_BUDGET, ['grpo.lr=0.001', 'distill.lossOn=assistant', 'suffix=true', 'attnLayers=[0,2]', 'eval.problems=7']);
    expect(b.grpo.lr).toBe(0.001);
    expect(b.distill.lossOn).toBe('assistant');
    expect(b.suffix).toBe(true);
    expect(b.attnLayers).toEqual([0, 2]);
    expect(b.eval.problems).toBe(7);
    expect(QUICK_BUDGET.grpo.lr).not.toBe(0.001);
    expect(applyBudgetOverrides(QUICK_BUDGET, ['attnLayers=null']).attnLayers).toBeNull();
  });
  it('rejects unknown paths, wrong types and malformed entries with a message naming the entry', async () => {
    const { applyBudgetOverrides } = await import('../src/cli/commands/demo.js');
    expect(() => applyBudgetOverrides(QUICK_BUDGET, ['grpo.lrr=1'])).toThrow(/--set "grpo.lrr=1": no field "lrr"/);
    expect(() => applyBudgetOverrides(QUICK_BUDGET, ['grpox.lr=1'])).toThrow(/"grpox" is not a section/);
    expect(() => applyBudgetOverrides(QUICK_BUDGET, ['grpo.lr=fast'])).toThrow(/grpo.lr needs a number, got "fast"/);
    expect(() => applyBudgetOverrides(QUICK_BUDGET, ['suffix=yes'])).toThrow(/suffix needs true or false/);
    expect(() => applyBudgetOverrides(QUICK_BUDGET, ['attnLayers=0,2'])).toThrow(/attnLayers needs a JSON value/);
    expect(() => applyBudgetOverrides(QUICK_BUDGET, ['grpo.lr'])).toThrow(/expected path=value/);
    expect(() => applyBudgetOverrides(QUICK_BUDGET, ['distill.lossOn=everything'])).toThrow(/distill.lossOn must be "all" or "assistant"/);
  });
});
