import * as fs from 'node:fs';
import * as path from 'node:path';

// Crash-safe file replacement: bytes go to `<name>.tmp-<pid>` in the same directory (so the final
// rename never crosses file systems), are fsync'ed, and only then renamed over the final name.
// A reader therefore sees either the old complete file or the new complete file, never a prefix.

/** the temporary name a file is written under before it is renamed to `finalPath` */
export function tempPathFor(finalPath: string): string {
  return `${finalPath}.tmp-${process.pid}`;
}

/** write all of `bytes[start, end)` at the current position, looping over short writes */
export function writeAll(fd: number, bytes: Uint8Array, start = 0, end = bytes.byteLength): void {
  // One write call takes at most 2 GiB - 1 on Linux; 1 GiB pieces keep every call well inside it.
  const maxPiece = 1 << 30;
  let at = start;
  while (at < end) {
    const n = fs.writeSync(fd, bytes, at, Math.min(end - at, maxPiece));
    if (n <= 0) throw new Error(`write returned ${n}`);
    at += n;
  }
}

/** fsync a directory so that renames into it survive a power cut; a no-op where the OS refuses (Windows) */
export function fsyncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // Directories cannot be opened or fsync'ed on some platforms; the rename is still atomic there.
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * A file being written under its temporary name. Lifecycle: `write`* → `finish` (fsync + close, still
 * under the temporary name) → `commit` (rename to the final name). `abort` deletes the temporary file
 * at any point before `commit`. Splitting finish from commit lets a writer of several files rename
 * them all at the very end, so the window in which a crash leaves a mix of old and new files is a
 * few renames long rather than as long as the whole write.
 */
export class AtomicFile {
  readonly finalPath: string;
  readonly tempPath: string;
  private fd: number | undefined;
  private state: 'open' | 'finished' | 'committed' | 'aborted' = 'open';

  constructor(finalPath: string) {
    this.finalPath = finalPath;
    this.tempPath = tempPathFor(finalPath);
    this.fd = fs.openSync(this.tempPath, 'w');
  }

  write(bytes: Uint8Array, start = 0, end = bytes.byteLength): void {
    if (this.state !== 'open' || this.fd === undefined) throw new Error(`${this.tempPath}: write after ${this.state}`);
    writeAll(this.fd, bytes, start, end);
  }

  /** flush to disk and close; the file stays under its temporary name */
  finish(): void {
    if (this.state !== 'open' || this.fd === undefined) throw new Error(`${this.tempPath}: finish after ${this.state}`);
    const fd = this.fd;
    this.fd = undefined;
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    this.state = 'finished';
  }

  /** rename over the final name (finishing first if needed) */
  commit(): void {
    if (this.state === 'open') this.finish();
    if (this.state !== 'finished') throw new Error(`${this.tempPath}: commit after ${this.state}`);
    fs.renameSync(this.tempPath, this.finalPath);
    this.state = 'committed';
  }

  /** close and delete the temporary file; safe to call in any state, does nothing once committed */
  abort(): void {
    if (this.state === 'committed' || this.state === 'aborted') return;
    if (this.fd !== undefined) {
      try {
        fs.closeSync(this.fd);
      } catch {
        // already unusable; the unlink below is what matters
      }
      this.fd = undefined;
    }
    fs.rmSync(this.tempPath, { force: true });
    this.state = 'aborted';
  }
}

/** open `finalPath`'s temporary file for streaming writes; call `commit()` to publish it */
export function openAtomic(finalPath: string): AtomicFile {
  return new AtomicFile(finalPath);
}

/** replace `filePath` with `data` atomically (tmp + fsync + rename + fsync of the directory) */
export function writeFileAtomic(filePath: string, data: string | Uint8Array): void {
  const file = openAtomic(filePath);
  try {
    file.write(typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
    file.commit();
  } catch (e) {
    file.abort();
    throw e;
  }
  fsyncDirectory(path.dirname(filePath));
}
