/**
 * Copies between two open files inside the kernel, off the calling thread:
 * the data never passes through a JavaScript buffer, and the event loop goes
 * on serving sockets while the copy runs on one of Deno's blocking threads
 * (FFI `nonblocking` calls), so it can use another core.
 *
 * Design note. Two ways, tried in order for each pair of descriptors:
 * `copy_file_range(2)` (one file system: the file system's own copy, or a
 * clone where it can), and where it refuses the pair, `splice(2)` through a
 * pipe (file to pipe takes page references, pipe to file copies once; works
 * across file systems and for block devices, unlike copy_file_range since
 * Linux 5.19). Offsets go by pointer (loff_t), one pair of slots per copy
 * in flight, so the descriptors' file positions are never used or moved.
 * Pipes come from a small pool, one copy per pipe at a time; a pipe whose
 * copy failed is closed rather than reused (it may hold data). Writers into
 * one file queue on its lock in the kernel, spinning on the core the event
 * loop needs, so one pipe at a time drains into a given file (reads from the
 * sources into pipes still overlap, which matters for a cold disk) and
 * copy_file_range runs at most four at a time per destination.
 * - errno is thread-local, so it cannot be read after a nonblocking call.
 *   The first call for a pair is therefore made synchronously on the calling
 *   thread and its errno read in the next statement: EXDEV, EINVAL, ENOSYS,
 *   EOPNOTSUPP or EBADF refuse that way for the pair, for good. A later
 *   nonblocking call that fails is made again synchronously with the same
 *   arguments (a copy into space the caller owns, or out of a pipe that
 *   still holds the data, is idempotent) to learn its errno, so real
 *   failures (EIO, ENOSPC) report their cause.
 * - Short counts are continued; a copy that ends early (the source shrank)
 *   is an EIO error. When both ways refuse a pair, {@link copyFileRange}
 *   resolves "refused" and the caller reads and writes instead. libc is
 *   opened on first use; without FFI every copy is refused.
 *
 * @module
 */

import { SharedLibc } from "./shared_libc.ts";

const EIO = 5;
const EBADF = 9;
const EINTR = 4;
const EXDEV = 18;
const EINVAL = 22;
const ENOSPC = 28;
const ENOSYS = 38;
const EOPNOTSUPP = 95;
const REFUSING = new Set([EXDEV, EINVAL, ENOSYS, EOPNOTSUPP, EBADF]);
const O_CLOEXEC = 0o2000000;
const F_SETPIPE_SZ = 1031;
const F_GETPIPE_SZ = 1032;
/** Pipe capacity asked for: a whole 256 KiB chunk per round trip (the default is 64 KiB). */
const PIPE_BYTES = 256 << 10;
/** Most idle pipes kept. */
const POOL_PIPES = 64;

