// Paged KV cache bookkeeping (vLLM's block manager, host side only): a pool of fixed-size blocks with
// reference counts, and a block table per sequence. The tensors live in the engine's LayerStates; this
// file only decides which block every token goes to.
//
// Sharing: n samples of one prompt hold the prompt's blocks together (refcount n). Sequences only
// append, so a shared *full* block is never written again; the one block that can be written while
// shared is a partially filled last block, and `appendSlot` copies it first (copy-on-write) and reports
// the copy so the engine can apply it to every attention layer's cache before the step.
import { UserError } from '../util/errors.js';

export class KvBlockPool {
  private readonly refs: number[] = [];
  private free: number[] = [];
  private _capacity = 0;

  /**
   * @param grow called with the new capacity before blocks past the old one are handed out; the engine
   *   enlarges its cache tensors there. The pool doubles, up to maxBlocks.
   */
  constructor(readonly blockSize: number, initialBlocks: number, readonly maxBlocks: number, private readonly grow: (capacity: number) => void) {
    if (!(Number.isInteger(blockSize) && blockSize >= 1)) throw new Error(`KvBlockPool: blockSize must be a positive integer, got ${blockSize}`);
    if (!(Number.isInteger(maxBlocks) && maxBlocks >= 1)) throw new Error(`KvBlockPool: maxBlocks must be a positive integer, got ${maxBlocks}`);
    this.extend(Math.min(Math.max(1, initialBlocks), maxBlocks));
  }

  get capacity(): number {
    return this._capacity;
  }
  /** blocks held by at least one sequence */
  get used(): number {
    return this._capacity - this.free.length;
  }
  /** blocks that can still be handed out, growing the pool if needed */
  get available(): number {
    return this.maxBlocks - this.used;
  }
  refCount(block: number): number {
    return this.refs[block] ?? 0;
  }

  private extend(capacity: number): void {
    const old = this._capacity;
    for (let b = old; b < capacity; b++) this.refs.push(0);
    // lowest ids first, so a fresh pool hands out blocks 0, 1, 2, …
    const added: number[] = [];
    for (let b = capacity - 1; b >= old; b--) added.push(b);
    this.free = [...added, ...this.free];
    this._capacity = capacity;
  }

  allocate(): number {
    if (this.free.length === 0) {
      if (this._capacity >= this.maxBlocks) {
        throw new UserError(`KV cache is full: all ${this.maxBlocks} blocks of ${this.blockSize} tokens are in use (raise maxKvBlocks)`);
      }
      const next = Math.min(this.maxBlocks, this._capacity * 2);
      this.grow(next);
      this.extend(next);
    }
    const b = this.free.pop()!;
    this.refs[b] = 1;
    return b;
  }

  retain(block: number): void {
    if (this.refCount(block) <= 0) throw new Error(`KvBlockPool.retain: block ${block} is not allocated`);
    this.refs[block]!++;
  }

  release(block: number): void {
    if (this.refCount(block) <= 0) throw new Error(`KvBlockPool.release: block ${block} is not allocated (double free?)`);
    if (--this.refs[block]! === 0) this.free.push(block);
  }
}

/** a pending copy of one KV block into another (applied to every attention layer's K and V cache) */
export interface BlockCopy {
  src: number;
  dst: number;
}

/** the blocks of one sequence, in token order; `length` tokens are written (or about to be) */
export class BlockTable {
  readonly blocks: number[] = [];
  length = 0;
  constructor(private readonly pool: KvBlockPool) {}

  /** blocks needed to hold `tokens` tokens */
  static blocksFor(tokens: number, blockSize: number): number {
    return Math.ceil(tokens / blockSize);
  }

  /** flat KV slots (block * blockSize + offset) for the next `count` tokens, allocating blocks as needed */
  appendSlots(count: number, out: Int32Array, outOffset = 0, copies?: BlockCopy[]): void {
    for (let i = 0; i < count; i++) out[outOffset + i] = this.appendSlot(copies);
  }

  /**
   * The flat KV slot of the next token. A shared last block is copied first (copy-on-write); the copy is
   * pushed to `copies` (which must be applied to the caches before the token is written).
   */
  appendSlot(copies?: BlockCopy[]): number {
    const bs = this.pool.blockSize;
    const pos = this.length;
    const bi = Math.floor(pos / bs);
    if (bi === this.blocks.length) this.blocks.push(this.pool.allocate());
    else if (this.pool.refCount(this.blocks[bi]!) > 1) {
      if (!copies) throw new Error('BlockTable.appendSlot: the last block is shared and no copy list was given');
      const src = this.blocks[bi]!;
      const dst = this.pool.allocate();
      copies.push({ src, dst });
      this.pool.release(src);
      this.blocks[bi] = dst;
    }
    this.length = pos + 1;
    return this.blocks[bi]! * bs + (pos % bs);
  }

  /** a table holding the same tokens in the same blocks (each block's refcount goes up by one) */
  fork(): BlockTable {
    const t = new BlockTable(this.pool);
    for (const b of this.blocks) {
      this.pool.retain(b);
      t.blocks.push(b);
    }
    t.length = this.length;
    return t;
  }

  /** give every block back (shared ones stay with their other holders) */
  release(): void {
    for (const b of this.blocks) this.pool.release(b);
    this.blocks.length = 0;
    this.length = 0;
  }
}
