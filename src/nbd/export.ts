/**
 * What the NBD server serves: anything that implements {@link NbdExport}.
 * The server knows nothing of snapshots; the userspace backend implements
 * this interface with the engine (a tracked device, a snapshot image) and
 * the tests with plain files and memory.
 *
 * Contract, in bytes throughout:
 * - The server validates every request before calling the export: ranges lie
 *   within `sizeBytes`, are aligned to `blockSize.minimum`, READ and WRITE
 *   lengths do not exceed `blockSize.maximum`, and nothing that writes
 *   (write, trim, writeZeroes) reaches a `readOnly` export.
 * - A write's data is fully received before `write()` is called, so an export
 *   never sees half a request. The server may call the methods concurrently,
 *   from one or several connections.
 * - Buffers are lent: `read()` must fill all of `into`, and neither `into`
 *   nor a write's `data` may be kept or modified once the promise settles
 *   (the server recycles them for later requests).
 * - Failures are thrown as ServiceError (src/errors.ts); the server replies
 *   with that code's NBD error. `NOT_SUPPORTED` from `writeZeroes()` with
 *   `fastZero` set means "not faster than a write" and reaches the client
 *   as NBD_ENOTSUP.
 *
 * @module
 */

/** One extent of a metadata context: `length` bytes with context-defined `flags`. */
export interface NbdExtent {
  /** Length in bytes; must be positive. */
  length: number;
  /**
   * Flags as the context defines them: for `base:allocation` 1 is
   * NBD_STATE_HOLE and 2 NBD_STATE_ZERO; for a dirty bitmap 1 is dirty.
   */
  flags: number;
}

/** Block size constraints advertised with NBD_INFO_BLOCK_SIZE, in bytes. */
export interface NbdBlockSize {
  /** Smallest addressable length and alignment: a power of two, 1 to 65536. */
  minimum: number;
  /** Efficient I/O size: a power of two, at least max(minimum, 512). */
  preferred: number;
  /** Largest READ or WRITE payload accepted: at least `preferred`. */
  maximum: number;
}

/** A block device as the NBD server sees it. */
export interface NbdExport {
  /** Export name clients ask for (at most 4096 bytes of UTF-8). */
  readonly name: string;
  /** Human description, shown by NBD_OPT_LIST and NBD_INFO_DESCRIPTION. */
  readonly description?: string;
  /** Size in bytes. */
  readonly sizeBytes: number;
  /** True when writes must be refused (NBD_FLAG_READ_ONLY; clients get EPERM). */
  readonly readOnly: boolean;
  /** Size constraints; default minimum 1, preferred 4096, maximum 32 MiB. */
  readonly blockSize?: NbdBlockSize;
  /**
   * True only if a flush on one connection covers writes completed on all
   * connections (NBD_FLAG_CAN_MULTI_CONN).
   */
  readonly canMultiConn: boolean;
  /** Reads `into.length` bytes at `offset` into `into`. */
  read(offset: number, into: Uint8Array): Promise<void>;
  /**
   * Reads `length` bytes at `offset` into a pipe (zero-copy: the pipe takes
   * references to the page cache), for a connection whose stream splices
   * ({@link ByteStream.spliceFrom}); resolves undefined when this read cannot
   * go that way now (then {@link NbdExport.read} is used), rejects as `read`.
   */
  readPiped?(offset: number, length: number): Promise<PipedData | undefined>;
  /** Writes `data` at `offset`; with `fua`, the data is durable when the promise resolves. */
  write(offset: number, data: Uint8Array, options: { fua: boolean }): Promise<void>;
  /** Makes every completed write durable. */
  flush(): Promise<void>;
  /** Discards `length` bytes at `offset` (a hint; contents are undefined until rewritten). */
  trim?(offset: number, length: number): Promise<void>;
  /**
   * Zeroes `length` bytes at `offset`. `noHole`: keep the range allocated.
   * `fastZero`: throw ServiceError NOT_SUPPORTED at once, changing nothing,
   * unless zeroing is faster than writing zeroes. `fua`: durable on return.
   * Without this method the server writes zero buffers itself and answers
   * fast-zero requests with ENOTSUP.
   */
  writeZeroes?(
    offset: number,
    length: number,
    options: { noHole: boolean; fastZero: boolean; fua: boolean },
  ): Promise<void>;
  /**
   * False when `base:allocation` never reports a hole or zeroes (a block
   * device, memory): structured READs then send data without asking where
   * the holes are. Default true when {@link NbdExport.blockStatus} exists.
   */
  readonly reportsHoles?: boolean;
  /** Metadata context names beyond `base:allocation`, such as "qemu:dirty-bitmap:cbt". */
  metaContexts?(): string[];
  /**
   * Extents of `context` (`base:allocation` or one of {@link metaContexts})
   * from `offset`, covering up to `length` bytes or fewer (at least one
   * extent); the last may reach past `length`. Without this method
   * `base:allocation` reports the whole range allocated with unknown contents.
   */
  blockStatus?(context: string, offset: number, length: number): Promise<NbdExtent[]>;
  /**
   * Aborted when the export goes away (the image of a destroyed snapshot):
   * requests in flight complete or fail, every later request on the
   * export's connections gets NBD_ESHUTDOWN, and the server ends those
   * connections after a short grace (NbdServerOptions.endedGraceMs), or
   * earlier at the client's NBD_CMD_DISC.
   */
  readonly ended?: AbortSignal;
}

/** READ data waiting in a pipe until it is spliced to the socket. */
export interface PipedData {
  /** The pipe's read end. */
  readonly fd: number;
  /** Bytes the pipe holds. */
  readonly length: number;
  /** Hands the pipe back: reused when `drained` (every byte left it), else closed. */
  release(drained: boolean): void;
}

/** The set of exports a server offers; looked up at every handshake, so it may change. */
export interface ExportProvider {
  /** Every export, for NBD_OPT_LIST. */
  list(): NbdExport[];
  /** The export named `name`, or undefined. */
  get(name: string): NbdExport | undefined;
  /** The export served when a client asks for the empty name. */
  readonly defaultName?: string;
}

/**
 * A provider over a fixed list of exports; the first one is the default
 * unless `defaultName` says otherwise.
 */
export function staticProvider(
  exports: NbdExport[],
  options: { defaultName?: string } = {},
): ExportProvider {
  const byName = new Map(exports.map((e) => [e.name, e]));
  return {
    list: () => [...exports],
    get: (name) => byName.get(name),
    defaultName: options.defaultName ?? exports[0]?.name,
  };
}
