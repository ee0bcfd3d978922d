/**
 * The service's one error type and the one table that maps each error code
 * to an HTTP status, a problem title, an errno and an NBD error. The HTTP
 * layer, the NBD server, the kernel backend and the CLI all read this table,
 * so a condition means the same thing everywhere.
 *
 * @module
 */

/** Linux errno values the service raises, reports or receives (x86_64). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENOTTY: 25,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ELOOP: 40,
  ENODATA: 61,
  EOVERFLOW: 75,
  EOPNOTSUPP: 95,
  ESHUTDOWN: 108,
  ETIMEDOUT: 110,
  EALREADY: 114,
  ESTALE: 116,
  ECANCELED: 125,
} as const;

/** The name of a known errno. */
export type ErrnoName = keyof typeof Errno;

const errnoNames = new Map<number, ErrnoName>(
  Object.entries(Errno).map(([name, value]) => [value, name as ErrnoName]),
);

/** The name of errno `value` ("ENOSPC"), or undefined when it is not one the service knows. */
export function errnoName(value: number): ErrnoName | undefined {
  return errnoNames.get(Math.abs(value));
}

/** The closed set of error codes. */
export type ErrorCode =
  | "INVALID_ARGUMENT"
  | "OUT_OF_RANGE"
  | "RANGE_NOT_SATISFIABLE"
  | "PRECONDITION_FAILED"
  | "HOOK_FAILED"
  | "NOT_FOUND"
  | "CONFLICT"
  | "READ_ONLY"
  | "FORBIDDEN"
  | "UNAUTHORIZED"
  | "PAYLOAD_TOO_LARGE"
  | "STORAGE_EXHAUSTED"
  | "SNAPSHOT_CORRUPTED"
  | "FULL_BACKUP_REQUIRED"
  | "NOT_SUPPORTED"
  | "MODULE_MISMATCH"
  | "UNAVAILABLE"
  | "TIMEOUT"
  | "IO"
  | "INTERNAL";

/** What each error code means at each boundary. */
export interface ErrorMapping {
  /** HTTP status of the problem+json response. */
  readonly status: number;
  /** Short, stable problem title. */
  readonly title: string;
  /** The errno that best describes the condition. */
  readonly errno: ErrnoName;
  /** The NBD error reply (an errno value from the protocol's allowed set). */
  readonly nbdError: number;
}

/** The one table: error code to HTTP status, title, errno and NBD error. */
export const errorTable: Readonly<Record<ErrorCode, ErrorMapping>> = {
  INVALID_ARGUMENT: { status: 400, title: "Invalid argument", errno: "EINVAL", nbdError: 22 },
  OUT_OF_RANGE: { status: 400, title: "Out of range", errno: "EINVAL", nbdError: 22 },
  RANGE_NOT_SATISFIABLE: {
    status: 416,
    title: "Range not satisfiable",
    errno: "EINVAL",
    nbdError: 22,
  },
  PRECONDITION_FAILED: {
    status: 412,
    title: "Precondition failed",
    errno: "EINVAL",
    nbdError: 22,
  },
  HOOK_FAILED: {
    status: 424,
    title: "Take hook failed",
    errno: "ECANCELED",
    nbdError: 5,
  },
  NOT_FOUND: { status: 404, title: "Not found", errno: "ENOENT", nbdError: 22 },
  CONFLICT: { status: 409, title: "Conflict", errno: "EBUSY", nbdError: 22 },
  READ_ONLY: { status: 409, title: "Read-only", errno: "EPERM", nbdError: 1 },
  FORBIDDEN: { status: 403, title: "Forbidden", errno: "EACCES", nbdError: 1 },
  UNAUTHORIZED: { status: 401, title: "Unauthorized", errno: "EACCES", nbdError: 1 },
  PAYLOAD_TOO_LARGE: { status: 413, title: "Payload too large", errno: "E2BIG", nbdError: 75 },
  STORAGE_EXHAUSTED: {
    status: 507,
    title: "Difference storage exhausted",
    errno: "ENOSPC",
    nbdError: 28,
  },
  SNAPSHOT_CORRUPTED: { status: 409, title: "Snapshot corrupted", errno: "EIO", nbdError: 5 },
  FULL_BACKUP_REQUIRED: {
    status: 409,
    title: "Full backup required",
    errno: "ESTALE",
    nbdError: 22,
  },
  NOT_SUPPORTED: { status: 501, title: "Not supported", errno: "EOPNOTSUPP", nbdError: 95 },
  MODULE_MISMATCH: {
    status: 502,
    title: "Kernel module mismatch",
    errno: "ENOTTY",
    nbdError: 5,
  },
  UNAVAILABLE: { status: 503, title: "Unavailable", errno: "ENODEV", nbdError: 108 },
  TIMEOUT: { status: 504, title: "Timed out", errno: "ETIMEDOUT", nbdError: 5 },
  IO: { status: 500, title: "I/O error", errno: "EIO", nbdError: 5 },
  INTERNAL: { status: 500, title: "Internal error", errno: "EIO", nbdError: 5 },
};

