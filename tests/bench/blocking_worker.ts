/**
 * A Worker of the shape-B prototype (DATA-PLANE.md): it accepts one
 * connection at a time on the owner's listening socket and serves it with
 * blocking recv, pread, pwrite and send through FFI, as an nbdkit thread
 * does: fixed newstyle handshake (NBD_OPT_GO, NBD_OPT_INFO,
 * NBD_OPT_EXPORT_NAME, NBD_OPT_ABORT; everything else NBD_REP_ERR_UNSUP, so
 * simple replies only), then READ, WRITE (marking the shared CBT write
 * table with the active number from its header), FLUSH and DISC. No event
 * loop and no promise per request. Under a taken snapshot (the owner sends
 * the chunk table and a request slot), a WRITE over a chunk the shared table
 * shows NEW first asks the owner to copy it: offset and length into the
 * slot, state 1 and Atomics.notify, then Atomics.wait until the owner, having
 * published IN_MEMORY, sets state 2. Bench-only prototype: the snapshot is
 * taken before the workers start (no take or destroy while they run), no
 * validation beyond the request magic and length.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { CBT_HEADER_BYTES, CbtHeader } from "../../src/engine/cbt_map.ts";
import { type BlockingLibc, openBlockingLibc } from "./blocking_libc.ts";

/** What the owner sends a worker. */
export interface BlockingWorkerInit {
  /** The device file. */
  path: string;
  /** Its size in bytes. */
  sizeBytes: number;
  /** The owner's listening socket. */
  listenFd: number;
  /** The CBT map's buffer. */
  cbt: SharedArrayBuffer;
  /** Power of 2 of the tracking block size. */
  blockShift: number;
  /** Number of tracking blocks. */
  blockCount: number;
  /** The chunk table of a taken snapshot and this worker's copy-request slot, if any. */
  chunks?: { buffer: SharedArrayBuffer; count: number; shift: number; slot: SharedArrayBuffer };
}

const MAX_PAYLOAD = 32 << 20;
const MSG_NOSIGNAL = 0x4000;
const OPTION_REPLY_MAGIC_HI = 0x0003e889;
const OPTION_REPLY_MAGIC_LO = 0x045565a9;

class Connection {
  readonly #libc: BlockingLibc;
  readonly #fd: number;
  readonly small = new Uint8Array(4096);
  readonly view = new DataView(this.small.buffer);

  constructor(libc: BlockingLibc, fd: number) {
    this.#libc = libc;
    this.#fd = fd;
  }

  /** Fills `into`; false at end of stream. */
  recvAll(into: Uint8Array): boolean {
    for (let done = 0; done < into.length;) {
      const n = Number(
        this.#libc.recv(this.#fd, into.subarray(done), BigInt(into.length - done), 0),
      );
      if (n <= 0) return false;
      done += n;
    }
    return true;
  }

  sendAll(data: Uint8Array): void {
    for (let done = 0; done < data.length;) {
      const n = Number(
        this.#libc.send(this.#fd, data.subarray(done), BigInt(data.length - done), MSG_NOSIGNAL),
      );
      if (n <= 0) throw new Error("send failed");
      done += n;
    }
  }

  optionReply(option: number, type: number, payload: Uint8Array = new Uint8Array(0)): void {
    const out = new Uint8Array(20 + payload.length);
    const view = new DataView(out.buffer);
    view.setUint32(0, OPTION_REPLY_MAGIC_HI);
    view.setUint32(4, OPTION_REPLY_MAGIC_LO);
    view.setUint32(8, option);
    view.setUint32(12, type);
    view.setUint32(16, payload.length);
    out.set(payload, 20);
    this.sendAll(out);
  }
}

