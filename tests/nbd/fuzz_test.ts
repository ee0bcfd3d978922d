/**
 * Fuzzing: thousands of mutated handshakes and request streams thrown at one
 * server over raw TCP and Unix connections, several at a time. Each case is
 * a valid client script (handshake, then requests) with a few mutations (bit
 * flips, interesting u32 values, truncation, inserted garbage, duplicated
 * slices). The client sends it, half-closes, and reads until the server
 * closes: whatever the bytes, the server must close that connection (and
 * only that one) once the input ends. Afterwards a clean nbdsh client must
 * find the read-only export intact and the writable one working.
 *
 * Replay: NBD_FUZZ_SEED=<seed> (printed by the test) and NBD_FUZZ_CASES=<n>.
 */

import assert from "node:assert/strict";
import { Command as C, Option } from "../../src/nbd/constants.ts";
import { DIRTY_CONTEXT, MemoryExport } from "../_helpers/nbd_exports.ts";
import { nbdsh, pattern, toolsMissing, waitFor, withNbdServer } from "../_helpers/nbd_fixture.ts";
import { goData, metaContextData } from "../_helpers/nbd_raw_client.ts";
import { ChunkHeader, OptionHeader, Request } from "../../src/nbd/wire.ts";

const MiB = 1024 * 1024;
const SEED = Number(Deno.env.get("NBD_FUZZ_SEED") ?? 20240611);
const CASES = Number(Deno.env.get("NBD_FUZZ_CASES") ?? 3000);
const PARALLEL = 8;
const INTERESTING = [
  0,
  1,
  0x1ff,
  0x200,
  0x7fffffff,
  0x80000000,
  0xfffffffe,
  0xffffffff,
  0x2000001,
  MiB,
];

/** mulberry32: small, fast, seedable. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Script {
  parts: Uint8Array[] = [];
  handshakeBytes = 0;

  push(bytes: Uint8Array): void {
    this.parts.push(bytes);
  }

  option(option: number, data: Uint8Array = new Uint8Array(0)): void {
    const bytes = new Uint8Array(OptionHeader.size + data.length);
    OptionHeader.encode({ magic: 0x49484156454f5054n, option, length: data.length }, bytes);
    bytes.set(data, OptionHeader.size);
    this.push(bytes);
  }

  request(type: number, flags: number, offset: number, length: number, payload = false): void {
    const bytes = new Uint8Array(Request.size + (payload ? length : 0));
    Request.encode({
      magic: 0x25609513,
      flags,
      type,
      cookie: new Uint8Array(8).fill(type + 1),
      offset,
      length,
    }, bytes);
    if (payload) bytes.fill(0x77, Request.size);
    this.push(bytes);
  }

  bytes(): Uint8Array {
    const total = this.parts.reduce((sum, p) => sum + p.length, 0);
    const out = new Uint8Array(total);
    let at = 0;
    for (const part of this.parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }
}

/** A valid client conversation, chosen by `rand`. */
function script(rand: () => number): Script {
  const s = new Script();
  const pick = <T>(items: T[]): T => items[Math.floor(rand() * items.length)];
  const flags = new Uint8Array(4);
  flags[3] = pick([3, 3, 3, 1, 0]);
  s.push(flags);
  const name = pick(["disk", "golden", "", "nope"]);
  const structured = rand() < 0.7;
  if (structured) s.option(Option.NBD_OPT_STRUCTURED_REPLY);
  if (rand() < 0.3) s.option(Option.NBD_OPT_LIST);
  if (rand() < 0.3) s.option(Option.NBD_OPT_LIST_META_CONTEXT, metaContextData(name, ["qemu:"]));
  if (structured && rand() < 0.6) {
    s.option(
      Option.NBD_OPT_SET_META_CONTEXT,
      metaContextData(name, ["base:allocation", DIRTY_CONTEXT]),
    );
  }
  if (rand() < 0.2) s.option(Option.NBD_OPT_INFO, goData(name, [1, 2, 3]));
  if (rand() < 0.1) s.option(pick([Option.NBD_OPT_STARTTLS, 99, Option.NBD_OPT_ABORT]));
  if (rand() < 0.2) s.option(Option.NBD_OPT_EXPORT_NAME, new TextEncoder().encode(name));
  else s.option(Option.NBD_OPT_GO, goData(name, [3]));
  s.handshakeBytes = s.bytes().length;
  const count = 1 + Math.floor(rand() * 8);
  for (let i = 0; i < count; i++) {
    const type = pick([
      C.NBD_CMD_READ,
      C.NBD_CMD_READ,
      C.NBD_CMD_WRITE,
      C.NBD_CMD_WRITE,
      3,
      4,
      6,
      7,
      5,
    ]);
    const length = pick([0, 1, 512, 4096, 65536, 300000]);
    const offset = pick([0, 4096, MiB - 4096, MiB, 2 * MiB - length]);
    const flag = pick([0, 0, 0, 1, 2, 4, 8, 16, 3]);
    s.request(type, flag, Math.max(0, offset), length, type === C.NBD_CMD_WRITE);
  }
  if (rand() < 0.5) s.request(C.NBD_CMD_DISC, 0, 0, 0);
  return s;
}

