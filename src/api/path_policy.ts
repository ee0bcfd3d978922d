/**
 * Which device and storage paths the API may hand to the driver. A path is
 * accepted only when it is absolute and its real location (symlinks and `..`
 * resolved) lies under one of the configured prefixes; the driver then gets
 * the resolved path, so a link swapped after the check cannot redirect it.
 *
 * @module
 */

import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import { Errno, type ErrnoName, type ErrorCode, ServiceError } from "../errors.ts";

/** The longest file name Linux file systems take (NAME_MAX). */
const NAME_MAX_BYTES = 255;

/** Resolution failures the caller's path causes, and the code each becomes. */
const CALLER_ERRNOS: Partial<Record<ErrnoName, ErrorCode>> = {
  ENOTDIR: "INVALID_ARGUMENT",
  ELOOP: "INVALID_ARGUMENT",
  ENAMETOOLONG: "INVALID_ARGUMENT",
  EINVAL: "INVALID_ARGUMENT",
  EACCES: "FORBIDDEN",
  EPERM: "FORBIDDEN",
};

/**
 * The ServiceError for a path that does not resolve because of what it
 * names (a file used as a folder, a symlink loop, a name too long, a NUL
 * byte, no permission); other failures are the service's and pass through.
 */
function unresolvable(path: string, options: ResolveOptions, error: unknown): unknown {
  const code = (error as { code?: unknown } | null)?.code;
  const errno = typeof code === "string" && code in Errno ? code as ErrnoName : undefined;
  const errorCode = errno && CALLER_ERRNOS[errno];
  if (!errorCode) return error;
  return new ServiceError(
    errorCode,
    `Cannot ${options.purpose} ${JSON.stringify(path)}: the path does not resolve (${errno})`,
    { field: options.field, errno, cause: error },
  );
}

/** Options of {@link PathPolicy.resolve}. */
export interface ResolveOptions {
  /** The request field, for error messages ("path", "diffStorage.path"). */
  field: string;
  /** What the path is for, for error messages ("attach", "use as difference storage"). */
  purpose: string;
  /** Whether the path must already exist (devices) or may be created (storage files). */
  mustExist: boolean;
}

/** Resolves request paths and checks them against allowed prefixes. */
export class PathPolicy {
  readonly #prefixes: string[];

  /** `prefixes` must be real (already resolved) absolute paths; see {@link PathPolicy.create}. */
  constructor(prefixes: string[]) {
    this.#prefixes = prefixes;
  }

  /** Resolves each prefix to its real path (creating none) and builds a policy. */
  static async create(prefixes: string[]): Promise<PathPolicy> {
    const real: string[] = [];
    for (const prefix of prefixes) {
      try {
        real.push(await Deno.realPath(resolve(prefix)));
      } catch (cause) {
        throw new ServiceError(
          "INVALID_ARGUMENT",
          `Cannot allow paths under ${prefix}: it does not resolve (${String(cause)})`,
          { cause },
        );
      }
    }
    return new PathPolicy(real);
  }

  /** The resolved prefixes. */
  get prefixes(): readonly string[] {
    return this.#prefixes;
  }

  /**
   * The real path of `path` when it lies under an allowed prefix.
   * INVALID_ARGUMENT when not absolute or when it cannot resolve because of
   * what it names (ENOTDIR, ELOOP, ENAMETOOLONG, a NUL byte), NOT_FOUND when
   * it (or, for paths that may be created, its parent) does not exist,
   * FORBIDDEN when it resolves outside every prefix or may not be searched.
   */
  async resolve(path: string, options: ResolveOptions): Promise<string> {
    const { field, purpose } = options;
    if (!isAbsolute(path)) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `${field} must be an absolute path, got "${path}"`,
        {
          field,
        },
      );
    }
    const real = await this.#realPath(path, options);
    const allowed = this.#prefixes.some((prefix) =>
      real === prefix || real.startsWith(prefix.endsWith("/") ? prefix : `${prefix}/`)
    );
    if (!allowed) {
      const shown = real === path ? path : `${path} (resolves to ${real})`;
      throw new ServiceError(
        "FORBIDDEN",
        `Cannot ${purpose} ${shown}: the path is outside the allowed prefixes (${
          this.#prefixes.join(", ") || "none configured"
        })`,
        { field },
      );
    }
    return real;
  }

  async #realPath(path: string, options: ResolveOptions): Promise<string> {
    try {
      return await Deno.realPath(path);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw unresolvable(path, options, error);
      const name = basename(path);
      if (!options.mustExist && name !== "." && name !== "..") {
        if (new TextEncoder().encode(name).length > NAME_MAX_BYTES) {
          throw new ServiceError(
            "INVALID_ARGUMENT",
            `Cannot ${options.purpose} ${path}: the file name is longer than ${NAME_MAX_BYTES} bytes`,
            { field: options.field, errno: "ENAMETOOLONG" },
          );
        }
        try {
          return join(await Deno.realPath(dirname(path)), name);
        } catch (parentError) {
          if (!(parentError instanceof Deno.errors.NotFound)) {
            throw unresolvable(path, options, parentError);
          }
        }
      }
      throw new ServiceError(
        "NOT_FOUND",
        `Cannot ${options.purpose} ${path}: no such file or directory`,
        { field: options.field, errno: "ENOENT" },
      );
    }
  }
}
