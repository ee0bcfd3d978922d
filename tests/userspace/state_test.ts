/**
 * The userspace backend's state folder and devices have one owner, and the
 * saved device list is never lost or half-written: an attach whose save
 * fails is undone (no temporary file left), devices that cannot be opened
 * at start stay listed as missing and come back with their CBT, and devices
 * whose path is no longer allowed stay listed as refused, unopened.
 */

import assert from "node:assert/strict";
import { isServiceError, ServiceError } from "../../src/errors.ts";
import {
  UserspaceDriver,
  type UserspaceDriverOptions,
} from "../../src/userspace/userspace_driver.ts";
import { userspaceFixture } from "./_helpers/userspace_fixture.ts";

const MiB = 1024 * 1024;

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "userspace-state-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function savedNames(dir: string): Promise<string[]> {
  const text = await Deno.readTextFile(`${dir}/state/userspace-devices.json`);
  return (JSON.parse(text).devices as Array<{ name: string }>).map((d) => d.name);
}

Deno.test("a second driver on the same state folder is refused, naming the holder's pid", async () => {
  await withDir(async (dir) => {
    const first = await userspaceFixture({ dir, persist: true });
    try {
      await assert.rejects(
        UserspaceDriver.start({ nbd: { tcp: { port: 0 } }, stateDir: `${dir}/state` }),
        (error) => {
          assert.ok(isServiceError(error, "CONFLICT"), String(error));
          assert.match(error.message, new RegExp(`another service \\(pid ${Deno.pid}\\)`));
          return true;
        },
      );
    } finally {
      await first.cleanup();
    }
    const again = await userspaceFixture({ dir, persist: true });
    await again.cleanup();
  });
});

Deno.test("a device tracked by one service cannot be attached by another (CONFLICT)", async () => {
  await withDir(async (dir) => {
    const first = await userspaceFixture({ dir, persist: true });
    const other = await UserspaceDriver.start({
      nbd: { tcp: { port: 0 } },
      stateDir: `${dir}/other-state`,
    });
    try {
      const path = await first.createDevice(MiB);
      await first.driver.attach(path, { name: "a" });
      await assert.rejects(other.attach(path, { name: "a" }), (error) => {
        assert.ok(isServiceError(error, "CONFLICT"), String(error));
        assert.match(error.message, /another service tracks it/);
        return true;
      });
      assert.deepEqual(await other.listDevices(), []);
      await first.driver.detach("a");
      await other.attach(path, { name: "a" });
    } finally {
      await other.close();
      await first.cleanup();
    }
  });
});

Deno.test("an attach whose state save fails is undone and leaves no temporary file", async () => {
  await withDir(async (dir) => {
    const fx = await userspaceFixture({ dir, persist: true });
    try {
      const path = await fx.createDevice(MiB);
      const list = `${dir}/state/userspace-devices.json`;
      await Deno.remove(list).catch(() => {});
      await Deno.mkdir(`${list}/blocker`, { recursive: true });
      await assert.rejects(fx.driver.attach(path, { name: "a" }), (error) => {
        assert.ok(isServiceError(error, "IO"), String(error));
        return true;
      });
      assert.deepEqual(await fx.driver.listDevices(), []);
      const left = [...Deno.readDirSync(`${dir}/state`)].map((e) => e.name);
      assert.ok(!left.some((name) => name.endsWith(".tmp")), left.join(", "));
      assert.deepEqual([...Deno.readDirSync(`${dir}/state/cbt`)], [], "no CBT record left");
      await Deno.remove(list, { recursive: true });
      const device = await fx.driver.attach(path, { name: "a" });
      assert.equal(device.id, "a", "the retry works: nothing was half-done");
      assert.deepEqual(await savedNames(dir), ["a"]);
    } finally {
      await fx.cleanup();
    }
  });
});

