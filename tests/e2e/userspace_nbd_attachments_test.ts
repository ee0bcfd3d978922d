/**
 * What the kernel's NBD client leaves in sysfs for each way a client connects, and which of them
 * a userspace take can trace back to the service's export and freeze
 * (src/consistency/nbd_attachments.ts): the guest connects /dev/nbd1 to a tracked device's export
 * with `nbd-client -L` (ioctl), with `qemu-nbd -c` (ioctl, from a thread of qemu-nbd) and with
 * nbd-client's default (netlink; Debian 12's nbd-client 3.24 has no `-i` to give it an
 * identifier), mounts the ext4 on it, and takes a snapshot. The `pid` and `backend` attributes
 * seen are written to `results/nbd-attachments.json`.
 *
 * - ioctl: no `backend` attribute, `pid` the client that keeps running: frozen.
 * - netlink: `backend` empty, `pid` an nbd-client that has exited: nothing leads back to the
 *   export, and the take reports nothing frozen.
 */

import assert from "node:assert/strict";
import { createClient } from "../../src/client/mod.ts";
import { withCleanup } from "./_helpers/cleanup.ts";
import { mkfsExt4, mount } from "./_helpers/ext4.ts";
import { labEnv, labTest } from "./_helpers/guest.ts";
import { loadNbd, parseNbdUri } from "./_helpers/nbd.ts";
import { scratchFiles } from "./_helpers/scratch.ts";
import { startService } from "./_helpers/service.ts";
import { exists, run, waitFor } from "./_helpers/sh.ts";

const MiB = 1024 * 1024;
const NBD = "/dev/nbd1";

function sysfs(attribute: string): string | null {
  try {
    return Deno.readTextFileSync(`/sys/block/nbd1/${attribute}`).trim();
  } catch {
    return null;
  }
}

const sizeOf = () => Number(sysfs("size") ?? 0) * 512;

/** One way of connecting /dev/nbd1 to an export. */
interface Mode {
  name: string;
  connect: (locator: string) => Promise<unknown>;
  disconnect: () => Promise<unknown>;
  /** ioctl mode: the client stays; else netlink. */
  ioctl: boolean;
}

function nbdClient(locator: string, more: string[]) {
  const { host, port, exportName } = parseNbdUri(locator);
  return run("nbd-client", [host, port, NBD, "-N", exportName, "-b", "4096", ...more]);
}

const MODES: Mode[] = [
  {
    name: "nbd-client -L",
    connect: (locator) => nbdClient(locator, ["-L"]),
    disconnect: () => run("nbd-client", ["-d", NBD]),
    ioctl: true,
  },
  {
    name: "qemu-nbd -c",
    connect: (locator) => run("qemu-nbd", ["-c", NBD, "-f", "raw", locator]),
    disconnect: () => run("qemu-nbd", ["-d", NBD]),
    ioctl: true,
  },
  {
    name: "nbd-client (netlink)",
    connect: (locator) => nbdClient(locator, []),
    disconnect: () => run("nbd-client", ["-d", NBD]),
    ioctl: false,
  },
];

labTest({
  name:
    "userspace take traces /dev/nbd1 to its export through nbd-client -L and qemu-nbd -c, and reports nothing frozen for a netlink nbd-client",
  requires: ["service"],
  async fn(t) {
    await withCleanup(async (stack) => {
      const work = await Deno.makeTempDir({ dir: await scratchFiles(), prefix: "attach-" });
      stack.defer(() => Deno.remove(work, { recursive: true }));
      const service = stack.use(await startService({ backend: "userspace" }));
      const client = createClient({ baseUrl: service.url, timeoutMs: 120_000 });
      const disk = `${work}/vat.img`;
      await Deno.writeFile(disk, new Uint8Array());
      await Deno.truncate(disk, 64 * MiB);
      const device = await client.devices.attach({ path: disk, name: "vat" });
      stack.defer(() => client.devices.detach(device.id));
      await loadNbd();
      const facts: Record<string, unknown>[] = [];
      stack.defer(async () => {
        const out = labEnv().outDir;
        const text = JSON.stringify(facts, null, 2);
        console.log(`NBD clients in sysfs: ${text}`);
        if (out) await Deno.writeTextFile(`${out}/nbd-attachments.json`, `${text}\n`);
      });
      let formatted = false;
      for (const mode of MODES) {
        await t.step(mode.name, async () => {
          await withCleanup(async (inner) => {
            await mode.connect(device.locator);
            inner.defer(async () => {
              await mode.disconnect();
              await waitFor(`${NBD} to disconnect`, () => sizeOf() === 0);
            });
            await waitFor(`${NBD} to have a size`, () => sizeOf() > 0);
            const pid = sysfs("pid");
            const cmdline = pid !== null && exists(`/proc/${pid}/cmdline`)
              ? Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").join(" ").trim()
              : null;
            const seen: Record<string, unknown> = {
              mode: mode.name,
              pid,
              pidRunning: pid !== null && exists(`/proc/${pid}`),
              cmdline,
              backend: sysfs("backend"),
            };
            facts.push(seen);
            if (!formatted) await mkfsExt4(NBD);
            formatted = true;
            const fs = inner.use(await mount(NBD, `${work}/mnt`));
            await Deno.writeTextFile(`${fs.dir}/${crypto.randomUUID()}`, mode.name);
            const created = await client.snapshots.create({
              devices: [device.id],
              diffStorage: { path: `${work}/${crypto.randomUUID()}.diff`, limitBytes: 128 * MiB },
            });
            inner.defer(() => client.snapshots.destroy(created.id));
            const report = (await client.snapshots.take(created.id)).consistency!;
            const frozen = report.devices[0].filesystems;
            seen.frozen = frozen.map((f) => `${f.blockDevice} ${f.frozen}`);
            if (mode.ioctl) {
              assert.equal(seen.backend, null, "ioctl mode has no backend attribute");
              assert.ok(seen.pidRunning, "the ioctl-mode client keeps running");
              assert.deepEqual(frozen.map((f) => [f.blockDevice, f.mountPoint, f.frozen]), [
                ["nbd1", fs.dir, true],
              ], JSON.stringify(report));
            } else {
              assert.equal(seen.backend, "", "netlink without an identifier: empty");
              assert.equal(seen.pidRunning, false, "the netlink nbd-client has exited");
              assert.deepEqual(frozen, [], JSON.stringify(report));
            }
          });
        });
      }
    });
  },
});
