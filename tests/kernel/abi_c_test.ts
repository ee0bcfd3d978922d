/**
 * The layouts and request numbers of src/kernel/abi.ts against a C compiler.
 * The C structs below are written here from the facts of ABI.md (not copied
 * from the module's headers); request numbers come from the kernel's own
 * `_IOR/_IOW/_IOWR` macros in <linux/ioctl.h>. gcc compiles and runs the
 * program, which prints every sizeof, offsetof and request number; each must
 * equal what the TypeScript declarations compute.
 */

import assert from "node:assert/strict";
import * as abi from "../../src/kernel/abi.ts";

const C_DECLARATIONS = `
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <linux/ioctl.h>

struct blksnap_uuid { uint8_t b[16]; };
struct blksnap_version { uint16_t major, minor, revision, build; };
struct blksnap_snapshot_create {
  uint64_t diff_storage_limit_sect;
  uint64_t diff_storage_filename;
  struct blksnap_uuid id;
};
struct blksnap_snapshot_collect { uint32_t count; uint64_t ids; };
struct blksnap_snapshot_event {
  struct blksnap_uuid id;
  uint32_t timeout_ms;
  uint32_t code;
  int64_t time_label;
  uint8_t data[4096 - 32];
};
struct blksnap_event_corrupted { uint32_t dev_id_mj; uint32_t dev_id_mn; int32_t err_code; };
struct blksnap_event_no_space { uint64_t requested_nr_sect; };
struct blksnap_cbtinfo {
  uint64_t device_capacity;
  uint32_t block_size;
  uint32_t block_count;
  struct blksnap_uuid generation_id;
  uint8_t changes_number;
};
struct blksnap_cbtmap { uint32_t offset; uint32_t length; uint64_t buffer; };
struct blksnap_sectors { uint64_t offset; uint64_t count; };
struct blksnap_cbtdirty { uint32_t count; uint64_t dirty_sectors; };
struct blksnap_snapshotadd { struct blksnap_uuid id; };
struct blksnap_snapshotinfo { int32_t error_code; uint8_t image[32]; };
struct blkfilter_attach { uint8_t name[32]; uint64_t opt; uint32_t optlen; };
struct blkfilter_detach { uint8_t name[32]; };
struct blkfilter_name { uint8_t name[32]; };
struct blkfilter_ctl { uint8_t name[32]; uint32_t cmd; uint32_t optlen; uint64_t opt; };
struct bdevfilter_name { uint64_t devpath; uint8_t name[32]; };
struct bdevfilter_ctl { uint64_t devpath; uint8_t name[32]; uint32_t cmd; uint32_t optlen; uint64_t opt; };
`;

/** What the test needs of a layout: size, field names and offsets. */
interface Described {
  size: number;
  fields: object;
  offsetOf(name: never): number;
}

const layouts: Record<string, Described> = {
  blksnap_uuid: abi.BlksnapUuid,
  blksnap_version: abi.BlksnapVersion,
  blksnap_snapshot_create: abi.BlksnapSnapshotCreate,
  blksnap_snapshot_collect: abi.BlksnapSnapshotCollect,
  blksnap_snapshot_event: abi.BlksnapSnapshotEvent,
  blksnap_event_corrupted: abi.BlksnapEventCorrupted,
  blksnap_event_no_space: abi.BlksnapEventNoSpace,
  blksnap_cbtinfo: abi.BlksnapCbtinfo,
  blksnap_cbtmap: abi.BlksnapCbtmap,
  blksnap_sectors: abi.BlksnapSectors,
  blksnap_cbtdirty: abi.BlksnapCbtdirty,
  blksnap_snapshotadd: abi.BlksnapSnapshotadd,
  blksnap_snapshotinfo: abi.BlksnapSnapshotinfo,
  blkfilter_attach: abi.BlkfilterAttach,
  blkfilter_detach: abi.BlkfilterDetach,
  blkfilter_ctl: abi.BlkfilterCtl,
  blkfilter_name: abi.BlkfilterName,
  bdevfilter_name: abi.BdevfilterName,
  bdevfilter_ctl: abi.BdevfilterCtl,
};

