/**
 * A UserspaceDriver in a temp dir, as the conformance suite and the NBD
 * integration tests use it: devices are regular files in the temp dir,
 * writes go through each device's NBD export (its locator) with a real NBD
 * connection, reads come from the backing file (what reached the original),
 * and difference storages are fresh files beside them.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { DeviceInfo } from "../../../src/driver.ts";
import type { EngineParams } from "../../../src/engine/params.ts";
import {
  UserspaceDriver,
  type UserspaceDriverOptions,
} from "../../../src/userspace/userspace_driver.ts";
import type { ConformanceFixture, CreateDeviceOptions } from "../../conformance/fixture.ts";
import { NbdClient } from "../../_helpers/nbd_client.ts";
import { nbdTestWorkers } from "../../_helpers/nbd_workers_mode.ts";

/** Options of {@link userspaceFixture}. */
export interface UserspaceFixtureOptions {
  /** Engine parameters over the kernel defaults. */
  engineParams?: Partial<EngineParams>;
  /** Use this temp dir (and its state dir) instead of a new one; it is not removed by cleanup. */
  dir?: string;
  /** Persist attached devices in `<dir>/state`. */
  persist?: boolean;
  /** More driver options (persistence, locks, path checks). */
  driver?: Partial<UserspaceDriverOptions>;
}

/** The conformance fixture plus what the NBD tests need. */
export interface UserspaceFixture extends ConformanceFixture {
  /** The driver, with its NBD server and URIs. */
  readonly driver: UserspaceDriver;
  /** The temp dir holding devices, storages and the state dir. */
  readonly dir: string;
  /** An NBD connection to `uri`, closed by cleanup. */
  connect(uri: string): Promise<NbdClient>;
}

async function readAt(path: string, offset: number, length: number): Promise<Uint8Array> {
  const file = await Deno.open(path, { read: true });
  try {
    await file.seek(offset, Deno.SeekMode.Start);
    const out = new Uint8Array(length);
    for (let done = 0; done < length;) {
      const n = await file.read(out.subarray(done));
      if (n === null) throw new Error(`${path} ends before ${offset + length}`);
      done += n;
    }
    return out;
  } finally {
    file.close();
  }
}

/** Starts a UserspaceDriver on a free loopback port with its devices in a temp dir. */
export async function userspaceFixture(
  options: UserspaceFixtureOptions = {},
): Promise<UserspaceFixture> {
  const dir = options.dir ?? await Deno.makeTempDir({ prefix: "userspace-driver-" });
  const driver = await UserspaceDriver.start({
    nbd: { tcp: { port: 0 }, workers: nbdTestWorkers() },
    engineParams: options.engineParams,
    stateDir: options.persist ? `${dir}/state` : undefined,
    ...options.driver,
  });
  const clients: NbdClient[] = [];
  const writers = new Map<string, Promise<NbdClient>>();
  let next = 0;
  const connect = async (uri: string) => {
    const client = await NbdClient.connect(uri);
    clients.push(client);
    return client;
  };
  return {
    driver,
    dir,
    connect,
    async createDevice(sizeBytes: number, deviceOptions: CreateDeviceOptions = {}) {
      const path = `${dir}/disk${next++}.img`;
      const file = await Deno.open(path, { write: true, createNew: true });
      try {
        await file.truncate(sizeBytes);
        const content = deviceOptions.content ?? new Uint8Array(0);
        for (let done = 0; done < content.length;) {
          done += await file.write(content.subarray(done));
        }
      } finally {
        file.close();
      }
      return path;
    },
    async writeDevice(device: DeviceInfo, offset: number, data: Uint8Array) {
      let writer = writers.get(device.locator);
      if (!writer) writers.set(device.locator, writer = connect(device.locator));
      await (await writer).pwrite(offset, data);
    },
    readDevice: (device: DeviceInfo, offset: number, length: number) =>
      readAt(device.path, offset, length),
    corruptCbt(device: DeviceInfo) {
      const { cbt } = driver.engine.tracker(device.id);
      // A marking past the map, as after a resize: what cbt_map_set turns into corruption.
      assert.throws(() => cbt.set(cbt.blockCount * cbt.blockSizeBytes, 1));
      return Promise.resolve();
    },
    storagePath: () => Promise.resolve(`${dir}/storage${next++}.diff`),
    async cleanup() {
      await Promise.all(clients.map((client) => client.close()));
      await driver.close();
      if (options.dir === undefined) await Deno.remove(dir, { recursive: true });
    },
  };
}
