/**
 * The attached devices of the userspace backend, persisted in the state
 * folder (`userspace-devices.json`) so that a restarted service tracks the
 * same devices again. CBT maps live in memory only: a device re-attached at
 * start gets a new CBT generation, which tells backup tools that the next
 * backup must be full. The file is replaced atomically (write, rename).
 *
 * @module
 */

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

  /** Replaces the file's content with `devices` (writes are serialized). */
  save(devices: RememberedDevice[]): Promise<void> {
    const text = JSON.stringify({ devices }, null, 2) + "\n";
    const write = async () => {
      await Deno.mkdir(join(this.#path, ".."), { recursive: true });
      const temporary = `${this.#path}.${crypto.randomUUID()}.tmp`;
      await Deno.writeTextFile(temporary, text);
      await Deno.rename(temporary, this.#path);
    };
    this.#writing = this.#writing.then(write, write);
    return this.#writing;
  }
}
