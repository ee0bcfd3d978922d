import assert from "node:assert/strict";
import { join } from "node:path";
import { treeAt } from "../../src/consistency/block_topology.ts";
import { ConsistentDriver } from "../../src/consistency/consistent_driver.ts";
import type { FsFreezer } from "../../src/consistency/fs_freezer.ts";
import { Hooks } from "../../src/consistency/hooks.ts";
import { type MountEntry, parseMountinfo } from "../../src/consistency/mountinfo.ts";
import type { SnapshotDriver } from "../../src/driver.ts";
import { ServiceError } from "../../src/errors.ts";
import { rejectsWithProblem } from "../_helpers/api_problem.ts";
import { type ServiceFixture, withService, writeDisk } from "../_helpers/service_fixture.ts";
import { makeTree, SYSFS_FILES, SYSFS_LINKS } from "../_helpers/system_tree.ts";

const MIB = 1 << 20;

/** The host mounts export "vda" through /dev/nbd0 (partition nbd0p1) at /mnt/nbd, twice. */
const MOUNTINFO = parseMountinfo([
  "22 1 254:1 / / rw - ext4 /dev/vda1 rw",
  "43 22 43:1 / /mnt/nbd rw - ext4 /dev/nbd0p1 rw",
  "44 22 43:1 /x /srv/again rw - ext4 /dev/nbd0p1 rw",
].join("\n"));

/** A freezer that records calls and what state the snapshot was in at each. */
class RecordingFreezer implements FsFreezer {
  readonly calls: string[] = [];
  busy = new Set<string>();
  stateOf: () => Promise<string> = () => Promise.resolve("?");

  async freeze(mountPoint: string): Promise<void> {
    this.calls.push(`freeze ${mountPoint} while ${await this.stateOf()}`);
    if (this.busy.has(mountPoint)) {
      throw new ServiceError("CONFLICT", `Cannot freeze ${mountPoint} (EBUSY)`);
    }
  }

  async thaw(mountPoint: string): Promise<void> {
    this.calls.push(`thaw ${mountPoint} while ${await this.stateOf()}`);
  }

  close(): void {}
}

interface Setup {
  freezer: RecordingFreezer;
  log: string[];
  hooksDir: string;
  sysRoot: string;
}

async function withConsistentService(
  options: {
    hooks?: Record<string, string>;
    maxFreezeMs?: number;
    slowTakeMs?: number;
    mounts?: () => Promise<MountEntry[]>;
  },
  body: (fixture: ServiceFixture, setup: Setup) => Promise<void>,
): Promise<void> {
  const sysRoot = await makeTree({ ...SYSFS_FILES, "devices/nbd0/backend": "vda\n" }, SYSFS_LINKS);
  const hooksDir = await Deno.makeTempDir({ prefix: "hooks-" });
  for (const [name, script] of Object.entries(options.hooks ?? {})) {
    await Deno.writeTextFile(join(hooksDir, name), `#!/bin/sh\n${script}\n`, { mode: 0o755 });
  }
  const log: string[] = [];
  const hooks = await Hooks.fromDirectory(hooksDir, { timeoutMs: 2000, log: (l) => log.push(l) });
  const freezer = new RecordingFreezer();
  try {
    await withService({
      wrapDriver: (driver) => {
        const slowTake = async (id: string) => {
          await new Promise((r) => setTimeout(r, options.slowTakeMs));
          return await driver.takeSnapshot(id);
        };
        const inner: SnapshotDriver = options.slowTakeMs === undefined
          ? driver
          : new Proxy(driver, {
            get(target, property) {
              if (property === "takeSnapshot") return slowTake;
              const value = Reflect.get(target, property, target);
              return typeof value === "function" ? value.bind(target) : value;
            },
          });
        return new ConsistentDriver(inner, {
          freezer,
          hooks,
          maxFreezeMs: options.maxFreezeMs,
          log: (line) => log.push(line),
          sys: treeAt(sysRoot),
          proc: treeAt(join(sysRoot, "proc")),
          mounts: options.mounts ?? (() => Promise.resolve(MOUNTINFO)),
        });
      },
    }, async (fixture) => {
      const path = join(fixture.allowed, "vda.img");
      await writeDisk(path, MIB);
      await fixture.client.devices.attach({ path, name: "vda" });
      await body(fixture, { freezer, log, hooksDir, sysRoot });
    });
  } finally {
    await Deno.remove(sysRoot, { recursive: true });
    await Deno.remove(hooksDir, { recursive: true });
  }
}

