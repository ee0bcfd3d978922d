/**
 * `flock(fd, LOCK_EX | LOCK_NB)` through FFI: an exclusive advisory lock that
 * is refused at once when another open file holds it (Deno's FsFile.lock
 * waits instead). The lock belongs to the open file description, and the
 * kernel releases it when the process dies, however it dies (kill -9
 * included). Release unlocks explicitly (LOCK_UN) before the descriptor is
 * closed: a child being spawned by another thread shares the description
 * until its exec closes it, and would otherwise hold the lock a moment
 * longer.
 *
 * libc is opened on the first lock and closed when the last one is released
 * (each held lock is a reference), so importing this file opens nothing.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";

const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;
const EWOULDBLOCK = 11;
const EINTR = 4;

const symbols = {
  flock: { parameters: ["i32", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

let library: Deno.DynamicLibrary<typeof symbols> | undefined;
let held = 0;

function libc(): Deno.DynamicLibrary<typeof symbols>["symbols"] {
  if (library === undefined) {
    try {
      library = Deno.dlopen("libc.so.6", symbols);
    } catch (error) {
      throw new ServiceError(
        "UNAVAILABLE",
        `Cannot take a file lock: libc cannot be opened through FFI (${(error as Error).message})`,
        { cause: error },
      );
    }
  }
  return library.symbols;
}

/**
 * Takes an exclusive lock on open descriptor `fd` without waiting. Returns
 * true when taken (then call {@link releaseFlock} just before closing the
 * descriptor), false when another open file holds it. IO for other failures,
 * UNAVAILABLE without FFI.
 */
export function tryFlock(fd: number, what: string): boolean {
  const lib = libc();
  for (;;) {
    const result = lib.flock(fd, LOCK_EX | LOCK_NB);
    if (result === 0) {
      held += 1;
      return true;
    }
    const location = lib.__errno_location();
    const errno = location === null ? 0 : new Deno.UnsafePointerView(location).getInt32();
    if (errno === EINTR) continue;
    if (held === 0) closeLibrary();
    if (errno === EWOULDBLOCK) return false;
    throw new ServiceError("IO", `${what}: flock failed with errno ${errno}`);
  }
}

function closeLibrary(): void {
  library?.close();
  library = undefined;
}

/**
 * Unlocks `fd` (LOCK_UN; the caller closes it next) and drops the reference
 * a successful {@link tryFlock} took.
 */
export function releaseFlock(fd: number): void {
  library?.symbols.flock(fd, LOCK_UN);
  held = Math.max(0, held - 1);
  if (held === 0) closeLibrary();
}
