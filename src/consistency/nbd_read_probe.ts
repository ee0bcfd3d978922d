/**
 * Which export a host /dev/nbdX is connected to, found by reading it: the
 * last resort of src/consistency/nbd_attachments.ts for a device that names
 * nothing (connected by netlink without a backend identifier, its
 * nbd-client gone).
 *
 * Design note: for each such device, pick one block at random (4096 bytes,
 * aligned, anywhere in the device, a different one for each device probed
 * at once: a probe and other traffic hardly ever ask for exactly that block
 * at the same moment), arm a read
 * probe for that offset and length on this service's NBD server
 * (src/nbd/read_probes.ts), read the block with O_DIRECT (direct_read.ts:
 * past the page cache, so the kernel must ask its server) and wait up to
 * `windowMs` (500 ms by default) for an export to get that READ: that export
 * is the device's. No READ in the window (the device is served elsewhere,
 * or the read is stuck) or a read that fails means "not identified"; a take
 * never waits longer than the window for it (a stuck read keeps one pool
 * thread until the kernel gives up on it, never the take). Probes of
 * several devices run at once. The read never writes.
 *
 * @module
 */

import type { ReadProbeBoard } from "../nbd/read_probes.ts";
import type { SystemTree } from "./block_topology.ts";
import { DIRECT_ALIGNMENT, directReadBlock, type ReadBlock } from "./direct_read.ts";

/** Default wait for the probe's READ to reach the server. */
export const DEFAULT_PROBE_WINDOW_MS = 500;

/** What a read probe needs. */
export interface NbdReadProbeOptions {
  /** The board the service's NBD server shows its READs to. */
  board: ReadProbeBoard;
  /** Reads a block of a device (default: O_DIRECT through libc; tests read through an NBD client). */
  readBlock?: ReadBlock;
  /** How long to wait for the READ (default {@link DEFAULT_PROBE_WINDOW_MS}). */
  windowMs?: number;
}

/** One device's outcome: the export's name, or why it is not known. */
export type ProbeOutcome = { exportName: string } | { unknown: string };

/**
 * Probes each connected device in `names` ("nbd0", sizes from `sys`) and
 * resolves with each one's outcome; never rejects.
 */
export async function probeNbdExports(
  names: readonly string[],
  options: NbdReadProbeOptions & { sys: SystemTree },
): Promise<Map<string, ProbeOutcome>> {
  const taken = new Set<number>();
  const outcomes = await Promise.all(names.map((name) => {
    const blocks = Math.floor(
      Number(options.sys.read(`block/${name}/size`) ?? 0) * 512 / DIRECT_ALIGNMENT,
    );
    const offset = blocks > 0 ? distinctOffset(blocks, taken) : undefined;
    return offset === undefined
      ? { unknown: `${name} has no whole block to read` }
      : probeOne(name, offset, options);
  }));
  return new Map(names.map((name, i) => [name, outcomes[i]]));
}

/**
 * A random block offset below `blocks` blocks not in `taken` (then added to
 * it): one READ must answer one probe only. Undefined after 64 tries.
 */
function distinctOffset(blocks: number, taken: Set<number>): number | undefined {
  for (let attempt = 0; attempt < 64; attempt++) {
    const [high, low] = crypto.getRandomValues(new Uint32Array(2));
    // 53 random bits: exact in a double, so every block can come out.
    const offset = (((high & 0x1fffff) * 2 ** 32 + low) % blocks) * DIRECT_ALIGNMENT;
    if (taken.has(offset)) continue;
    taken.add(offset);
    return offset;
  }
  return undefined;
}

async function probeOne(
  name: string,
  offset: number,
  options: NbdReadProbeOptions & { sys: SystemTree },
): Promise<ProbeOutcome> {
  const readBlock = options.readBlock ?? directReadBlock;
  try {
    const exportName = await options.board.watch(
      { offset, length: DIRECT_ALIGNMENT },
      () => readBlock(`/dev/${name}`, offset, DIRECT_ALIGNMENT),
      { windowMs: options.windowMs ?? DEFAULT_PROBE_WINDOW_MS },
    );
    return exportName === undefined
      ? { unknown: `no READ of ${name}'s probe block reached this service` }
      : { exportName };
  } catch (error) {
    return { unknown: `reading ${name} failed: ${(error as Error).message}` };
  }
}
