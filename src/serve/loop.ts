// Drives the shared engine for the server: steps while there is work, yielding to the event loop
// between steps (setImmediate) so HTTP requests keep arriving, streams flush and disconnects are seen.
// Engine.run() returns once idle, so every new request wakes the loop again.
import type { Engine, StepStats } from '../infer/engine.js';

export class EngineLoop {
  private running: Promise<void> | null = null;
  /** the error of a step that threw: the engine's state is unknown after it, so the loop stays stopped */
  failure: unknown = null;

  constructor(
    readonly engine: Engine,
    private readonly hooks: { afterStep?: (s: StepStats) => void; onError?: (e: unknown) => void } = {},
  ) {}

  /** start stepping unless already running; call after every addRequest */
  wake(): void {
    if (this.running || this.failure !== null) return;
    this.running = this.loop().finally(() => {
      this.running = null;
      // a request may have joined between the last hasWork() and this callback
      if (this.failure === null && this.engine.hasWork()) this.wake();
    });
  }

  /** resolves once the engine is idle */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private async loop(): Promise<void> {
    while (this.engine.hasWork()) {
      try {
        const stats = this.engine.step();
        this.hooks.afterStep?.(stats);
      } catch (e) {
        this.failure = e ?? new Error('engine step failed');
        // the owner fails the requests in flight; nothing more is stepped
        this.hooks.onError?.(e);
        return;
      }
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
}
