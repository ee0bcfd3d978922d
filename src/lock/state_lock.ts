/**
 * One owner per state folder (and, for the kernel backend, per host): a lock
 * file holding the owner's pid, locked with flock (flock.ts). A second
 * service that finds it locked refuses to start and names the holder's pid;
 * a lock file left by a process that died is simply taken over, since the
 * kernel released its lock.
 *
 * @module
 */

import { closeSync, ftruncateSync, openSync, readFileSync, writeSync } from "node:fs";
import { constants } from "node:fs";
import { dirname } from "node:path";
import { ServiceError } from "../errors.ts";
import { releaseFlock, tryFlock } from "./flock.ts";

/** The lock file's name inside a state folder. */
export const STATE_LOCK_FILE_NAME = "service.lock";

/** A held lock file; {@link StateLock.release} gives it up. */
export class StateLock {
  /** The lock file's path. */
  readonly path: string;
  #fd: number | undefined;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.#fd = fd;
  }

  /**
   * Locks `path` (created if missing, its folder too) and writes this
   * process's pid into it. CONFLICT naming the holder's pid when another
   * process holds it; `what` names what is locked in that message ("the
   * state folder /x"). IO when the file cannot be opened.
   */
  static acquire(path: string, what: string): StateLock {
    let fd: number;
    try {
      Deno.mkdirSync(dirname(path), { recursive: true });
      fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o644);
    } catch (error) {
      throw new ServiceError("IO", `Cannot lock ${what}: cannot open ${path}: ${error}`, {
        cause: error,
      });
    }
    let locked: boolean;
    try {
      locked = tryFlock(fd, `Cannot lock ${what}`);
    } catch (error) {
      closeSync(fd);
      throw error;
    }
    if (!locked) {
      closeSync(fd);
      const holder = readPid(path);
      throw new ServiceError(
        "CONFLICT",
        `Cannot lock ${what}: another service (pid ${holder ?? "unknown"}) holds ${path}`,
      );
    }
    ftruncateSync(fd, 0);
    writeSync(fd, `${Deno.pid}\n`, 0);
    return new StateLock(path, fd);
  }

  /** Releases the lock; the file stays (the next owner writes its own pid). Idempotent. */
  release(): void {
    if (this.#fd === undefined) return;
    releaseFlock(this.#fd);
    closeSync(this.#fd);
    this.#fd = undefined;
  }
}

function readPid(path: string): number | undefined {
  try {
    const pid = Number(readFileSync(path, "utf8").trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
