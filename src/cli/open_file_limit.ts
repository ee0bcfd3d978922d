/**
 * Raises the soft open-file limit (RLIMIT_NOFILE) to the hard limit, so
 * that the connection limits, not the kernel's default soft limit (often
 * 1024), decide how many clients the service holds. Through FFI
 * (getrlimit/setrlimit in libc), opened for the call and closed again.
 *
 * @module
 */

const RLIMIT_NOFILE = 7;

const symbols = {
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
} as const;

/** The open-file limits before and after {@link raiseOpenFileLimit}. */
export interface OpenFileLimit {
  /** The soft limit found. */
  before: number;
  /** The soft limit now (the hard limit when raising worked). */
  soft: number;
  /** The hard limit. */
  hard: number;
}

/**
 * Sets the soft RLIMIT_NOFILE to the hard one and returns both. Throws when
 * libc cannot be opened (no FFI permission) or getrlimit fails; a refused
 * setrlimit leaves the soft limit as it was (reported in `soft`).
 */
export function raiseOpenFileLimit(): OpenFileLimit {
  const library = Deno.dlopen("libc.so.6", symbols);
  try {
    const limits = new BigUint64Array(2);
    const bytes = new Uint8Array(limits.buffer);
    if (library.symbols.getrlimit(RLIMIT_NOFILE, bytes) !== 0) {
      throw new Error("getrlimit(RLIMIT_NOFILE) failed");
    }
    const before = Number(limits[0]);
    const hard = Number(limits[1] > BigInt(Number.MAX_SAFE_INTEGER) ? -1n : limits[1]);
    if (limits[0] !== limits[1]) {
      limits[0] = limits[1];
      if (library.symbols.setrlimit(RLIMIT_NOFILE, bytes) !== 0) {
        return { before, soft: before, hard };
      }
    }
    return {
      before,
      soft: Number(limits[0] > BigInt(Number.MAX_SAFE_INTEGER) ? -1n : limits[0]),
      hard,
    };
  } finally {
    library.close();
  }
}