async function create(fixture: ServiceFixture): Promise<string> {
  const snapshot = await fixture.client.snapshots.create({
    devices: ["vda"],
    diffStorage: {
      path: join(fixture.allowed, `${crypto.randomUUID()}.diff`),
      limitBytes: 4 * MIB,
    },
  });
  return snapshot.id;
}

Deno.test("take freezes the file system on the export's /dev/nbd0 partition just before the switch and thaws it after", async () => {
  await withConsistentService({}, async (fixture, { freezer }) => {
    const id = await create(fixture);
    freezer.stateOf = async () => (await fixture.driver.snapshotInfo(id)).state;
    const taken = await fixture.client.snapshots.take(id);
    assert.deepEqual(freezer.calls, ["freeze /mnt/nbd while created", "thaw /mnt/nbd while taken"]);
    const report = taken.consistency!;
    assert.equal(report.freeze, true);
    assert.equal(report.thawedEarly, false);
    assert.equal(report.devices.length, 1);
    const [fs] = report.devices[0].filesystems;
    assert.deepEqual({ ...fs, frozenMs: undefined }, {
      mountPoint: "/mnt/nbd",
      fsType: "ext4",
      blockDevice: "nbd0p1",
      frozen: true,
      frozenMs: undefined,
    });
    assert.ok(fs.frozenMs! >= 0);
    assert.deepEqual(
      (await fixture.client.snapshots.get(id)).consistency,
      report,
      "kept until destroy",
    );
    await fixture.client.snapshots.destroy(id);
  });
});

Deno.test("take with freeze: false freezes nothing and says so", async () => {
  await withConsistentService({}, async (fixture, { freezer }) => {
    const id = await create(fixture);
    const response = await fixture.fetch(`/v1/snapshots/${id}/take`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ freeze: false }),
    });
    const taken = await response.json();
    assert.equal(response.status, 200, JSON.stringify(taken));
    assert.deepEqual(freezer.calls, []);
    assert.deepEqual(taken.consistency, {
      freeze: false,
      devices: [{ deviceId: "vda", filesystems: [] }],
      hooks: [],
      thawedEarly: false,
    });
    const bad = await fixture.fetch(`/v1/snapshots/${id}/take`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ freeze: "no" }),
    });
    assert.equal(bad.status, 400);
    await bad.body?.cancel();
  });
});

Deno.test("a failed take still thaws; a file system frozen by someone else is left frozen", async () => {
  await withConsistentService({}, async (fixture, { freezer }) => {
    const id = await create(fixture);
    await fixture.client.snapshots.take(id);
    freezer.calls.length = 0;
    await rejectsWithProblem(fixture.client.snapshots.take(id), { status: 409, code: "CONFLICT" });
    assert.deepEqual(freezer.calls, ["freeze /mnt/nbd while ?", "thaw /mnt/nbd while ?"]);

    const other = await (async () => {
      await fixture.client.snapshots.destroy(id);
      return await create(fixture);
    })();
    freezer.calls.length = 0;
    freezer.busy.add("/mnt/nbd");
    const taken = await fixture.client.snapshots.take(other);
    assert.deepEqual(freezer.calls, ["freeze /mnt/nbd while ?"], "no thaw of a freeze not ours");
    const [fs] = taken.consistency!.devices[0].filesystems;
    assert.equal(fs.frozen, false);
    assert.match(fs.error!, /frozen by someone else/);
  });
});

Deno.test("the freeze is bounded: past maxFreezeMs the file systems are thawed before the take returns", async () => {
  await withConsistentService(
    { maxFreezeMs: 50, slowTakeMs: 400 },
    async (fixture, { freezer, log }) => {
      const id = await create(fixture);
      freezer.stateOf = async () => (await fixture.driver.snapshotInfo(id)).state;
      const taken = await fixture.client.snapshots.take(id);
      assert.deepEqual(freezer.calls, [
        "freeze /mnt/nbd while created",
        "thaw /mnt/nbd while created",
      ]);
      assert.equal(taken.consistency!.thawedEarly, true);
      assert.equal(taken.state, "taken");
      assert.ok(log.some((l) => /still taking after 50 ms; thawing now/.test(l)), log.join("\n"));
    },
  );
});

