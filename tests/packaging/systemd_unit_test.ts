import assert from "node:assert/strict";
import { join } from "node:path";
import { DEFAULT_EXEC_START, systemdUnit } from "../../packaging/systemd_unit.ts";
import { toolsMissing } from "../_helpers/nbd_fixture.ts";

const UNIT_FILE = new URL("../../packaging/blksnapctl.service", import.meta.url);

function directives(text: string): Map<string, string[]> {
  const found = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (match) found.set(match[1], [...found.get(match[1]) ?? [], match[2]]);
  }
  return found;
}

Deno.test("packaging/blksnapctl.service is the unit systemd_unit.ts declares", async () => {
  assert.equal(
    await Deno.readTextFile(UNIT_FILE),
    systemdUnit(),
    'run "deno task systemd-unit" to bring the file up to date',
  );
});

Deno.test("the unit restarts the service, is hardened, and still lets it reach its devices", () => {
  const unit = directives(systemdUnit());
  assert.deepEqual(unit.get("ExecStart"), [DEFAULT_EXEC_START]);
  assert.match(DEFAULT_EXEC_START, /^\/usr\/local\/bin\/blksnapctl serve /);
  assert.deepEqual(unit.get("Restart"), ["on-failure"], "a killed process comes back");
  assert.deepEqual(unit.get("StateDirectory"), ["blksnapctl"]);
  assert.match(DEFAULT_EXEC_START, /--state-dir \/var\/lib\/blksnapctl/);
  assert.deepEqual(unit.get("ProtectSystem"), ["strict"]);
  assert.deepEqual(unit.get("NoNewPrivileges"), ["yes"]);
  assert.equal(unit.get("PrivateDevices"), undefined, "it would hide the block devices");
  assert.deepEqual(unit.get("DevicePolicy"), ["closed"]);
  assert.deepEqual(unit.get("DeviceAllow"), [
    "block-* rw",
    "/dev/blksnap-control rw",
    "/dev/veeamblksnap rw",
    "/dev/bdevfilter rw",
  ]);
  assert.match(unit.get("CapabilityBoundingSet")![0], /\bCAP_SYS_ADMIN\b/, "blksnap's ioctls");
  assert.equal(unit.get("MemoryDenyWriteExecute"), undefined, "V8 needs W+X pages");
});

Deno.test({
  name: "systemd-analyze verify accepts the unit",
  ignore: toolsMissing("systemd-analyze"),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "blksnap-unit-" });
    try {
      const path = join(dir, "blksnapctl.service");
      await Deno.writeTextFile(path, systemdUnit({ execStart: "/bin/true serve" }));
      const output = await new Deno.Command("systemd-analyze", {
        args: ["verify", path],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(output.stdout) +
        new TextDecoder().decode(output.stderr);
      assert.equal(output.code, 0, text);
      const aboutUs = text.split("\n").filter((line) => line.includes("blksnapctl.service"));
      assert.deepEqual(aboutUs, [], text);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
