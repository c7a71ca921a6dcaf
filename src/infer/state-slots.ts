// Recurrent-state slots: every running sequence owns one row (slot) of each Mamba layer's conv and SSM
// state pools. The state is constant-size per sequence, which is the whole point of the hybrid: a slot
// costs the same at token 10 and at token 30 000.
//
// A slot handed out again carries whatever its last owner left there. That is harmless because a slot
// is only ever (re)filled by a prefill, whose stateOut overwrites the whole conv window (zero-padded
// when the prompt is shorter than K−1) and the whole SSM state, or by copyRows from a sibling's slot.
// test/engine.test.ts checks it.
export class StateSlotPool {
  private free: number[] = [];
  private _capacity = 0;
  private inUse = 0;

  /** @param grow called with the new capacity before slots past the old one are handed out (doubles up to maxSlots) */
  constructor(initialSlots: number, readonly maxSlots: number, private readonly grow: (capacity: number) => void) {
    if (!(Number.isInteger(maxSlots) && maxSlots >= 1)) throw new Error(`StateSlotPool: maxSlots must be a positive integer, got ${maxSlots}`);
    this.extend(Math.min(Math.max(1, initialSlots), maxSlots));
  }

  get capacity(): number {
    return this._capacity;
  }
  get used(): number {
    return this.inUse;
  }
  get available(): number {
    return this.maxSlots - this.inUse;
  }

  private extend(capacity: number): void {
    // lowest ids first, so a fresh pool hands out slots 0, 1, 2, …
    const added: number[] = [];
    for (let s = capacity - 1; s >= this._capacity; s--) added.push(s);
    this.free = [...added, ...this.free];
    this._capacity = capacity;
  }

  allocate(): number {
    if (this.free.length === 0) {
      if (this._capacity >= this.maxSlots) throw new Error(`StateSlotPool: all ${this.maxSlots} state slots are in use`);
      const next = Math.min(this.maxSlots, this._capacity * 2);
      this.grow(next);
      this.extend(next);
    }
    this.inUse++;
    return this.free.pop()!;
  }

  release(slot: number): void {
    if (!(slot >= 0 && slot < this._capacity) || this.free.includes(slot)) throw new Error(`StateSlotPool.release: slot ${slot} is not in use`);
    this.inUse--;
    this.free.push(slot);
  }
}
