/**
 * The service under systemd as README installs it: packaging/blksnapctl.service (the very text
 * packaging/systemd_unit.ts declares, hardening included) with a drop-in that runs the image's
 * bundle instead of the compiled binary. The case starts the unit, attaches a disk file, kills
 * the process with SIGKILL, and sees systemd start it again with the device re-attached.
 */

import assert from "node:assert/strict";
import { systemdUnit } from "../../packaging/systemd_unit.ts";
import { withCleanup } from "./_helpers/cleanup.ts";
import { labEnv, labTest } from "./_helpers/guest.ts";
import { run, waitFor } from "./_helpers/sh.ts";

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

labTest({
  name: "systemd starts the unit, and restarts it with its devices after SIGKILL",
  requires: ["service"],
  async fn() {
    await withCleanup(async (stack) => {
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
          `serve --backend userspace --state-dir ${STATE} --allow-path ${STATE} --log-format json`,
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

      const disk = `${STATE}/disk0.img`;
      await Deno.writeFile(disk, new Uint8Array(0));
      await Deno.truncate(disk, 64 << 20);
      const attached = await fetch(`${API}/v1/devices`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ path: disk, name: "disk0" }),
      });
      assert.equal(attached.status, 201, await attached.text());

      const firstPid = await show("MainPID");
      assert.notEqual(firstPid, "0");
      await run("kill", ["-KILL", firstPid]);
      await waitFor("systemd to start the service again", async () => {
        const pid = await show("MainPID");
        return pid !== "0" && pid !== firstPid && await ready();
      }, { timeoutMs: 120_000 });
      assert.equal(await show("NRestarts"), "1");
      assert.equal(await show("ActiveState"), "active");
      const devices = await (await fetch(`${API}/v1/devices`)).json();
      assert.deepEqual(
        devices.map((d: { id: string; path: string }) => [d.id, d.path]),
        [["disk0", disk]],
        "the restarted service re-attached its device",
      );
      const journal = await run("journalctl", ["-u", "blksnapctl", "-o", "cat", "--no-pager"]);
      assert.match(journal.stdout, /"event":"adopt","device":"disk0"/, journal.stdout);
    });
  },
});
