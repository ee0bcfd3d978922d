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

import { replaceFileAtomically } from "../store/atomic_file.ts";
import { join } from "node:path";

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
      await Deno.mkdir(join(this.#path, ".."), { recursive: true });
      await replaceFileAtomically(this.#path, text, { what: "the device list" });
    };
    const saved = this.#writing.then(write, write);
    this.#writing = saved.catch(() => {});
    return saved;
  }
}
