import { describe, expect, it } from 'vitest';
import { renderDecodeReport, type DecodeResult } from '../bench/decode-report.js';
import { lineChart } from '../src/eval/report.js';

const result: DecodeResult = {
  date: '2026-11-29T07:00:00.000Z',
  backend: 'cuda',
  options: { prompt: 256, gen: 4096, lengthBatch: 128, bandwidth: 4.3, tflops: 790 },
  points: [
    { model: 'm1-3b', batch: 8, context: 256, fits: true, stepMs: 3.05, tokensPerS: 2620, rooflineFraction: 0.54 },
    { model: 'm1-3b', batch: 8, context: 4096, fits: true, stepMs: 3.39, tokensPerS: 2362, rooflineFraction: 0.53, peakBytes: 14.25 * 2 ** 30 },
    { model: 'llama-3.2-3b', batch: 512, context: 4096, fits: false },
    { model: 'llama-3.2-3b', batch: 8, context: 256, skipped: 'time budget' },
  ],
  batchSweep: [
    { batch: 8, gen: 4096, llamaSeconds: 16.6, m1Seconds: 13.4, speedup: 16.6 / 13.4 },
    { batch: 512, gen: 4096, llamaSeconds: null, m1Seconds: 62.6, speedup: null, llamaWaves: { batch: 256, waves: 2, seconds: 178 }, speedupWaves: 178 / 62.6 },
  ],
  lengthSweep: [{ batch: 128, gen: 4096, llamaSeconds: 50, m1Seconds: 24.1, speedup: 50 / 24.1 }],
};

describe('bench:decode HTML page', () => {
  it('draws the latency, speed-up, length and roofline charts and tables from a result, Llama\'s waves included', () => {
    const html = renderDecodeReport(result);
    expect(html.startsWith('<!doctype html>')).toBe(true);
    expect(html.match(/<svg /g)?.length).toBe(5);
    expect(html).toContain('Latency of 256 + 4096 tokens vs batch');
    // the waves: a grey point in the latency and speed-up charts and the table's cells
    expect(html).toContain('llama-3.2-3b in waves: x=512, 178 s');
    expect(html).toContain('against Llama in waves: x=512, 2.843×');
    expect(html).toContain('<td>178.0 (2 × 256)</td><td>62.6</td><td>×2.84 (waves)</td>');
    // a measured step (peak memory not recorded: files before the fifteenth session; recorded), a point that did not fit,
    // a skipped one
    expect(html).toContain('<td>m1-3b</td><td>8</td><td>256</td><td>3.05</td><td>2,620</td><td>54 %</td><td>–</td>');
    expect(html).toContain('<td>m1-3b</td><td>8</td><td>4096</td><td>3.39</td><td>2,362</td><td>53 %</td><td>14.3</td>');
    expect(html).toContain('<td colspan="4">no fit</td>');
    expect(html).toContain('skipped (time budget)');
    expect(html).not.toContain('<script');
    // the setup: an older file (no setup flags) ran zero weights and f32 states; a newer one says what it ran
    expect(html).toContain('zero weights, f32 Mamba states, the KV cache as allocated (zeros) with contiguous blocks, eager steps');
    const newer = renderDecodeReport({ ...result, options: { ...result.options, randomWeights: true, graphs: true, ssmDtype: 'bf16', kvFill: 'random', blockOrder: 'shuffled' } });
    expect(newer).toContain('random weights, bf16 Mamba states, the KV cache filled with random values with shuffled blocks, CUDA graphs');
  });

  it('lineChart draws plain numbers when yPercent is false, accuracies in percent by default', () => {
    const series = [{ name: 's', color: '#000', points: [[1, 0.2], [2, 0.4]] as [number, number][] }];
    const pctChart = lineChart({ title: 't', xLabel: 'x', yLabel: 'y', series });
    expect(pctChart).toContain('s: x=2, 40.0%');
    expect(pctChart).toMatch(/>40%<\/text>/);
    const num = lineChart({ title: 't', xLabel: 'x', yLabel: 'y', series: [{ ...series[0]!, points: [[1, 20], [2, 140]] }], yPercent: false, yUnit: ' s', legend: 'top-left' });
    expect(num).toContain('s: x=2, 140 s');
    expect(num).toMatch(/>100<\/text>/);
    expect(num).not.toContain('%<');
  });
});
