/**
 * Blocking ioctls off the main thread. SNAPSHOT_WAIT_EVENT sleeps in the
 * kernel for up to its timeout, so it must never run on the thread that
 * serves HTTP. {@link WorkerIoctl} runs each such call on a Worker of its own:
 * the worker dlopens the library itself, makes the call, reads errno through
 * `__errno_location` in the next statement (errno is thread-local, so only
 * the calling thread can read it) and posts back the result with the argument
 * bytes the kernel wrote. The argument travels as a copy, and the worker's
 * copy is referenced until the reply is posted, so the kernel never writes to
 * freed memory.
 *
 * The worker's code is a self-contained string turned into a `data:` URL (no
 * imports, no file next to the bundle): it runs unchanged from source, from
 * an esbuild single-file bundle and from a `deno compile` binary (where
 * `blob:` URLs are not loadable by workers).
 *
 * Tests substitute the blocking call by pointing `libraryPath` at a small C
 * library that exports its own `ioctl` (its `__errno_location` resolves to
 * libc's through the library's dependencies).
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import { LIBC_PATH, type SyscallResult } from "./libc.ts";

/** Something that runs an ioctl without blocking the caller's thread. */
export interface BlockingIoctl {
  /** Runs `ioctl(fd, request, arg)` elsewhere; `arg` holds the kernel's output when it resolves. */
  call(fd: number, request: number, arg: Uint8Array): Promise<SyscallResult>;
  /** Stops every thread; calls still pending reject with UNAVAILABLE. */
  close(): void;
}

/** The worker's whole program. It must stay free of imports and outer references. */
const WORKER_SOURCE = `
let symbols;
self.onmessage = (message) => {
  const { libraryPath, fd, request, bytes } = message.data;
  let reply;
  try {
    symbols ??= Deno.dlopen(libraryPath, {
      ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
      __errno_location: { parameters: [], result: "pointer" },
    }).symbols;
    const arg = new Uint8Array(bytes);
    const result = symbols.ioctl(fd, BigInt(request), arg);
    const errno = result === -1 ? new Deno.UnsafePointerView(symbols.__errno_location()).getInt32() : 0;
    reply = { result, errno, bytes: arg.buffer };
  } catch (error) {
    reply = { error: String(error && error.message ? error.message : error) };
  }
  self.postMessage(reply, reply.bytes ? [reply.bytes] : []);
};
`;

const WORKER_URL = `data:text/javascript;base64,${btoa(WORKER_SOURCE)}`;

interface WorkerReply {
  result?: number;
  errno?: number;
  bytes?: ArrayBuffer;
  error?: string;
}

/** Options of {@link WorkerIoctl}. */
export interface WorkerIoctlOptions {
  /** Library whose `ioctl` and `__errno_location` the workers call; `libc.so.6` by default. */
  libraryPath?: string;
  /** Idle workers kept for reuse (default 2); more are terminated when they finish. */
  maxIdle?: number;
}

interface Pending {
  worker: Worker;
  reject: (error: Error) => void;
}

/**
 * A pool of Workers, one per blocking call in flight, reused when idle. Every
 * worker needs the FFI permission (inherited from the main thread).
 */
export class WorkerIoctl implements BlockingIoctl {
  #libraryPath: string;
  #maxIdle: number;
  #idle: Worker[] = [];
  #pending = new Set<Pending>();
  #closed = false;

  constructor(options: WorkerIoctlOptions = {}) {
    this.#libraryPath = options.libraryPath ?? LIBC_PATH;
    this.#maxIdle = options.maxIdle ?? 2;
  }

  /** Number of calls in flight (each holds one worker). */
  get busy(): number {
    return this.#pending.size;
  }

  call(fd: number, request: number, arg: Uint8Array): Promise<SyscallResult> {
    if (this.#closed) {
      return Promise.reject(new ServiceError("UNAVAILABLE", "The event worker pool is closed"));
    }
    const worker = this.#idle.pop() ?? new Worker(WORKER_URL, { type: "module" });
    const bytes = arg.slice().buffer;
    return new Promise<SyscallResult>((resolve, reject) => {
      const pending: Pending = { worker, reject };
      this.#pending.add(pending);
      worker.onmessage = (event: MessageEvent<WorkerReply>) => {
        this.#pending.delete(pending);
        const reply = event.data;
        if (reply.error !== undefined || reply.bytes === undefined) {
          worker.terminate();
          reject(
            new ServiceError(
              "UNAVAILABLE",
              `The event worker could not call ioctl in ${this.#libraryPath}: ${reply.error}`,
            ),
          );
          return;
        }
        arg.set(new Uint8Array(reply.bytes, 0, arg.length));
        this.#release(worker);
        resolve({ result: reply.result ?? -1, errno: reply.errno ?? 0 });
      };
      worker.onerror = (event: ErrorEvent) => {
        event.preventDefault();
        this.#pending.delete(pending);
        worker.terminate();
        reject(new ServiceError("INTERNAL", `The event worker failed: ${event.message}`));
      };
      worker.postMessage(
        { libraryPath: this.#libraryPath, fd, request, bytes },
        [bytes],
      );
    });
  }

  #release(worker: Worker): void {
    worker.onmessage = null;
    worker.onerror = null;
    if (this.#closed || this.#idle.length >= this.#maxIdle) worker.terminate();
    else this.#idle.push(worker);
  }

  /**
   * Terminates every worker. A worker blocked in the kernel stops running
   * JavaScript at once; its thread leaves the syscall when the kernel returns.
   */
  close(): void {
    this.#closed = true;
    for (const worker of this.#idle) worker.terminate();
    this.#idle = [];
    for (const pending of this.#pending) {
      pending.worker.terminate();
      pending.reject(new ServiceError("UNAVAILABLE", "The event worker pool was closed"));
    }
    this.#pending.clear();
  }
}