Deno.test("a device missing at start stays listed and comes back with its CBT", async () => {
  await withDir(async (dir) => {
    const first = await userspaceFixture({ dir, persist: true });
    let path: string;
    let generationId: string;
    try {
      path = await first.createDevice(MiB);
      const a = await first.driver.attach(path, { name: "a" });
      await first.driver.attach(await first.createDevice(MiB), { name: "b" });
      await first.writeDevice(a, 0, new Uint8Array(4096).fill(1));
      generationId = (await first.driver.cbtInfo("a")).generationId;
    } finally {
      await first.cleanup();
    }
    await Deno.rename(path, `${path}.away`);
    const second = await userspaceFixture({ dir, persist: true, driver: { retryMissingMs: 0 } });
    try {
      const [b, a] = await second.driver.listDevices();
      assert.deepEqual([b.id, b.state], ["b", undefined]);
      assert.deepEqual([a.id, a.path, a.state], ["a", path, "missing"]);
      assert.match(a.error!, /disk0\.img.*(ENOENT|no such file)/);
      assert.deepEqual((await second.driver.getDevice("a")).state, "missing");
      await assert.rejects(second.driver.cbtInfo("a"), (e) => isServiceError(e, "UNAVAILABLE"));
      assert.deepEqual((await savedNames(dir)).sort(), ["a", "b"], "never dropped");
      await second.driver.retryMissing();
      assert.equal((await second.driver.getDevice("a")).state, "missing", "still away");
      await Deno.rename(`${path}.away`, path);
      await second.driver.retryMissing();
      const back = await second.driver.getDevice("a");
      assert.equal(back.state, undefined);
      assert.equal((await second.driver.cbtInfo("a")).generationId, generationId, "CBT kept");
      assert.deepEqual((await savedNames(dir)).sort(), ["a", "b"]);
    } finally {
      await second.cleanup();
    }
  });
});

/** Attaches a new 1 MiB device as "a" in a first driver on `dir`, which then stops; its path. */
async function rememberedDevice(dir: string): Promise<string> {
  const first = await userspaceFixture({ dir, persist: true });
  try {
    const path = await first.createDevice(MiB);
    await first.driver.attach(path, { name: "a" });
    return path;
  } finally {
    await first.cleanup();
  }
}

/** A second driver on `dir` whose path check is `checkPath`. */
function restartedWith(dir: string, checkPath: UserspaceDriverOptions["checkPath"]) {
  return userspaceFixture({ dir, persist: true, driver: { checkPath } });
}

Deno.test("a device whose path is no longer allowed stays listed as refused and unopened", async () => {
  await withDir(async (dir) => {
    const path = await rememberedDevice(dir);
    const checked: string[] = [];
    const second = await restartedWith(dir, (candidate) => {
      checked.push(candidate);
      return Promise.reject(
        new ServiceError("FORBIDDEN", `${candidate} is outside the allowed prefixes`),
      );
    });
    try {
      const [a] = await second.driver.listDevices();
      assert.deepEqual([a.id, a.state], ["a", "refused"]);
      assert.match(a.error!, /outside the allowed prefixes/);
      assert.deepEqual(checked, [path]);
      const other = await UserspaceDriver.start({
        nbd: { tcp: { port: 0 } },
        stateDir: `${dir}/other-state`,
      });
      try {
        await other.attach(path, { name: "a" });
        await other.detach("a");
      } finally {
        await other.close();
      }
      assert.deepEqual(await savedNames(dir), ["a"], "still remembered");
      await second.driver.detach("a");
      assert.deepEqual(await savedNames(dir), [], "forgotten on request");
    } finally {
      await second.cleanup();
    }
  });
});

Deno.test("a remembered device is verified by what is opened at start, not by its name", async () => {
  await withDir(async (dir) => {
    const path = await rememberedDevice(dir);
    const opened: string[] = [];
    // The name passes; the object opened for it is then refused (as after a symlink swap).
    const second = await restartedWith(dir, () =>
      Promise.resolve((realPath: string) => {
        opened.push(realPath);
        throw new ServiceError("FORBIDDEN", `${realPath} is outside the allowed prefixes`);
      }));
    try {
      const [a] = await second.driver.listDevices();
      assert.deepEqual([a.id, a.state], ["a", "refused"]);
      assert.deepEqual(opened, [await Deno.realPath(path)]);
      assert.deepEqual(await savedNames(dir), ["a"], "still remembered");
    } finally {
      await second.cleanup();
    }
  });
});
