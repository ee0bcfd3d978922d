/**
 * The service under systemd as README installs it: packaging/blksnapctl.service (the very text
 * packaging/systemd_unit.ts declares, hardening included) with a drop-in that runs the image's
 * bundle instead of the compiled binary. Each case starts the unit, attaches a device, kills the
 * process with SIGKILL, and sees systemd start it again with the device back: a disk file for the
 * userspace backend; with the module, a virtio partition, a taken snapshot and its image device,
 * which also shows that the hardening leaves the kernel backend its devices.
 */

import assert from "node:assert/strict";
import { systemdUnit } from "../../packaging/systemd_unit.ts";
import { withCleanup } from "./_helpers/cleanup.ts";
import { labEnv, labTest } from "./_helpers/guest.ts";
import { modulesForCase } from "./_helpers/module.ts";
import { scratchPartitions, spareBytes } from "./_helpers/scratch.ts";
import { run, waitFor } from "./_helpers/sh.ts";
import { createClient } from "../../src/client/mod.ts";

const UNIT = "/etc/systemd/system/blksnapctl.service";
const DROP_IN_DIR = "/etc/systemd/system/blksnapctl.service.d";
const STATE = "/var/lib/blksnapctl";
const API = "http://127.0.0.1:8037";

async function show(property: string): Promise<string> {
  return (await run("systemctl", ["show", "-p", property, "--value", "blksnapctl"])).stdout.trim();
}

async function ready(): Promise<boolean> {
  try {
    const response = await fetch(`${API}/readyz`);
    await response.body?.cancel();
    return response.ok;
  } catch {
    return false;
  }
}

/**
 * Installs the unit with a drop-in that runs the bundle with `serveArgs`, starts it and waits for
 * /readyz; `stack` stops it and removes the unit, the drop-in and the state folder.
 */
async function installUnit(stack: AsyncDisposableStack, serveArgs: string): Promise<void> {
  const bundle = labEnv().serviceBundle!;
  await Deno.writeTextFile(UNIT, systemdUnit());
  await Deno.mkdir(DROP_IN_DIR, { recursive: true });
  await Deno.writeTextFile(
    `${DROP_IN_DIR}/lab.conf`,
    [
      "[Service]",
      "Environment=DENO_DIR=/var/lib/blksnapctl/deno",
      "ExecStart=",
      `ExecStart=${Deno.execPath()} run --allow-all --unstable-no-legacy-abort ${bundle} ` +
      `serve --state-dir ${STATE} --log-format json ${serveArgs}`,
      "",
    ].join("\n"),
  );
  stack.defer(async () => {
    await run("systemctl", ["stop", "blksnapctl"], { allowFailure: true });
    await Deno.remove(UNIT).catch(() => {});
    await Deno.remove(DROP_IN_DIR, { recursive: true }).catch(() => {});
    await run("systemctl", ["daemon-reload"]);
    await Deno.remove(STATE, { recursive: true }).catch(() => {});
  });
  await run("systemctl", ["daemon-reload"]);
  await run("systemctl", ["start", "blksnapctl"]);
  await waitFor("the unit's /readyz", ready, { timeoutMs: 120_000 });
}

/** Kills the service with SIGKILL and waits until systemd has started it again and it is ready. */
async function killAndAwaitRestart(): Promise<void> {
  const firstPid = await show("MainPID");
  assert.notEqual(firstPid, "0");
  await run("kill", ["-KILL", firstPid]);
  await waitFor("systemd to start the service again", async () => {
    const pid = await show("MainPID");
    return pid !== "0" && pid !== firstPid && await ready();
  }, { timeoutMs: 120_000 });
  assert.equal(await show("NRestarts"), "1");
  assert.equal(await show("ActiveState"), "active");
}

async function journal(): Promise<string> {
  return (await run("journalctl", ["-u", "blksnapctl", "-o", "cat", "--no-pager"])).stdout;
}

labTest({
  name: "systemd starts the unit, and restarts it with its devices after SIGKILL (userspace)",
  requires: ["service"],
  async fn() {
    await withCleanup(async (stack) => {
      await installUnit(stack, `--backend userspace --allow-path ${STATE}`);
      const disk = `${STATE}/disk0.img`;
      await Deno.writeFile(disk, new Uint8Array(0));
      await Deno.truncate(disk, 64 << 20);
      const attached = await fetch(`${API}/v1/devices`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ path: disk, name: "disk0" }),
      });
      assert.equal(attached.status, 201, await attached.text());
      await killAndAwaitRestart();
      const devices = await (await fetch(`${API}/v1/devices`)).json();
      assert.deepEqual(
        devices.map((d: { id: string; path: string }) => [d.id, d.path]),
        [["disk0", disk]],
        "the restarted service re-attached its device",
      );
      const log = await journal();
      assert.match(log, /"event":"adopt","device":"disk0"/, log);
    });
  },
});

labTest({
  name: "the hardened unit drives the module; after SIGKILL it re-adopts the tracker and snapshot",
  requires: ["service", "module"],
  async fn() {
    await withCleanup(async (stack) => {
      await modulesForCase(stack);
      const { origin, spare } = await scratchPartitions();
      await installUnit(stack, `--backend kernel --allow-path /dev --allow-path ${STATE}`);
      const client = createClient({ baseUrl: API, timeoutMs: 120_000 });
      stack.defer(async () => {
        for (const snapshot of await client.snapshots.list()) {
          await client.snapshots.destroy(snapshot.id);
        }
        for (const device of await client.devices.list()) await client.devices.detach(device.id);
      });
      assert.equal((await client.version()).backend, "kernel");
      await client.devices.attach({ path: origin, name: "origin" });
      const created = await client.snapshots.create({
        devices: ["origin"],
        diffStorage: { path: spare, limitBytes: spareBytes },
      });
      const taken = await client.snapshots.take(created.id);
      assert.equal(taken.state, "taken");

      await killAndAwaitRestart();
      assert.deepEqual((await client.devices.list()).map((d) => d.id), ["origin"]);
      const adopted = await client.snapshots.get(created.id);
      assert.equal(adopted.state, "taken", "the module's snapshot is adopted again");
      const image = await client.images.read(created.id, "origin", { offset: 0, length: 4096 });
      assert.equal((await image.arrayBuffer()).byteLength, 4096, "the image device opens");
      const log = await journal();
      assert.match(log, /"event":"adopt","device":"origin"/, log);
    });
  },
});
