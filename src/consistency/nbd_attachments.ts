/**
 * Which `/dev/nbdX` of this host are connected to an export of the
 * service, for the userspace backend: the host may mount a tracked device
 * through the kernel's NBD client, and that file system is what a take must
 * freeze.
 *
 * What the kernel leaves in sysfs (drivers/block/nbd.c, checked in the lab:
 * tests/e2e/userspace_nbd_attachments_test.ts):
 * - a connected nbdX has a non-zero `size`;
 * - `pid` is the task that started the device: in ioctl mode
 *   (`nbd-client -L`, `qemu-nbd -c`) the process (for qemu-nbd, the thread)
 *   that stays in NBD_DO_IT for as long as the device is connected; by
 *   netlink (nbd-client's default) the nbd-client that sent the connect,
 *   which exits right after;
 * - `backend` exists only for netlink connections and holds the backend
 *   identifier the client sent (nbd-client's `-i`, which Debian 12's 3.24
 *   lacks; empty without one).
 *
 * So nbdX belongs to export NAME of this service when
 * 1. its `backend` is NAME or one of the export's NBD URIs
 *    (`nbd://HOST:PORT/NAME`, `nbd+unix:///NAME?socket=PATH`); or
 * 2. its `pid` is a running nbd-client started for NAME on this service:
 *    `-N NAME` (or `-name`, `--name`), and the service's port among its
 *    arguments (none at all meaning nbd-client's default, 10809) or its
 *    Unix socket after `-u`/`-unix`/`--unix`; or
 * 3. its `pid` is a running qemu-nbd whose arguments include one of the
 *    export's URIs (`qemu-nbd -c /dev/nbdX -f raw nbd://HOST:PORT/NAME`).
 * A device connected by netlink without an identifier names nothing that
 * leads back to its export (its socket is held by the kernel, its
 * nbd-client is gone): the take then reports nothing frozen for it.
 *
 * @module
 */

import type { SystemTree } from "./block_topology.ts";

/** nbd-client's port when none is given. */
const NBD_DEFAULT_PORT = 10809;

/** What identifies an export on this host's NBD clients. */
export interface ExportIdentity {
  /** The export name ("vda"). */
  name: string;
  /** The service's NBD TCP port, when it listens on TCP. */
  port?: number;
  /** The service's NBD Unix socket, when it listens on one. */
  socketPath?: string;
  /** The export's NBD URIs (its locator), which a backend identifier may also be. */
  uris?: readonly string[];
}

/** The value after option `names` in `args` (`-N x`, or `--name=x`). */
function optionValue(args: string[], names: readonly string[]): string | undefined {
  for (const [i, arg] of args.entries()) {
    if (names.includes(arg)) return args[i + 1];
    const long = names.find((name) => name.startsWith("--") && arg.startsWith(`${name}=`));
    if (long) return arg.slice(long.length + 1);
  }
  return undefined;
}

/** True when nbd-client's command line `cmdline` (NUL-separated) connects to `target`. */
function startedFor(cmdline: string, target: ExportIdentity): boolean {
  const args = cmdline.split("\0").filter((arg) => arg !== "");
  if (/(^|\/)qemu-nbd$/.test(args[0] ?? "")) {
    return args.slice(1).some((arg) => (target.uris ?? []).includes(arg));
  }
  if (!/(^|\/)nbd-client$/.test(args[0] ?? "")) return false;
  if (optionValue(args, ["-N", "-name", "--name"]) !== target.name) return false;
  const socket = optionValue(args, ["-u", "-unix", "--unix"]);
  if (socket !== undefined) return socket === target.socketPath;
  if (target.port === undefined) return false;
  const numbers = args.slice(1).filter((arg) => /^\d+$/.test(arg));
  if (numbers.includes(String(target.port))) return true;
  // Only option values are numbers then (-b 4096, -t 120, -C 2): nbd-client's default port.
  const optionValues = new Set(
    args.flatMap((arg, i) => /^-/.test(arg) && /^\d+$/.test(args[i + 1] ?? "") ? [i + 1] : []),
  );
  const positional = args.slice(1).filter((arg, i) =>
    /^\d+$/.test(arg) && !optionValues.has(i + 1)
  );
  return positional.length === 0 && target.port === NBD_DEFAULT_PORT;
}

/** Kernel names of the connected nbdX devices serving `target` ("nbd0"). */
export function nbdDevicesFor(
  trees: { sys: SystemTree; proc: SystemTree },
  target: ExportIdentity,
): string[] {
  return trees.sys.list("block").filter((name) => {
    if (!/^nbd\d+$/.test(name)) return false;
    if (Number(trees.sys.read(`block/${name}/size`) ?? 0) === 0) return false;
    const backend = trees.sys.read(`block/${name}/backend`)?.trim();
    if (backend) return backend === target.name || (target.uris ?? []).includes(backend);
    const pid = trees.sys.read(`block/${name}/pid`)?.trim();
    const cmdline = pid ? trees.proc.read(`${pid}/cmdline`) : undefined;
    return cmdline !== undefined && startedFor(cmdline, target);
  });
}