const copyArgs = ["i32", "pointer", "i32", "pointer", "usize", "u32"] as const;
const symbols = {
  copy_file_range: { parameters: copyArgs, result: "isize" },
  copy_file_range_async: {
    name: "copy_file_range",
    parameters: copyArgs,
    result: "isize",
    nonblocking: true,
  },
  splice: { parameters: copyArgs, result: "isize" },
  splice_async: { name: "splice", parameters: copyArgs, result: "isize", nonblocking: true },
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type Symbols = Deno.DynamicLibrary<typeof symbols>["symbols"];
type CopyCall = "copy_file_range" | "splice";

const shared = new SharedLibc(symbols);

/** Outcome of {@link copyFileRange}: done, or refused for this pair of files (read and write instead). */
export type KernelCopyResult = "copied" | "refused";

/** Where a {@link copyFileRange} copies from and to. */
export interface KernelCopyRange {
  /** Byte offset in the source. */
  fromOffset: number;
  /** Destination descriptor. */
  to: number;
  /** Byte offset in the destination. */
  toOffset: number;
  /** Bytes to copy. */
  length: number;
}

/** What a pair "from:to" is known to do: its way of copying once one worked, or refused. */
export type PairWay = CopyCall | "refused";
const pairs = new Map<string, PairWay>();

interface Pipe {
  read: number;
  write: number;
  bytes: number;
}
const idlePipes: Pipe[] = [];

class CopyError extends Error {
  readonly code: string;
  readonly errno: number;
  constructor(message: string, errno: number) {
    super(message);
    this.errno = errno;
    this.code = errno === ENOSPC ? "ENOSPC" : "EIO";
  }
}

/** At most `width` tasks at a time per descriptor; the others wait in order. */
class SlotLimiter {
  readonly #width: number;
  readonly #slots = new Map<number, { busy: number; waiting: Array<() => void> }>();

  constructor(width: number) {
    this.#width = width;
  }

  async run<T>(fd: number, task: () => Promise<T>): Promise<T> {
    let entry = this.#slots.get(fd);
    if (entry === undefined) {
      entry = { busy: 0, waiting: [] };
      this.#slots.set(fd, entry);
    }
    const slot = entry;
    if (slot.busy >= this.#width) await new Promise<void>((resolve) => slot.waiting.push(resolve));
    else slot.busy += 1;
    try {
      return await task();
    } finally {
      const next = slot.waiting.shift();
      if (next !== undefined) next();
      else if (--slot.busy === 0) this.#slots.delete(fd);
    }
  }
}

/** Writers into one file queue on its lock in the kernel, spinning: one pipe drains into a file at a time. */
const spliceWriters = new SlotLimiter(1);
/** copy_file_range both reads and writes: a few at a time into one file, so reads of a cold source overlap. */
const directCopies = new SlotLimiter(4);

function errnoOf(lib: Symbols): number {
  const location = lib.__errno_location();
  return location === null ? EIO : new Deno.UnsafePointerView(location).getInt32();
}

function pointerOf(slot: BigInt64Array): Deno.PointerValue {
  return Deno.UnsafePointer.of(slot);
}

/** One call of `call`, nonblocking when `offThread`, else synchronous; its count, or -errno (-1 off the thread). */
async function callOnce(
  lib: Symbols,
  call: CopyCall,
  args: [number, Deno.PointerValue, number, Deno.PointerValue, number],
  offThread: boolean,
): Promise<number> {
  const [from, fromOffset, to, toOffset, length] = args;
  if (offThread) {
    const fn = call === "splice" ? lib.splice_async : lib.copy_file_range_async;
    const result = Number(await fn(from, fromOffset, to, toOffset, BigInt(length), 0));
    return result >= 0 ? result : -1;
  }
  const fn = call === "splice" ? lib.splice : lib.copy_file_range;
  for (;;) {
    const result = Number(fn(from, fromOffset, to, toOffset, BigInt(length), 0));
    if (result >= 0) return result;
    const errno = errnoOf(lib);
    if (errno !== EINTR) return -errno;
  }
}

/**
 * One step of a copy: nonblocking once the pair is known to work, retried
 * synchronously on failure to learn errno; count or -errno. `reset` puts the
 * offset slots back before the retry (a failed call may have moved them).
 */
async function step(
  lib: Symbols,
  options: {
    call: CopyCall;
    args: [number, Deno.PointerValue, number, Deno.PointerValue, number];
    known: boolean;
    reset: () => void;
  },
): Promise<number> {
  if (options.known) {
    const result = await callOnce(lib, options.call, options.args, true);
    if (result >= 0) return result;
    options.reset();
  }
  return await callOnce(lib, options.call, options.args, false);
}

function takePipe(lib: Symbols): Pipe | number {
  const idle = idlePipes.pop();
  if (idle !== undefined) return idle;
  const fds = new Int32Array(2);
  if (lib.pipe2(new Uint8Array(fds.buffer), O_CLOEXEC) !== 0) return -errnoOf(lib);
  lib.fcntl(fds[1], F_SETPIPE_SZ, PIPE_BYTES);
  const bytes = lib.fcntl(fds[1], F_GETPIPE_SZ, 0);
  return { read: fds[0], write: fds[1], bytes: bytes > 0 ? bytes : 65536 };
}

function closePipe(lib: Symbols, pipe: Pipe): void {
  lib.close(pipe.read);
  lib.close(pipe.write);
}

/**
 * Copies with copy_file_range: 0 when done, the errno when the first call
 * failed (maybe a refusal: nothing was written); throws a CopyError when a
 * later call failed or the source ended early.
 */
async function copyDirect(
  lib: Symbols,
  from: number,
  range: KernelCopyRange,
  known: boolean,
): Promise<number> {
  const offsets = new BigInt64Array(2);
  const fromSlot = offsets.subarray(0, 1);
  const toSlot = offsets.subarray(1, 2);
  let done = 0;
  while (done < range.length) {
    const reset = () => {
      offsets[0] = BigInt(range.fromOffset + done);
      offsets[1] = BigInt(range.toOffset + done);
    };
    reset();
    const count = await step(lib, {
      call: "copy_file_range",
      args: [from, pointerOf(fromSlot), range.to, pointerOf(toSlot), range.length - done],
      known: known || done > 0,
      reset,
    });
    if (count < 0 && done === 0) return -count;
    if (count <= 0) throw copyError(count < 0 ? -count : EIO, range, from);
    done += count;
  }
  return 0;
}

/** Copies with splice through a pooled pipe; results as {@link copyDirect}. */
async function copySpliced(
  lib: Symbols,
  from: number,
  range: KernelCopyRange,
  known: boolean,
): Promise<number> {
  const pipe = takePipe(lib);
  if (typeof pipe === "number") throw copyError(pipe, range, from);
  const offsets = new BigInt64Array(2);
  const fromSlot = offsets.subarray(0, 1);
  let done = 0;
  let outcome: SpliceOutcome = { refusal: 0, failure: 0, dirty: false };
  while (done < range.length) {
    const resetIn = () => (offsets[0] = BigInt(range.fromOffset + done));
    resetIn();
    const filled = await step(lib, {
      call: "splice",
      args: [
        from,
        pointerOf(fromSlot),
        pipe.write,
        null,
        Math.min(pipe.bytes, range.length - done),
      ],
      known: known || done > 0,
      reset: resetIn,
    });
    if (filled < 0 && done === 0) {
      outcome = { refusal: -filled, failure: 0, dirty: false };
      break;
    }
    if (filled <= 0) {
      outcome = { refusal: 0, failure: filled < 0 ? -filled : EIO, dirty: false };
      break;
    }
    const at = done;
    outcome = await spliceWriters.run(
      range.to,
      () => drainPipe(lib, { pipe, range, at, filled, known: known || at > 0 }),
    );
    if (outcome.refusal !== 0 || outcome.failure !== 0) break;
    done += filled;
  }
  const clean = outcome.failure === 0 && !outcome.dirty;
  if (clean && idlePipes.length < POOL_PIPES) idlePipes.push(pipe);
  else closePipe(lib, pipe);
  if (outcome.failure !== 0) throw copyError(outcome.failure, range, from);
  return outcome.refusal;
}

/** How draining a pipe ended: a refusal (nothing reached the target) or a failure errno, or neither. */
interface SpliceOutcome {
  refusal: number;
  failure: number;
  /** The pipe may still hold data. */
  dirty: boolean;
}

/** Moves the `filled` bytes in the pipe to the target at `range.toOffset + at`. */
async function drainPipe(
  lib: Symbols,
  options: { pipe: Pipe; range: KernelCopyRange; at: number; filled: number; known: boolean },
): Promise<SpliceOutcome> {
  const { pipe, range, at, filled } = options;
  const toSlot = new BigInt64Array(1);
  for (let moved = 0; moved < filled;) {
    const reset = () => (toSlot[0] = BigInt(range.toOffset + at + moved));
    reset();
    const count = await step(lib, {
      call: "splice",
      args: [pipe.read, null, range.to, pointerOf(toSlot), filled - moved],
      known: options.known,
      reset,
    });
    // Nothing reached the target on a first call: maybe a refusal. The pipe holds data.
    if (count < 0 && at === 0 && moved === 0) return { refusal: -count, failure: 0, dirty: true };
    if (count <= 0) return { refusal: 0, failure: count < 0 ? -count : EIO, dirty: true };
    moved += count;
  }
  return { refusal: 0, failure: 0, dirty: false };
}

function copyError(errno: number, range: KernelCopyRange, from: number): CopyError {
  const name = errno === ENOSPC ? "ENOSPC" : errno === EIO ? "EIO" : `errno ${errno}`;
  return new CopyError(
    `Cannot copy ${range.length} bytes from descriptor ${from} at ${range.fromOffset} to ` +
      `descriptor ${range.to} at ${range.toOffset} in the kernel (${name})`,
    errno,
  );
}

/**
 * Copies `range.length` bytes of descriptor `from` at `range.fromOffset` to
 * `range.to` at `range.toOffset` in the kernel, off the calling thread once
 * the pair is known. Resolves "refused" when the kernel cannot copy between
 * these two files (nothing was written); rejects with an Error whose `code`
 * is "ENOSPC" or "EIO" when the copy failed (the destination range is then
 * undefined).
 */
export async function copyFileRange(
  from: number,
  range: KernelCopyRange,
): Promise<KernelCopyResult> {
  const lib = shared.symbols;
  const key = `${from}:${range.to}`;
  const way = pairs.get(key);
  if (lib === undefined || way === "refused") return "refused";
  if (range.length === 0) return "copied";
  for (const call of ["copy_file_range", "splice"] as const) {
    if (way !== undefined && way !== call) continue;
    const outcome = call === "splice"
      ? await copySpliced(lib, from, range, way === call)
      : await directCopies.run(range.to, () => copyDirect(lib, from, range, way === call));
    if (outcome === 0) {
      pairs.set(key, call);
      return "copied";
    }
    if (way !== undefined || !REFUSING.has(outcome)) throw copyError(outcome, range, from);
  }
  pairs.set(key, "refused");
  return "refused";
}

/** Takes a reference on kernel copies (a store opening). */
export function acquireKernelCopies(): void {
  shared.acquire();
}

/** Drops a reference; the last one closes the idle pipes and libc (no copy may be in flight). */
export function releaseKernelCopies(): void {
  shared.release((lib) => {
    for (const pipe of idlePipes.splice(0)) closePipe(lib, pipe);
  });
}

/**
 * How copies from descriptor `from` to `to` are made: "copy_file_range" or
 * "splice" once one worked, "refused" once both refused, undefined before
 * the first copy (for diagnostics and tests).
 */
export function kernelCopyWay(from: number, to: number): PairWay | undefined {
  return pairs.get(`${from}:${to}`);
}

/** Forgets what was learnt about descriptor `fd` (call when it closes: the number may be reused). */
export function forgetCopyPairs(fd: number): void {
  for (const key of pairs.keys()) {
    const [from, to] = key.split(":");
    if (Number(from) === fd || Number(to) === fd) pairs.delete(key);
  }
}
