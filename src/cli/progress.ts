import cliProgress from 'cli-progress';

/**
 * A progress bar on stderr (stdout stays clean for JSON). Silent when stderr is not a terminal,
 * so logs and CI output are not flooded.
 */
export class Progress {
  private bar: cliProgress.SingleBar | null = null;

  constructor(total: number, label: string, unit = 'it') {
    if (!process.stderr.isTTY) return;
    this.bar = new cliProgress.SingleBar(
      {
        stream: process.stderr,
        format: `${label} |{bar}| {value}/{total} ${unit} | {rate}/s | ETA {eta_formatted} {detail}`,
        hideCursor: true,
        etaBuffer: 20,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(total, 0, { rate: '0.0', detail: '' });
    this.started = Date.now();
  }
  private started = Date.now();

  update(value: number, detail = ''): void {
    if (!this.bar) return;
    const secs = (Date.now() - this.started) / 1000;
    this.bar.update(value, { rate: secs > 0 ? (value / secs).toFixed(1) : '0.0', detail });
  }
  increment(detail = ''): void {
    if (!this.bar) return;
    this.update(((this.bar as unknown as { value: number }).value ?? 0) + 1, detail);
  }
  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}
