/**
 * Listening sockets of the Worker plane, made by the owner through libc so
 * that every Worker (one process, one descriptor table) can accept on the
 * same descriptor: TCP on an IPv4 address (SO_REUSEADDR, like Deno.listen)
 * and a Unix stream socket. Both are non-blocking: idle Workers wait in
 * poll() and race for accept4(), the losers getting EAGAIN.
 *
 * @module
 */

import { ServiceError } from "../../errors.ts";
import { cString, errno, libc, Sys } from "./libc.ts";

const BACKLOG = 511;
const EADDRINUSE = 98;

/** A listening descriptor and where it listens. */
export interface ListenSocket {
  /** The descriptor. */
  fd: number;
  /** The bound TCP port (after port 0 picked one). */
  port?: number;
}

/** The four bytes of a dotted IPv4 address ("localhost" is 127.0.0.1). */
function ipv4(hostname: string): number[] {
  const text = hostname === "localhost" ? "127.0.0.1" : hostname;
  const parts = text.split(".").map((part) => /^\d{1,3}$/.test(part) ? Number(part) : NaN);
  if (parts.length !== 4 || parts.some((part) => !(part >= 0 && part <= 255))) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      `Cannot listen on ${hostname} with NBD Workers: they take an IPv4 address`,
      { field: "hostname" },
    );
  }
  return parts;
}

function failed(where: string, code: number): ServiceError {
  return new ServiceError(
    code === EADDRINUSE ? "CONFLICT" : "UNAVAILABLE",
    `Cannot listen on ${where}: errno ${code}`,
  );
}

/** Listens on TCP `hostname:port` (port 0: any free port). CONFLICT when taken. */
export function listenTcp(hostname: string, port: number): ListenSocket {
  const bytes = ipv4(hostname);
  const c = libc();
  const fd = c.socket(Sys.AF_INET, Sys.SOCK_STREAM | Sys.SOCK_NONBLOCK | Sys.SOCK_CLOEXEC, 0);
  if (fd < 0) throw failed(`${hostname}:${port}`, errno());
  const one = new Uint8Array(new Int32Array([1]).buffer);
  c.setsockopt(fd, Sys.SOL_SOCKET, Sys.SO_REUSEADDR, one, 4);
  const address = new Uint8Array(16);
  const view = new DataView(address.buffer);
  view.setUint16(0, Sys.AF_INET, true);
  view.setUint16(2, port, false);
  address.set(bytes, 4);
  if (c.bind(fd, address, 16) !== 0 || c.listen(fd, BACKLOG) !== 0) {
    const code = errno();
    c.close(fd);
    throw failed(`${hostname}:${port}`, code);
  }
  const length = new Uint32Array([16]);
  c.getsockname(fd, address, new Uint8Array(length.buffer));
  return { fd, port: view.getUint16(2, false) };
}

/** Listens on the Unix socket `path` (which must not exist). */
export function listenUnix(path: string): ListenSocket {
  const name = cString(path);
  if (name.length > 108) {
    throw new ServiceError("INVALID_ARGUMENT", `Cannot listen on ${path}: the path is too long`, {
      field: "unixPath",
    });
  }
  const c = libc();
  const fd = c.socket(Sys.AF_UNIX, Sys.SOCK_STREAM | Sys.SOCK_NONBLOCK | Sys.SOCK_CLOEXEC, 0);
  if (fd < 0) throw failed(path, errno());
  const address = new Uint8Array(110);
  new DataView(address.buffer).setUint16(0, Sys.AF_UNIX, true);
  address.set(name, 2);
  if (c.bind(fd, address, 2 + name.length) !== 0 || c.listen(fd, BACKLOG) !== 0) {
    const code = errno();
    c.close(fd);
    throw failed(path, code);
  }
  return { fd };
}