function serve(libc: BlockingLibc, fd: number, file: number, init: BlockingWorkerInit): void {
  const conn = new Connection(libc, fd);
  const { small, view } = conn;
  const greeting = new TextEncoder().encode("NBDMAGICIHAVEOPT\0\x03");
  conn.sendAll(greeting);
  if (!conn.recvAll(small.subarray(0, 4))) return;
  const noZeroes = (view.getUint32(0) & 2) !== 0;
  const transmissionFlags = 1 | 4 | 256; // HAS_FLAGS, SEND_FLUSH, CAN_MULTI_CONN
  for (;;) {
    if (!conn.recvAll(small.subarray(0, 16))) return;
    const option = view.getUint32(8);
    const length = view.getUint32(12);
    if (length > small.length) return;
    if (!conn.recvAll(small.subarray(0, length))) return;
    if (option === 1) { // NBD_OPT_EXPORT_NAME
      const out = new Uint8Array(noZeroes ? 10 : 134);
      new DataView(out.buffer).setUint32(0, Math.floor(init.sizeBytes / 2 ** 32));
      new DataView(out.buffer).setUint32(4, init.sizeBytes % 2 ** 32);
      new DataView(out.buffer).setUint16(8, transmissionFlags);
      conn.sendAll(out);
      break;
    }
    if (option === 2) { // NBD_OPT_ABORT
      conn.optionReply(option, 1);
      return;
    }
    if (option === 6 || option === 7) { // NBD_OPT_INFO, NBD_OPT_GO
      const info = new Uint8Array(12);
      const infoView = new DataView(info.buffer);
      infoView.setUint32(2, Math.floor(init.sizeBytes / 2 ** 32));
      infoView.setUint32(6, init.sizeBytes % 2 ** 32);
      infoView.setUint16(10, transmissionFlags);
      conn.optionReply(option, 3, info); // NBD_REP_INFO, NBD_INFO_EXPORT
      conn.optionReply(option, 1); // NBD_REP_ACK
      if (option === 7) break;
      continue;
    }
    conn.optionReply(option, 0x80000001); // NBD_REP_ERR_UNSUP
  }
  const buffer = new Uint8Array(16 + MAX_PAYLOAD);
  const reply = new DataView(buffer.buffer);
  reply.setUint32(0, 0x67446698);
  const header = new Int32Array(init.cbt, 0, 4);
  const writeTable = new Uint8Array(init.cbt, CBT_HEADER_BYTES + init.blockCount, init.blockCount);
  const blockSize = 2 ** init.blockShift;
  const copier = init.chunks && copyThroughOwner(init.chunks);
  for (;;) {
    if (!conn.recvAll(small.subarray(0, 28))) return;
    if (view.getUint32(0) !== 0x25609513) return;
    const type = view.getUint16(6);
    const offset = view.getUint32(16) * 2 ** 32 + view.getUint32(20);
    const length = view.getUint32(24);
    if (length > MAX_PAYLOAD) return;
    reply.setUint32(8, view.getUint32(8));
    reply.setUint32(12, view.getUint32(12));
    let error = 0;
    let payload = 0;
    if (type === 0) { // READ
      for (let done = 0; done < length;) {
        const n = Number(
          libc.pread(
            file,
            buffer.subarray(16 + done),
            BigInt(length - done),
            BigInt(offset + done),
          ),
        );
        if (n <= 0) {
          error = 5;
          break;
        }
        done += n;
      }
      payload = error === 0 ? length : 0;
    } else if (type === 1) { // WRITE
      if (!conn.recvAll(buffer.subarray(16, 16 + length))) return;
      const number = Atomics.load(header, CbtHeader.ACTIVE);
      const last = Math.min(Math.floor((offset + length - 1) / blockSize), init.blockCount - 1);
      for (let i = Math.floor(offset / blockSize); i <= last; i++) {
        if (writeTable[i] < number) writeTable[i] = number;
      }
      if (copier !== undefined && length > 0) copier(offset, length);
      for (let done = 0; done < length;) {
        const n = Number(
          libc.pwrite(
            file,
            buffer.subarray(16 + done, 16 + length),
            BigInt(length - done),
            BigInt(offset + done),
          ),
        );
        if (n <= 0) {
          error = 5;
          break;
        }
        done += n;
      }
    } else if (type === 2) { // DISC
      return;
    } else if (type === 3) { // FLUSH
      if (libc.fdatasync(file) !== 0) error = 5;
    } else {
      error = 22;
    }
    reply.setUint32(4, error);
    conn.sendAll(buffer.subarray(0, 16 + payload));
  }
}

/** Asks the owner, through the slot, to copy the NEW chunks of a range, and waits for it. */
function copyThroughOwner(
  chunks: NonNullable<BlockingWorkerInit["chunks"]>,
): (offset: number, length: number) => void {
  const states = new Uint8Array(chunks.buffer, chunks.count * 8, chunks.count);
  const size = 2 ** chunks.shift;
  const state = new Int32Array(chunks.slot, 0, 1);
  const range = new Float64Array(chunks.slot, 8, 2);
  return (offset, length) => {
    const last = Math.floor((offset + length - 1) / size);
    let index = Math.floor(offset / size);
    while (index <= last && states[index] !== 0) index++;
    if (index > last) return;
    range[0] = offset;
    range[1] = length;
    Atomics.store(state, 0, 1);
    Atomics.notify(state, 0);
    while (Atomics.load(state, 0) !== 2) Atomics.wait(state, 0, 1);
    Atomics.store(state, 0, 0);
    Atomics.notify(state, 0);
  };
}

self.onmessage = (event: MessageEvent<BlockingWorkerInit>) => {
  const init = event.data;
  const libc = openBlockingLibc();
  const file = libc.open(new TextEncoder().encode(`${init.path}\0`), 2);
  self.postMessage("ready");
  for (;;) {
    const fd = libc.accept(init.listenFd, null, null);
    if (fd < 0) return;
    try {
      serve(libc, fd, file, init);
    } catch {
      // the peer went away: take the next connection
    } finally {
      libc.close(fd);
    }
  }
};
