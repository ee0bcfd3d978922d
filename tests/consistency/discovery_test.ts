import assert from "node:assert/strict";
import { blockName, devicesOn, treeAt } from "../../src/consistency/block_topology.ts";
import { parseMountinfo } from "../../src/consistency/mountinfo.ts";
import { nbdDevicesFor } from "../../src/consistency/nbd_attachments.ts";
import { makeTree, SYSFS_FILES, SYSFS_LINKS } from "../_helpers/system_tree.ts";

const MOUNTINFO = [
  "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro",
  "23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw",
  "40 22 254:17 / /mnt/data\\040disk rw,relatime shared:30 master:2 - ext4 /dev/vdb1 rw",
  "41 22 254:17 /sub /srv/bind rw,relatime shared:30 - ext4 /dev/vdb1 rw",
  "42 22 253:0 / /var/lib/db rw,noatime - xfs /dev/mapper/vg-db rw,attr2",
  "43 22 43:1 / /mnt/nbd rw - ext4 /dev/nbd0p1 rw",
  "garbage line",
  "",
].join("\n");

Deno.test("parseMountinfo() reads device numbers, unescapes paths and skips optional fields", () => {
  const mounts = parseMountinfo(MOUNTINFO);
  assert.equal(mounts.length, 6);
  assert.deepEqual(mounts[2], {
    mountId: 40,
    deviceNumber: "254:17",
    root: "/",
    mountPoint: "/mnt/data disk",
    mountOptions: "rw,relatime",
    fsType: "ext4",
    source: "/dev/vdb1",
  });
  assert.deepEqual(mounts[3].root, "/sub");
  assert.deepEqual(mounts.map((m) => m.fsType), ["ext4", "proc", "ext4", "ext4", "xfs", "ext4"]);
});