Deno.test("hooks run before the freeze and after the thaw, with the snapshot in their environment", async () => {
  await withConsistentService({
    hooks: {
      "10-flush": 'echo "$1 $BLKSNAP_SNAPSHOT_ID $BLKSNAP_DEVICES ${BLKSNAP_TAKE_RESULT:-}"',
      "20-note": 'echo "second $1" >&2',
    },
  }, async (fixture, { freezer, log }) => {
    const id = await create(fixture);
    freezer.stateOf = () => Promise.resolve(String(log.length));
    const taken = await fixture.client.snapshots.take(id);
    const hooks = taken.consistency!.hooks;
    assert.deepEqual(hooks.map((h) => [h.name, h.phase, h.exitCode]), [
      ["10-flush", "pre", 0],
      ["20-note", "pre", 0],
      ["10-flush", "post", 0],
      ["20-note", "post", 0],
    ]);
    const lines = log.filter((l) => l.startsWith("hook ") && l.includes("): "));
    assert.deepEqual(lines, [
      `hook 10-flush (pre): pre ${id} vda`,
      "hook 20-note (pre): second pre",
      `hook 10-flush (post): post ${id} vda taken`,
      "hook 20-note (post): second post",
    ]);
    const preDone = log.findIndex((l) => l.startsWith("hook 20-note (pre) exited 0"));
    const postStart = log.findIndex((l) => l.startsWith("hook 10-flush (post)"));
    const frozeAt = log.findIndex((l) => l.startsWith("froze /mnt/nbd"));
    const thawedAt = log.findIndex((l) => l.startsWith("thawed /mnt/nbd"));
    assert.ok(preDone < frozeAt && frozeAt < thawedAt && thawedAt < postStart, log.join("\n"));
  });
});

Deno.test("a failing pre hook aborts the take with 424 HOOK_FAILED: nothing frozen or taken, post hooks told", async () => {
  await withConsistentService({
    hooks: {
      "10-ok": "echo ready",
      "20-fails": "echo 'database refused to flush' >&2; exit 3",
      "30-never": '[ "$1" = pre ] && echo should not run; true',
    },
  }, async (fixture, { freezer, log }) => {
    const id = await create(fixture);
    const problem = await rejectsWithProblem(fixture.client.snapshots.take(id), {
      status: 424,
      code: "HOOK_FAILED",
    });
    assert.match(
      problem.detail,
      /20-fails exited 3: database refused to flush; the snapshot was not taken/,
    );
    assert.deepEqual(freezer.calls, []);
    assert.equal((await fixture.client.snapshots.get(id)).state, "created");
    assert.ok(!log.some((l) => l.includes("should not run")));
    assert.ok(log.includes("hook 10-ok (post): ready"), log.join("\n"));
    assert.ok(log.some((l) => l.startsWith("hook 30-never (post)")), "post hooks all run");
  });
});

Deno.test("a pre hook that outlives its timeout is killed and aborts the take", async () => {
  await withConsistentService(
    { hooks: { "10-hangs": 'echo waiting; [ "$1" = pre ] && exec sleep 30; true' } },
    async (fixture) => {
      const id = await create(fixture);
      const problem = await rejectsWithProblem(fixture.client.snapshots.take(id), {
        status: 424,
        code: "HOOK_FAILED",
      });
      assert.match(problem.detail, /10-hangs was killed after 2000 ms: waiting/);
    },
  );
});

Deno.test("a mount table that cannot be read does not stop the take: nothing frozen, the reason reported", async () => {
  const mounts = () => Promise.reject(new Error("permission denied"));
  await withConsistentService({ mounts }, async (fixture, { freezer }) => {
    const id = await create(fixture);
    const taken = await fixture.client.snapshots.take(id);
    assert.equal(taken.state, "taken");
    assert.deepEqual(freezer.calls, []);
    assert.deepEqual(taken.consistency!.devices, [{
      deviceId: "vda",
      filesystems: [],
      error: "cannot read the mount table: permission denied",
    }]);
  });
});
