/**
 * Which `/dev/nbdX` of this host are connected to an export of the
 * service, for the userspace backend: the host may mount a tracked device
 * through the kernel's NBD client, and that file system is what a take must
 * freeze.
 *
 * A connected nbdX has a non-zero `size` in sysfs. It belongs to export
 * NAME when its `backend` attribute (the netlink backend identifier, set
 * by `nbd-client -i NAME` where nbd-client has that option) is NAME, or
 * else when the process in its `pid` attribute (nbd-client in ioctl mode,
 * `-L`, which stays running) was started with `-N NAME` and the service's
 * NBD port. A device connected by netlink without an identifier cannot be
 * traced back to its export, and the take then reports nothing frozen for it.
 *
 * @module
 */

import type { SystemTree } from "./block_topology.ts";

/** What identifies an export on this host's NBD clients. */
export interface ExportIdentity {
  /** The export name ("vda"). */
  name: string;
  /** The service's NBD TCP port, when it listens on TCP. */
  port?: number;
}

function startedFor(cmdline: string, target: ExportIdentity): boolean {
  const args = cmdline.split("\0");
  const named =
    args.some((arg, i) =>
      (arg === "-N" || arg === "-name" || arg === "--name") && args[i + 1] === target.name
    ) || args.includes(`--name=${target.name}`);
  return named && (target.port === undefined || args.includes(String(target.port)));
}

/** Kernel names of the connected nbdX devices serving `target` ("nbd0"). */
export function nbdDevicesFor(
  trees: { sys: SystemTree; proc: SystemTree },
  target: ExportIdentity,
): string[] {
  return trees.sys.list("block").filter((name) => {
    if (!/^nbd\d+$/.test(name)) return false;
    if (Number(trees.sys.read(`block/${name}/size`) ?? 0) === 0) return false;
    const backend = trees.sys.read(`block/${name}/backend`);
    if (backend) return backend === target.name;
    const pid = trees.sys.read(`block/${name}/pid`);
    const cmdline = pid ? trees.proc.read(`${pid}/cmdline`) : undefined;
    return cmdline !== undefined && startedFor(cmdline, target);
  });
}
