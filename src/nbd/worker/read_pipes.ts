/**
 * Zero-copy READs in a Worker: the data is spliced from the export's file
 * into a pipe (the pipe takes references to the page cache, nothing is
 * copied), and later from the pipe to the socket (blocking_stream.ts), so
 * the Worker copies no READ byte itself, where pread + send copy each twice.
 *
 * Design note. Filling the pipe before the reply's header is written is what
 * keeps errors clean: a failed or short read is known while nothing has been
 * sent, and the request gets its error reply as with pread. A pipe holds at
 * most its capacity, asked for as {@link PIPE_BYTES} (a pipe over the
 * system's limits gets less; whatever F_GETPIPE_SZ then says is used), so
 * larger READs, and READs while {@link MAX_PIPES} pipes wait for the socket
 * (a client slow to read its replies), go the pread way. A pipe that was not
 * drained whole is closed rather than reused. Pages referenced by a pipe
 * show writes made after the splice; only a WRITE concurrent with the READ
 * over the same bytes can land there, which NBD leaves unordered anyway.
 *
 * @module
 */

import type { PipedData } from "../export.ts";
import { Errno, errno, type Libc, libc, Sys } from "./libc.ts";

/** Pipe capacity asked for: nbdcopy's and qemu-img's usual request (256 KiB). */
const PIPE_BYTES = 256 << 10;
/** Most pipes one Worker holds (each counts against the user's pipe pages). */
const MAX_PIPES = 64;

/** One pipe: its ends, its capacity, and the bytes it holds while in use. */
class Pipe implements PipedData {
  length = 0;

  constructor(
    readonly fd: number,
    readonly writeFd: number,
    readonly capacity: number,
    readonly pool: ReadPipes,
  ) {}

  release(drained: boolean): void {
    this.pool.give(this, drained);
  }
}

/** The pipes of one Worker, and the splice that fills them from a file. */
export class ReadPipes {
  readonly #libc: Libc = libc();
  readonly #idle: Pipe[] = [];
  readonly #offset = new BigInt64Array(1);
  readonly #offsetPointer = Deno.UnsafePointer.of(this.#offset);
  #open = 0;

  /**
   * Splices `length` bytes of `fd` at `offset` into a pipe: the pipe, or
   * undefined when no pipe can take them now; throws an Error with `errno`
   * when the read fails (EIO for an end of file before `length`).
   */
  fill(fd: number, offset: number, length: number): PipedData | undefined {
    const pipe = this.#take(length);
    if (pipe === undefined) return undefined;
    this.#offset[0] = BigInt(offset);
    for (let done = 0; done < length;) {
      const n = Number(
        this.#libc.splice(fd, this.#offsetPointer, pipe.writeFd, null, BigInt(length - done), 2),
      );
      if (n > 0) {
        done += n;
        continue;
      }
      const code = n === 0 ? Errno.EIO : errno();
      if (code === Errno.EINTR) continue;
      this.#close(pipe);
      throw Object.assign(new Error(`splice from the device failed with errno ${code}`), {
        errno: code,
      });
    }
    pipe.length = length;
    return pipe;
  }

  /** Takes `pipe` back: kept for reuse when `drained`, else closed (it may hold bytes). */
  give(pipe: Pipe, drained: boolean): void {
    if (drained) this.#idle.push(pipe);
    else this.#close(pipe);
  }

  /** Closes every idle pipe (those still queued close as they are released undrained). */
  close(): void {
    for (const pipe of this.#idle.splice(0)) this.#close(pipe);
  }

  /** An idle pipe, or a new one, that holds `length` bytes; undefined if none can. */
  #take(length: number): Pipe | undefined {
    const idle = this.#idle.pop();
    if (idle !== undefined) {
      if (idle.capacity >= length) return idle;
      this.#idle.push(idle);
      return undefined;
    }
    if (this.#open >= MAX_PIPES) return undefined;
    const ends = new Int32Array(2);
    if (this.#libc.pipe2(new Uint8Array(ends.buffer), Sys.O_CLOEXEC | Sys.O_NONBLOCK) !== 0) {
      return undefined;
    }
    this.#libc.fcntl(ends[1], Sys.F_SETPIPE_SZ, PIPE_BYTES);
    const capacity = this.#libc.fcntl(ends[1], Sys.F_GETPIPE_SZ, 0);
    const pipe = new Pipe(ends[0], ends[1], capacity, this);
    this.#open++;
    if (capacity >= length) return pipe;
    this.#idle.push(pipe);
    return undefined;
  }

  #close(pipe: Pipe): void {
    this.#libc.close(pipe.fd);
    this.#libc.close(pipe.writeFd);
    this.#open--;
  }
}
