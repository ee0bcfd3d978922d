/**
 * The attached devices of the userspace backend, persisted in the state
 * folder (`userspace-devices.json`) so that a restarted service tracks the
 * same devices again (their CBT maps have records of their own, see
 * cbt_journal.ts). Devices that could not be opened at start stay in the
 * list. The file is replaced atomically: a temporary file is written,
 * fsynced and renamed over the old one; a failed save leaves the old file
 * and no temporary file.
 *
 * @module
 */

import { join } from "node:path";
import { ServiceError } from "../errors.ts";

/** One remembered device. */
export interface RememberedDevice {
  /** Device id. */
  name: string;
  /** Resolved path. */
  path: string;
}

/** Reads and writes the device list in `stateDir`. */
export class DeviceListFile {
  readonly #path: string;
  #writing: Promise<void> = Promise.resolve();

  /** The list of `stateDir`. */
  constructor(stateDir: string) {
    this.#path = join(stateDir, "userspace-devices.json");
  }

  /** The remembered devices; empty when the file is missing or unreadable. */
  async load(): Promise<{ devices: RememberedDevice[]; problem?: string }> {
    let text: string;
    try {
      text = await Deno.readTextFile(this.#path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return { devices: [] };
      return { devices: [], problem: `cannot read ${this.#path}: ${(error as Error).message}` };
    }
    try {
      const parsed = JSON.parse(text) as { devices?: unknown };
      const devices = Array.isArray(parsed.devices) ? parsed.devices : [];
      return {
        devices: devices.filter((d): d is RememberedDevice =>
          typeof d?.name === "string" && typeof d?.path === "string"
        ),
      };
    } catch (error) {
      return {
        devices: [],
        problem: `${this.#path} is not valid JSON: ${(error as Error).message}`,
      };
    }
  }

  /**
   * Replaces the file's content with `devices` (writes are serialized).
   * IO when it cannot be written; the old file then stays as it was.
   */
  save(devices: RememberedDevice[]): Promise<void> {
    const text = new TextEncoder().encode(JSON.stringify({ devices }, null, 2) + "\n");
    const write = async () => {
      const temporary = `${this.#path}.${crypto.randomUUID()}.tmp`;
      try {
        await Deno.mkdir(join(this.#path, ".."), { recursive: true });
        const file = await Deno.open(temporary, { write: true, createNew: true, mode: 0o600 });
        try {
          for (let done = 0; done < text.length;) done += await file.write(text.subarray(done));
          await file.syncData();
        } finally {
          file.close();
        }
        await Deno.rename(temporary, this.#path);
      } catch (error) {
        await Deno.remove(temporary).catch(() => {});
        throw new ServiceError(
          "IO",
          `Cannot save the device list ${this.#path}: ${(error as Error).message}`,
          { cause: error },
        );
      }
    };
    const saved = this.#writing.then(write, write);
    this.#writing = saved.catch(() => {});
    return saved;
  }
}
