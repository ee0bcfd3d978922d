/**
 * The libc calls of the shape-B prototype (DATA-PLANE.md): blocking socket
 * and file syscalls through FFI. Every call blocks only the thread (Worker)
 * that makes it. Bench-only; needs --allow-ffi.
 *
 * @module
 */

const symbols = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  accept: { parameters: ["i32", "pointer", "pointer"], result: "i32" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  pwrite: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  fdatasync: { parameters: ["i32"], result: "i32" },
} as const;

/** The opened libc calls. */
export type BlockingLibc = Deno.DynamicLibrary<typeof symbols>["symbols"];

/** Opens libc with the calls above. */
export function openBlockingLibc(): BlockingLibc {
  return Deno.dlopen("libc.so.6", symbols).symbols;
}

/**
 * A listening TCP socket on 127.0.0.1:`port` (SO_REUSEADDR, backlog 128),
 * made by the owner; its descriptor is shared by every Worker (one process).
 */
export function listenTcp(libc: BlockingLibc, port: number): number {
  const fd = libc.socket(2, 1, 0);
  if (fd < 0) throw new Error("socket() failed");
  libc.setsockopt(fd, 1, 2, new Uint8Array(new Int32Array([1]).buffer), 4);
  const address = new Uint8Array(16);
  new DataView(address.buffer).setUint16(0, 2, true);
  new DataView(address.buffer).setUint16(2, port, false);
  address.set([127, 0, 0, 1], 4);
  if (libc.bind(fd, address, 16) !== 0) throw new Error(`bind(127.0.0.1:${port}) failed`);
  if (libc.listen(fd, 128) !== 0) throw new Error("listen() failed");
  return fd;
}

/** A copy-request slot: Int32 state (0 idle, 1 asked, 2 done) at 0, Float64 offset and length from 8. */
export const COPY_SLOT_BYTES = 24;
