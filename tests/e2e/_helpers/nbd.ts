/**
 * The kernel's NBD client in the lab guest: `modprobe nbd`, then `nbd-client` connects a
 * /dev/nbdN to an export of the service (its `nbd://HOST:PORT/NAME` locator) and `nbd-client -d`
 * disconnects it. Connections use 4 KiB blocks (the file systems' block size) and a 120 s I/O
 * timeout, so that a service that went away fails I/O instead of hanging the guest.
 *
 * @module
 */

import { exists, run, waitFor } from "./sh.ts";

/** A connected /dev/nbdN; dispose it (or call disconnect) to disconnect. */
export interface NbdConnection extends AsyncDisposable {
  /** The device, e.g. /dev/nbd0. */
  readonly device: string;
  /** The export it is connected to. */
  readonly exportName: string;
  /** Disconnects (once; later calls do nothing). */
  disconnect(): Promise<void>;
}

/**
 * Loads the nbd module with four devices (once; a kernel with nbd built in has its default 16
 * already) and waits for /dev/nbd0../dev/nbd3.
 */
export async function loadNbd(): Promise<void> {
  if (!exists("/sys/module/nbd")) await run("modprobe", ["nbd", "nbds_max=4"]);
  await waitFor("/dev/nbd3 to appear", () => exists("/dev/nbd3"));
}

/** Splits an `nbd://HOST:PORT/NAME` locator. */
export function parseNbdUri(uri: string): { host: string; port: string; exportName: string } {
  const match = /^nbd:\/\/([^:/]+):(\d+)\/(.+)$/.exec(uri);
  if (!match) throw new Error(`Not an nbd://HOST:PORT/NAME locator: ${uri}`);
  return { host: match[1], port: match[2], exportName: decodeURIComponent(match[3]) };
}

function sizeOf(device: string): number {
  const name = device.replace(/^\/dev\//, "");
  return Number(Deno.readTextFileSync(`/sys/block/${name}/size`).trim()) * 512;
}

/**
 * Connects `device` (e.g. /dev/nbd0) to the export at `uri` and waits until the kernel reports
 * its size.
 *
 * @throws {Error} when nbd-client fails (its output is in the message).
 */
export async function connectNbd(device: string, uri: string): Promise<NbdConnection> {
  await loadNbd();
  const { host, port, exportName } = parseNbdUri(uri);
  await run("nbd-client", [host, port, device, "-N", exportName, "-b", "4096", "-t", "120"]);
  let connected = true;
  const disconnect = async () => {
    if (!connected) return;
    connected = false;
    await run("nbd-client", ["-d", device]);
    await waitFor(`${device} to disconnect`, () => sizeOf(device) === 0);
  };
  await waitFor(`${device} to have a size`, () => sizeOf(device) > 0);
  return { device, exportName, disconnect, [Symbol.asyncDispose]: disconnect };
}
