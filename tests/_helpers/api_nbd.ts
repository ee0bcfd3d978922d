/**
 * Tracked I/O for API tests through a real NBD client: writes and reads on
 * the service's NBD exports with nbdsh (libnbd), as a backup agent or a VM
 * would do them.
 *
 * @module
 */

import { join } from "node:path";
import { nbdsh } from "./nbd_fixture.ts";

/** One write: `data` at byte `offset`. */
export interface NbdWrite {
  /** First byte. */
  offset: number;
  /** Bytes to write. */
  data: Uint8Array<ArrayBuffer>;
}

/** Where nbdsh's data goes on its way: temp files in `scratchDir`. */
export interface NbdScratch {
  /** A folder for temp files (removed again). */
  scratchDir: string;
}

/** Writes through the export at `uri` with one nbdsh connection, in order, then flushes. */
export async function nbdWrite(
  uri: string,
  writes: NbdWrite[],
  { scratchDir }: NbdScratch,
): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: scratchDir, prefix: "nbd-writes-" });
  try {
    const steps: string[] = [];
    for (const [index, write] of writes.entries()) {
      const file = join(dir, `${index}.bin`);
      await Deno.writeFile(file, write.data);
      steps.push(`h.pwrite(open(${JSON.stringify(file)}, "rb").read(), ${write.offset})`);
    }
    await nbdsh(uri, ["h.connect_uri(uri)", ...steps, "h.flush()", "h.shutdown()"].join("\n"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Reads `length` bytes at byte `offset` from the export at `uri` with nbdsh. */
export async function nbdRead(
  uri: string,
  { offset, length, scratchDir }: NbdScratch & { offset: number; length: number },
): Promise<Uint8Array> {
  const file = await Deno.makeTempFile({ dir: scratchDir, prefix: "nbd-read-" });
  try {
    await nbdsh(
      uri,
      [
        "h.connect_uri(uri)",
        `open(${JSON.stringify(file)}, "wb").write(h.pread(${length}, ${offset}))`,
        "h.shutdown()",
      ].join("\n"),
    );
    return await Deno.readFile(file);
  } finally {
    await Deno.remove(file);
  }
}