/** Applies 1-4 mutations, mostly after the handshake so that requests get fuzzed too. */
function mutate(input: Uint8Array, handshakeBytes: number, rand: () => number): Uint8Array {
  let bytes = input.slice();
  const mutations = 1 + Math.floor(rand() * 4);
  for (let m = 0; m < mutations && bytes.length > 0; m++) {
    const from = rand() < 0.7 && handshakeBytes < bytes.length ? handshakeBytes : 0;
    const at = from + Math.floor(rand() * (bytes.length - from));
    const kind = Math.floor(rand() * 6);
    if (kind === 0) bytes[at] ^= 1 << Math.floor(rand() * 8);
    else if (kind === 1) bytes[at] = Math.floor(rand() * 256);
    else if (kind === 2 && at + 4 <= bytes.length) {
      new DataView(bytes.buffer).setUint32(
        at,
        INTERESTING[Math.floor(rand() * INTERESTING.length)],
      );
    } else if (kind === 3) bytes = bytes.slice(0, at);
    else if (kind === 4) {
      const junk = pattern(1 + Math.floor(rand() * 64), Math.floor(rand() * 1e9));
      const out = new Uint8Array(bytes.length + junk.length);
      out.set(bytes.subarray(0, at));
      out.set(junk, at);
      out.set(bytes.subarray(at), at + junk.length);
      bytes = out;
    } else {
      const length = Math.min(ChunkHeader.size * 2, bytes.length - at);
      const out = new Uint8Array(bytes.length + length);
      out.set(bytes.subarray(0, at + length));
      out.set(bytes.subarray(at), at + length);
      bytes = out;
    }
  }
  return bytes;
}

/** Sends `bytes`, half-closes, drains replies; resolves true if the server then closes. */
async function throwAt(conn: Deno.Conn, bytes: Uint8Array): Promise<boolean> {
  const drain = (async () => {
    const buffer = new Uint8Array(256 * 1024);
    try {
      while ((await conn.read(buffer)) !== null) { /* discard replies */ }
    } catch {
      // reset by the server: closed as well
    }
    return true;
  })();
  try {
    let done = 0;
    while (done < bytes.length) done += await conn.write(bytes.subarray(done));
    await conn.closeWrite();
  } catch {
    // the server closed first; fine
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), 5000);
  });
  const closed = await Promise.race([drain, timeout]);
  clearTimeout(timer);
  conn.close();
  await drain;
  return closed;
}

Deno.test({
  name: "fuzz: mutated handshakes and requests end only their own connection, data stays intact",
  ignore: toolsMissing("nbdsh"),
  fn: async () => {
    console.log(`fuzz seed ${SEED}, ${CASES} cases (replay: NBD_FUZZ_SEED=${SEED})`);
    const disk = new MemoryExport({ name: "disk", sizeBytes: 2 * MiB, description: "scratch" });
    const golden = new MemoryExport({ name: "golden", sizeBytes: 2 * MiB, readOnly: true });
    const content = pattern(2 * MiB, SEED);
    golden.fill(0, content);
    await withNbdServer([disk, golden], async (fixture) => {
      let next = 0;
      const failures: string[] = [];
      const worker = async () => {
        while (next < CASES) {
          const index = next++;
          const rand = random(SEED + index);
          const s = script(rand);
          const bytes = mutate(s.bytes(), s.handshakeBytes, rand);
          // the server greets first; read it along with the replies
          const conn = index % 4 === 0
            ? await Deno.connect({ transport: "unix", path: fixture.server.unixPath! })
            : await Deno.connect({ hostname: "127.0.0.1", port: fixture.server.tcpPort! });
          if (!(await throwAt(conn, bytes))) failures.push(`case ${index} (seed ${SEED + index})`);
        }
      };
      await Promise.all(Array.from({ length: PARALLEL }, worker));
      assert.deepEqual(failures, [], "the server closed every connection once its input ended");
      await waitFor(() => fixture.server.connections === 0);
      const count = (re: RegExp) => fixture.log.filter((line) => re.test(line)).length;
      const stats = {
        transmission: count(/chose export/),
        refused: count(/refused NBD_CMD/),
        violations: count(/closing/),
        options: count(/nbd: option/),
      };
      console.log("fuzz coverage", JSON.stringify(stats));
      assert.ok(stats.transmission > CASES / 4, "many cases reach the transmission phase");
      assert.ok(stats.refused > CASES / 4, "many requests are refused by validation");

      const out = await nbdsh(
        fixture.tcpUri("golden"),
        `
import hashlib
h.add_meta_context("base:allocation")
h.connect_uri(uri)
data = b"".join(h.pread(262144, off) for off in range(0, h.get_size(), 262144))
print(hashlib.sha256(data).hexdigest())
h2 = nbd.NBD()
h2.connect_uri(uri.replace("/golden", "/disk"))
h2.pwrite(b"clean" * 1000, 4096, nbd.CMD_FLAG_FUA)
assert h2.pread(5000, 4096) == b"clean" * 1000
`,
      );
      const expected = Array.from(
        new Uint8Array(await crypto.subtle.digest("SHA-256", content)),
        (b) => b.toString(16).padStart(2, "0"),
      ).join("");
      assert.equal(out.trim(), expected, "the read-only export reads back intact");
    });
    assert.deepEqual(golden.writes, []);
    assert.deepEqual(golden.data, content);
    assert.ok(disk.writes.length > 0, "some fuzzed writes were valid and applied");
    assert.ok(
      disk.writes.every((w) => w.offset + w.length <= disk.sizeBytes && w.length > 0),
      "only whole, in-range writes reached the export",
    );
  },
});