/** Each request number as the kernel's macros compute it from the C structs. */
const requests: Record<string, [string, number]> = {
  IOCTL_BLKSNAP_VERSION: ["_IOR('V', 0, struct blksnap_version)", abi.IOCTL_BLKSNAP_VERSION],
  IOCTL_BLKSNAP_SNAPSHOT_CREATE: [
    "_IOWR('V', 1, struct blksnap_snapshot_create)",
    abi.IOCTL_BLKSNAP_SNAPSHOT_CREATE,
  ],
  IOCTL_BLKSNAP_SNAPSHOT_DESTROY: [
    "_IOW('V', 2, struct blksnap_uuid)",
    abi.IOCTL_BLKSNAP_SNAPSHOT_DESTROY,
  ],
  IOCTL_BLKSNAP_SNAPSHOT_TAKE: [
    "_IOW('V', 3, struct blksnap_uuid)",
    abi.IOCTL_BLKSNAP_SNAPSHOT_TAKE,
  ],
  IOCTL_BLKSNAP_SNAPSHOT_COLLECT: [
    "_IOR('V', 4, struct blksnap_snapshot_collect)",
    abi.IOCTL_BLKSNAP_SNAPSHOT_COLLECT,
  ],
  IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT: [
    "_IOR('V', 5, struct blksnap_snapshot_event)",
    abi.IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT,
  ],
  BLKFILTER_ATTACH: ["_IOWR(0x12, 142, struct blkfilter_attach)", abi.BLKFILTER_ATTACH],
  BLKFILTER_DETACH: ["_IOWR(0x12, 143, struct blkfilter_detach)", abi.BLKFILTER_DETACH],
  BLKFILTER_CTL: ["_IOWR(0x12, 144, struct blkfilter_ctl)", abi.BLKFILTER_CTL],
  BLKFILTER_V7_ATTACH: ["_IOWR(0x12, 140, struct blkfilter_name)", abi.BLKFILTER_V7_ATTACH],
  BLKFILTER_V7_DETACH: ["_IOWR(0x12, 141, struct blkfilter_name)", abi.BLKFILTER_V7_DETACH],
  BDEVFILTER_ATTACH: ["_IOWR('F', 140, struct bdevfilter_name)", abi.BDEVFILTER_ATTACH],
  BDEVFILTER_DETACH: ["_IOWR('F', 141, struct bdevfilter_name)", abi.BDEVFILTER_DETACH],
  BDEVFILTER_CTL: ["_IOWR('F', 142, struct bdevfilter_ctl)", abi.BDEVFILTER_CTL],
  BLKGETSIZE64: ["_IOR(0x12, 114, size_t)", abi.BLKGETSIZE64],
};

function cProgram(): string {
  const lines: string[] = [];
  for (const [name, layout] of Object.entries(layouts)) {
    lines.push(`printf("sizeof ${name} %zu\\n", sizeof(struct ${name}));`);
    for (const field of Object.keys(layout.fields)) {
      lines.push(
        `printf("offsetof ${name}.${field} %zu\\n", offsetof(struct ${name}, ${field}));`,
      );
    }
  }
  for (const [name, [expression]] of Object.entries(requests)) {
    lines.push(`printf("request ${name} %lu\\n", (unsigned long)(${expression}));`);
  }
  return `${C_DECLARATIONS}\nint main(void) {\n  ${lines.join("\n  ")}\n  return 0;\n}\n`;
}

function hasGcc(): boolean {
  try {
    return new Deno.Command("gcc", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

const gcc = hasGcc();
if (!gcc) console.log("skipping abi_c_test: gcc is not installed");

Deno.test({
  name: "abi.ts layouts and request numbers equal what gcc computes from ABI.md's structs",
  ignore: !gcc,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "abi-c-" });
    try {
      await Deno.writeTextFile(`${dir}/abi.c`, cProgram());
      const compiled = await new Deno.Command("gcc", {
        args: ["-std=c11", "-Wall", "-Werror", "-o", `${dir}/abi`, `${dir}/abi.c`],
      }).output();
      assert.ok(compiled.success, new TextDecoder().decode(compiled.stderr));
      const run = await new Deno.Command(`${dir}/abi`).output();
      assert.ok(run.success);
      const facts = new Map(
        new TextDecoder().decode(run.stdout).trim().split("\n").map((line) => {
          const [kind, name, value] = line.split(" ");
          return [`${kind} ${name}`, Number(value)];
        }),
      );
      let compared = 0;
      for (const [name, layout] of Object.entries(layouts)) {
        assert.equal(layout.size, facts.get(`sizeof ${name}`), `sizeof ${name}`);
        compared++;
        for (const field of Object.keys(layout.fields)) {
          assert.equal(
            layout.offsetOf(field as never),
            facts.get(`offsetof ${name}.${field}`),
            `offsetof ${name}.${field}`,
          );
          compared++;
        }
      }
      for (const [name, [, value]] of Object.entries(requests)) {
        assert.equal(value, facts.get(`request ${name}`), `request ${name}`);
        compared++;
      }
      assert.equal(compared, facts.size);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