Deno.test("devicesOn() finds a disk's partitions and the holders above them, each once", async () => {
  const root = await makeTree(SYSFS_FILES, SYSFS_LINKS);
  try {
    const sys = treeAt(root);
    assert.equal(blockName(sys, "254:16"), "vdb");
    assert.equal(blockName(sys, "9:9"), undefined);
    assert.deepEqual(devicesOn(sys, "vdb"), [
      { name: "vdb", deviceNumber: "254:16", relation: "device" },
      { name: "vdb1", deviceNumber: "254:17", relation: "partition" },
      { name: "vdb2", deviceNumber: "254:18", relation: "partition" },
      { name: "dm-0", deviceNumber: "253:0", relation: "holder" },
    ]);
    assert.deepEqual(devicesOn(sys, "vdb1").map((n) => n.name), ["vdb1"]);
    assert.deepEqual(devicesOn(sys, "vdc").map((n) => n.name), ["vdc"]);
    assert.deepEqual(devicesOn(sys, "missing"), []);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("nbdDevicesFor() matches the backend identifier, or nbd-client's -N and port", async () => {
  const root = await makeTree({
    ...SYSFS_FILES,
    "devices/nbd0/backend": "vda\n",
    "devices/nbd1/size": "2048\n",
    "devices/nbd1/pid": "4242\n",
    "devices/nbd2/size": "0\n",
    "devices/nbd2/backend": "vda\n",
    "devices/nbd3/size": "2048\n",
    "devices/nbd3/pid": "4343\n",
    "proc/4242/cmdline": [
      "nbd-client",
      "127.0.0.1",
      "10809",
      "/dev/nbd1",
      "-N",
      "vdb",
      "-b",
      "4096",
      "",
    ].join("\0"),
    "proc/4343/cmdline": ["nbd-client", "127.0.0.1", "10810", "/dev/nbd3", "-N", "vdb", ""].join(
      "\0",
    ),
  }, {
    ...SYSFS_LINKS,
    "block/nbd1": "devices/nbd1",
    "block/nbd2": "devices/nbd2",
    "block/nbd3": "devices/nbd3",
  });
  try {
    const trees = { sys: treeAt(root), proc: treeAt(`${root}/proc`) };
    assert.deepEqual(nbdDevicesFor(trees, { name: "vda", port: 10809 }), ["nbd0"]);
    assert.deepEqual(nbdDevicesFor(trees, { name: "vdb", port: 10809 }), ["nbd1"]);
    assert.deepEqual(nbdDevicesFor(trees, { name: "vdb", port: 10810 }), ["nbd3"]);
    assert.deepEqual(nbdDevicesFor(trees, { name: "vdz", port: 10809 }), []);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("nbdDevicesFor() follows what each nbd-client mode leaves in sysfs", async () => {
  const cmdline = (...args: string[]) => [...args, ""].join("\0");
  const root = await makeTree({
    ...SYSFS_FILES,
    // netlink with -i: the identifier is the export's locator
    "devices/nbd0/backend": "nbd://127.0.0.1:10809/vda\n",
    // netlink without -i: an empty identifier, and the nbd-client that connected is gone
    "devices/nbd1/size": "2048\n",
    "devices/nbd1/backend": "\n",
    "devices/nbd1/pid": "5151\n",
    // ioctl mode (-L) with nbd-client's default port: only option values are numbers
    "devices/nbd2/size": "2048\n",
    "devices/nbd2/pid": "5252\n",
    "proc/5252/cmdline": cmdline(
      "/usr/sbin/nbd-client",
      "localhost",
      "/dev/nbd2",
      "--name=vdb",
      "-b",
      "4096",
      "-t",
      "120",
      "-L",
    ),
    // ioctl mode over the service's Unix socket
    "devices/nbd3/size": "2048\n",
    "devices/nbd3/pid": "5353\n",
    "proc/5353/cmdline": cmdline(
      "nbd-client",
      "-unix",
      "/run/blksnap/nbd.sock",
      "/dev/nbd3",
      "-N",
      "vdc",
      "-L",
    ),
    // qemu-nbd -c with the export's URI (its pid attribute is the thread in NBD_DO_IT)
    "devices/nbd5/size": "2048\n",
    "devices/nbd5/pid": "5556\n",
    "proc/5556/cmdline": cmdline(
      "qemu-nbd",
      "-c",
      "/dev/nbd5",
      "-f",
      "raw",
      "nbd://127.0.0.1:10809/vdd",
    ),
    // a pid reused by another program whose arguments happen to look alike
    "devices/nbd4/size": "2048\n",
    "devices/nbd4/pid": "5454\n",
    "proc/5454/cmdline": cmdline("sh", "-c", "x", "-N", "vdb", "10809"),
  }, {
    ...SYSFS_LINKS,
    "block/nbd1": "devices/nbd1",
    "block/nbd2": "devices/nbd2",
    "block/nbd3": "devices/nbd3",
    "block/nbd4": "devices/nbd4",
    "block/nbd5": "devices/nbd5",
  });
  try {
    const trees = { sys: treeAt(root), proc: treeAt(`${root}/proc`) };
    const uris = (name: string) => [`nbd://127.0.0.1:10809/${name}`];
    assert.deepEqual(nbdDevicesFor(trees, { name: "vda", port: 10809, uris: uris("vda") }), [
      "nbd0",
    ]);
    assert.deepEqual(nbdDevicesFor(trees, { name: "vdb", port: 10809, uris: uris("vdb") }), [
      "nbd2",
    ]);
    assert.deepEqual(
      nbdDevicesFor(trees, { name: "vdb", port: 10810 }),
      [],
      "not the default port",
    );
    assert.deepEqual(nbdDevicesFor(trees, { name: "vdc", socketPath: "/run/blksnap/nbd.sock" }), [
      "nbd3",
    ]);
    assert.deepEqual(nbdDevicesFor(trees, { name: "vdc", socketPath: "/run/other.sock" }), []);
    assert.deepEqual(nbdDevicesFor(trees, { name: "vdc", port: 10809 }), [], "a socket, not TCP");
    assert.deepEqual(nbdDevicesFor(trees, { name: "vdd", port: 10809, uris: uris("vdd") }), [
      "nbd5",
    ]);
    assert.deepEqual(
      nbdDevicesFor(trees, { name: "vdd", port: 10810, uris: ["nbd://127.0.0.1:10810/vdd"] }),
      [],
      "qemu-nbd on another server",
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
