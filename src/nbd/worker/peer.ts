/**
 * Who a Worker's accepted connection comes from: the name for the log, and
 * whether the peer is on this host, which decides whether READ data is
 * spliced to it.
 *
 * A peer on this host gets READs by pread and send, not spliced: its receive
 * then copies out of cold page-cache pages, which costs it more than the
 * sender's copy saves. Measured with nbdcopy to null: over 127.0.0.1 (4 GiB,
 * /tmp/rdall.sh in issue 11's note): spliced, 2.6-2.7 GiB/s with 61 ticks of
 * server CPU and 225 of client; pread and send, 2.9-3.0 GiB/s with 138 and
 * 108. Over a network the receiver's copy is the NIC's DMA, and splicing
 * saves the sender's copy outright.
 *
 * @module
 */

import { type Libc, Sys } from "./libc.ts";

/** A connection's peer. */
export interface Peer {
  /** "a.b.c.d:port", or "unix socket". */
  peer: string;
  /**
   * A Unix socket, or TCP from 127.0.0.0/8 or from the socket's own local
   * address (a connection to one of this host's addresses, which the
   * kernel carries over loopback too).
   */
  hostLocal: boolean;
}

/** Describes the accepted socket `fd` whose peer address is `address`; sets TCP_NODELAY on TCP. */
export function describePeer(c: Libc, fd: number, address: Uint8Array): Peer {
  const view = new DataView(address.buffer, address.byteOffset, address.byteLength);
  if (view.getUint16(0, true) !== Sys.AF_INET) return { peer: "unix socket", hostLocal: true };
  const one = new Uint8Array(new Int32Array([1]).buffer);
  c.setsockopt(fd, Sys.IPPROTO_TCP, Sys.TCP_NODELAY, one, 4);
  const peerIp = address.subarray(4, 8);
  return {
    peer: `${peerIp.join(".")}:${view.getUint16(2, false)}`,
    hostLocal: peerIp[0] === 127 || sameAddress(c, fd, peerIp),
  };
}

/** True when the local IPv4 address of `fd` is `ip`. */
function sameAddress(c: Libc, fd: number, ip: Uint8Array): boolean {
  const local = new Uint8Array(16);
  const length = new Uint32Array([local.length]);
  if (c.getsockname(fd, local, new Uint8Array(length.buffer)) !== 0) return false;
  return local.subarray(4, 8).every((byte, i) => byte === ip[i]);
}