/** Options of a {@link ServiceError}. */
export interface ServiceErrorOptions {
  /** The underlying error. */
  cause?: unknown;
  /** The errno behind the error when it differs from the code's default (e.g. from the kernel). */
  errno?: ErrnoName;
  /** The request field the error is about (validation errors). */
  field?: string;
  /** A stable reason within the code (FULL_BACKUP_REQUIRED: why no incremental answer). */
  reason?: string;
}

/**
 * An error with a code from the closed set, a human detail saying what could
 * not be done and why, and optionally the errno and field behind it.
 */
export class ServiceError extends Error {
  /** The stable error code. */
  readonly code: ErrorCode;
  /** The errno name that describes the condition. */
  readonly errno: ErrnoName;
  /** The request field at fault, for validation errors. */
  readonly field?: string;
  /** A stable reason within the code, when the code has several (see change_token.ts). */
  readonly reason?: string;

  /** An error of `code`; `detail` says what could not be done and why. */
  constructor(code: ErrorCode, detail: string, options: ServiceErrorOptions = {}) {
    super(detail, { cause: options.cause });
    this.name = "ServiceError";
    this.code = code;
    this.errno = options.errno ?? errorTable[code].errno;
    this.field = options.field;
    this.reason = options.reason;
  }

  /** The table entry for this error's code. */
  get mapping(): ErrorMapping {
    return errorTable[this.code];
  }
}

/** True when `error` is a {@link ServiceError}, optionally of the given code. */
export function isServiceError(error: unknown, code?: ErrorCode): error is ServiceError {
  return error instanceof ServiceError && (code === undefined || error.code === code);
}

const errnoCodes: Partial<Record<ErrnoName, ErrorCode>> = {
  EPERM: "FORBIDDEN",
  EACCES: "FORBIDDEN",
  ENOENT: "NOT_FOUND",
  ESRCH: "NOT_FOUND",
  ENXIO: "NOT_FOUND",
  ENODEV: "NOT_FOUND",
  EBUSY: "CONFLICT",
  EALREADY: "CONFLICT",
  EEXIST: "CONFLICT",
  ENOSPC: "STORAGE_EXHAUSTED",
  EROFS: "READ_ONLY",
  EINVAL: "INVALID_ARGUMENT",
  ERANGE: "OUT_OF_RANGE",
  ENODATA: "OUT_OF_RANGE",
  EOVERFLOW: "OUT_OF_RANGE",
  ENOTTY: "MODULE_MISMATCH",
  EOPNOTSUPP: "NOT_SUPPORTED",
  ETIMEDOUT: "TIMEOUT",
  ENOMEM: "UNAVAILABLE",
};

/**
 * The ServiceError for a failed system call that returned errno `value`;
 * unknown errnos become IO errors. `detail` says what could not be done.
 */
export function errorFromErrno(value: number, detail: string, cause?: unknown): ServiceError {
  const name = errnoName(value);
  const code = (name && errnoCodes[name]) ?? "IO";
  const suffix = name ? ` (${name})` : ` (errno ${Math.abs(value)})`;
  return new ServiceError(code, `${detail}${suffix}`, { errno: name ?? "EIO", cause });
}
