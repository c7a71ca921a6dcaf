// The cuda backend's L2 prefetch settings (M1_PREFETCH_MB, M1_PREFETCH_KIND) are parsed without a GPU: defaults,
// the values each kind maps to, and bad values refused naming the variable.
import { describe, expect, it } from 'vitest';
import { prefetchSettings } from '../src/backend/cuda/index.js';

describe('prefetchSettings', () => {
  it('defaults to 16 MiB by the bulk prefetch; 0 turns it off; fractions of a MiB are bytes', () => {
    expect(prefetchSettings({})).toEqual({ bytes: 16 * 1024 * 1024, kind: 0 });
    expect(prefetchSettings({ M1_PREFETCH_MB: '0' })).toEqual({ bytes: 0, kind: 0 });
    expect(prefetchSettings({ M1_PREFETCH_MB: '0.5', M1_PREFETCH_KIND: 'lines-last' })).toEqual({ bytes: 524288, kind: 3 });
    expect(prefetchSettings({ M1_PREFETCH_KIND: 'bulk-last' }).kind).toBe(1);
    expect(prefetchSettings({ M1_PREFETCH_KIND: 'lines' }).kind).toBe(2);
  });
  it('refuses bad values, naming the variable', () => {
    for (const v of ['', ' ', '-1', 'x', '2000', 'NaN']) {
      expect(() => prefetchSettings({ M1_PREFETCH_MB: v })).toThrow(/M1_PREFETCH_MB: expected a number of MiB/);
    }
    expect(() => prefetchSettings({ M1_PREFETCH_KIND: 'tma' })).toThrow(/M1_PREFETCH_KIND: expected one of bulk, bulk-last, lines, lines-last, got 'tma'/);
  });
});
