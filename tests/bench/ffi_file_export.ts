/**
 * A benchmark-only file export whose pread/pwrite go through libc with
 * Deno's nonblocking FFI (each call runs on a separate thread and returns a
 * promise). Profiles of the node:fs export show that Deno 2.9 runs a
 * FileHandle.write's pwrite on the main thread (reads go to a thread),
 * so every WRITE's page-cache copy serialises with the socket I/O of all
 * connections; this export measures what moving both off the main thread
 * gives. Needs --allow-ffi.
 *
 * @module
 */

import { ServiceError } from "../../src/errors.ts";
import type { NbdExport } from "../../src/nbd/export.ts";

const symbols = {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize", nonblocking: true },
  pwrite: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize", nonblocking: true },
  fdatasync: { parameters: ["i32"], result: "i32", nonblocking: true },
} as const;

const O_RDWR = 2;

/** A read-write export of the file at `path` (its size is the export size). */
export async function ffiFileExport(
  path: string,
  name: string,
): Promise<NbdExport & { close(): void }> {
  const libc = Deno.dlopen("libc.so.6", symbols);
  const sizeBytes = (await Deno.stat(path)).size;
  const fd = libc.symbols.open(new TextEncoder().encode(`${path}\0`), O_RDWR);
  if (fd < 0) {
    libc.close();
    throw new ServiceError("IO", `Cannot open ${path} through libc`);
  }
  const io = async (
    call: "pread" | "pwrite",
    offset: number,
    bytes: Uint8Array,
  ): Promise<void> => {
    let done = 0;
    while (done < bytes.length) {
      const n = Number(
        await libc.symbols[call](
          fd,
          bytes.subarray(done),
          BigInt(bytes.length - done),
          BigInt(offset + done),
        ),
      );
      if (n <= 0) throw new ServiceError("IO", `Cannot ${call} at ${offset + done} of ${path}`);
      done += n;
    }
  };
  const sync = async () => {
    if ((await libc.symbols.fdatasync(fd)) !== 0) {
      throw new ServiceError("IO", `Cannot flush ${path}`);
    }
  };
  return {
    name,
    sizeBytes,
    readOnly: false,
    canMultiConn: true,
    read: (offset, into) => io("pread", offset, into),
    write: async (offset, data, options) => {
      await io("pwrite", offset, data);
      if (options.fua) await sync();
    },
    flush: sync,
    close: () => {
      libc.symbols.close(fd);
      libc.close();
    },
  };
}
