/**
 * Which device and storage paths the API may hand to the driver. A path is
 * accepted only when it is absolute and its real location (symlinks and `..`
 * resolved) lies under one of the configured prefixes. Two checks:
 * - {@link PathPolicy.resolve}, before the driver runs, for a clear answer:
 *   FORBIDDEN whenever the path lies outside, whether it exists or not (the
 *   deepest existing folder is resolved and the rest appended, so a 403
 *   tells nothing about what exists outside), and never showing where a
 *   symlink points; only then NOT_FOUND.
 * - {@link PathPolicy.verifier}, which the driver calls with the real path
 *   of the object it has opened (read from the descriptor): a name swapped
 *   after the first check cannot redirect the open (see
 *   src/store/open_verified.ts).
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

  /** True when the real path `real` lies under an allowed prefix. */
  allows(real: string): boolean {
    return this.#prefixes.some((prefix) =>
      real === prefix || real.startsWith(prefix.endsWith("/") ? prefix : `${prefix}/`)
    );
  }

  #forbidden(path: string, options: Pick<ResolveOptions, "field" | "purpose">): ServiceError {
    return new ServiceError(
      "FORBIDDEN",
      `Cannot ${options.purpose} ${path}: the path is outside the allowed prefixes (${
        this.#prefixes.join(", ") || "none configured"
      })`,
      { field: options.field, errno: "EACCES" },
    );
  }

  /**
   * The check a driver runs on what it opened for `path`: throws FORBIDDEN
   * (naming `path`, not the real path) when the opened object's real path
   * lies outside every prefix.
   */
  verifier(
    path: string,
    options: Pick<ResolveOptions, "field" | "purpose">,
  ): (realPath: string) => void {
    return (realPath) => {
      if (!this.allows(realPath)) throw this.#forbidden(path, options);
    };
  }

  /**
   * The real path of `path` when it lies under an allowed prefix.
   * INVALID_ARGUMENT when not absolute or when it cannot resolve because of
   * what it names (ENOTDIR, ELOOP, ENAMETOOLONG, a NUL byte); FORBIDDEN when
   * it would resolve outside every prefix, whether it exists or not, or may
   * not be searched; then NOT_FOUND when it (or, for paths that may be
   * created, its parent) does not exist.
   */
  async resolve(path: string, options: ResolveOptions): Promise<string> {
    const { field } = options;
    if (!isAbsolute(path)) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `${field} must be an absolute path, got "${path}"`,
        { field },
      );
    }
    if (path.includes("\0")) {
      throw new ServiceError("INVALID_ARGUMENT", `${field} must not contain a NUL byte`, { field });
    }
    const { real, missing } = await this.#realPath(path, options);
    if (!this.allows(real)) throw this.#forbidden(path, options);
    const parentMissing = missing.length > 1 || (missing.length === 1 && options.mustExist);
    const name = missing.length === 1 ? missing[0] : undefined;
    if (parentMissing || (name !== undefined && (name === "." || name === ".."))) {
      throw new ServiceError(
        "NOT_FOUND",
        `Cannot ${options.purpose} ${path}: no such file or directory`,
        { field, errno: "ENOENT" },
      );
    }
    if (name !== undefined && new TextEncoder().encode(name).length > NAME_MAX_BYTES) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `Cannot ${options.purpose} ${path}: the file name is longer than ${NAME_MAX_BYTES} bytes`,
        { field, errno: "ENAMETOOLONG" },
      );
    }
    return real;
  }

  /**
   * The real path of the deepest existing ancestor of `path` (itself when it
   * exists) with the missing components appended, and those components. A
   * dangling symlink is followed to where it points (up to 40 links, as the
   * kernel does), so a link to a missing file outside counts as outside.
   */
  async #realPath(
    path: string,
    options: ResolveOptions,
  ): Promise<{ real: string; missing: string[] }> {
    const missing: string[] = [];
    let current = path;
    for (let links = 0;;) {
      try {
        return { real: join(await Deno.realPath(current), ...missing), missing };
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound) || current === "/") {
          throw unresolvable(path, options, error);
        }
        const link = await Deno.lstat(current).then((info) => info.isSymlink, () => false);
        if (link && ++links <= 40) {
          // A link removed meanwhile is looked at again (bounded by the link count).
          const target = await Deno.readLink(current).catch(() => undefined);
          if (target !== undefined) current = resolve(dirname(current), target);
          continue;
        }
        missing.unshift(basename(current));
        current = dirname(current);
      }
    }
  }
}
