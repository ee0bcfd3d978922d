/**
 * The server driven by libnbd through nbdsh scripts (python): every command,
 * each error case (with libnbd's client-side checks relaxed by
 * set_strict_mode(0) so the server's own validation answers), DF, REQ_ONE,
 * pipelined aio commands, and several connections.
 */

import assert from "node:assert/strict";
import { nbdTestWorkers } from "../_helpers/nbd_workers_mode.ts";
import { DIRTY_CONTEXT, MemoryExport } from "../_helpers/nbd_exports.ts";
import { nbdsh, pattern, toolsMissing, withNbdServer } from "../_helpers/nbd_fixture.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const ignore = toolsMissing("nbdsh");

/** Python prelude: expect(fn, errnum) asserts that fn fails with that errno. */
const PRELUDE = `
import errno
def expect(fn, errnum):
    try:
        fn()
    except nbd.Error as e:
        assert e.errnum == errnum, f"expected {errno.errorcode[errnum]}, got {e.errno}: {e.string}"
        return
    raise AssertionError(f"expected {errno.errorcode[errnum]}, got success")
`;

function disk(): MemoryExport {
  return new MemoryExport({ name: "disk", sizeBytes: 2 * MiB, description: "test disk" });
}

Deno.test({
  name: "nbdsh: every command works and reaches the export",
  ignore,
  fn: async () => {
    const exp = disk();
    await withNbdServer([exp], async (fixture) => {
      const out = await nbdsh(
        fixture.tcpUri("disk"),
        PRELUDE + `
h.add_meta_context("base:allocation")
h.add_meta_context("${DIRTY_CONTEXT}")
h.connect_uri(uri)
assert h.get_size() == ${2 * MiB}
assert h.can_fua() and h.can_flush() and h.can_trim() and h.can_zero() and h.can_fast_zero()
assert h.can_df() and h.can_multi_conn() and not h.is_read_only() and not h.can_cache()
assert h.can_meta_context("base:allocation") and h.can_meta_context("${DIRTY_CONTEXT}")
buf = bytes(range(256)) * 256
h.pwrite(buf, 0)
h.pwrite(buf, 65536, nbd.CMD_FLAG_FUA)
assert h.pread(65536, 0) == buf
assert h.pread(65536, 65536) == buf
h.flush()
h.trim(65536, 65536)
assert h.pread(65536, 65536) == bytes(65536)
h.zero(4096, 0, nbd.CMD_FLAG_NO_HOLE)
h.zero(8192, 1024*1024, nbd.CMD_FLAG_FAST_ZERO)
seen = {}
def extents(context, offset, entries, err):
    seen[context] = list(entries)
h.block_status(256*1024, 0, extents)
print(seen["base:allocation"])
print(seen["${DIRTY_CONTEXT}"])
h.shutdown()
`,
      );
      const [allocation, dirty] = out.trim().split("\n");
      assert.equal(allocation, "[65536, 0, 196608, 3]");
      assert.equal(dirty, "[131072, 1, 131072, 0]");
    });
    const expected = new Uint8Array(64 * KiB).map((_, i) => i & 0xff);
    expected.fill(0, 0, 4096);
    assert.deepEqual(exp.data.subarray(0, 64 * KiB), expected);
    assert.ok(exp.data.subarray(64 * KiB, 2 * MiB).every((b) => b === 0));
    assert.ok(exp.flushes >= 1);
  },
});

Deno.test({
  name: "nbdsh: read-only export refuses pwrite, trim and zero with EPERM",
  ignore,
  fn: async () => {
    const image = new MemoryExport({ name: "image", sizeBytes: MiB, readOnly: true });
    image.fill(0, pattern(4096, 1));
    await withNbdServer([image], async (fixture) => {
      await nbdsh(
        fixture.unixUri("image"),
        PRELUDE + `
h.set_strict_mode(0)
h.connect_uri(uri)
assert h.is_read_only()
expect(lambda: h.pwrite(b"x" * 4096, 0), errno.EPERM)
expect(lambda: h.trim(4096, 0), errno.EPERM)
expect(lambda: h.zero(4096, 0), errno.EPERM)
assert len(h.pread(4096, 0)) == 4096
`,
      );
    });
    assert.deepEqual(image.writes, []);
    assert.deepEqual(image.data.subarray(0, 4096), pattern(4096, 1));
  },
});

Deno.test({
  name: "nbdsh: out of range, bad flags and oversized requests get EINVAL/ENOSPC/EOVERFLOW",
  ignore,
  fn: async () => {
    const exp = new MemoryExport({ name: "disk", sizeBytes: 64 * MiB });
    await withNbdServer([exp], async (fixture) => {
      await nbdsh(
        fixture.tcpUri("disk"),
        PRELUDE + `
h.set_strict_mode(0)
h.connect_uri(uri)
size = h.get_size()
expect(lambda: h.pread(512, size), errno.EINVAL)
expect(lambda: h.pread(1024, size - 512), errno.EINVAL)
expect(lambda: h.trim(1024, size - 512), errno.EINVAL)
expect(lambda: h.pwrite(b"y" * 1024, size - 512), errno.ENOSPC)
expect(lambda: h.zero(1024, size - 512), errno.ENOSPC)
expect(lambda: h.pread(512, 0, 0x100), errno.EINVAL)
expect(lambda: h.pread(512, 0, nbd.CMD_FLAG_REQ_ONE), errno.EINVAL)
expect(lambda: h.pwrite(b"z" * 512, 0, nbd.CMD_FLAG_NO_HOLE), errno.EINVAL)
expect(lambda: h.pread(33 * 1024 * 1024, 0), errno.EOVERFLOW)
expect(lambda: h.pwrite(bytearray(33 * 1024 * 1024), 0), errno.EINVAL)
# the connection is still usable after every refusal
h.pwrite(b"ok" * 256, 0)
assert h.pread(512, 0) == b"ok" * 256
`,
      );
    });
    assert.deepEqual(exp.writes, [{ offset: 0, length: 512 }]);
  },
});

Deno.test({
  name: "nbdsh: FAST_ZERO answers ENOTSUP at once when zeroing is not fast",
  ignore,
  fn: async () => {
    const slow = new MemoryExport({ name: "slow", sizeBytes: MiB, fastZero: false });
    slow.fill(0, new Uint8Array(MiB).fill(0x5a));
    await withNbdServer([slow], async (fixture) => {
      await nbdsh(
        fixture.tcpUri("slow"),
        PRELUDE + `
h.connect_uri(uri)
assert h.can_fast_zero()
expect(lambda: h.zero(65536, 0, nbd.CMD_FLAG_FAST_ZERO), errno.ENOTSUP)
assert h.pread(1, 0) == b"\\x5a"
h.zero(65536, 0)
assert h.pread(65536, 0) == bytes(65536)
`,
      );
    });
  },
});

Deno.test({
  name: "nbdsh: structured reads use holes, and one data chunk with DF",
  ignore,
  fn: async () => {
    const exp = disk();
    exp.fill(128 * KiB, pattern(64 * KiB, 2));
    await withNbdServer([exp], async (fixture) => {
      const out = await nbdsh(
        fixture.tcpUri("disk"),
        `
h.connect_uri(uri)
def read(flags):
    chunks = []
    def chunk(subbuf, offset, status, err):
        chunks.append((offset, len(subbuf), status))
    buf = h.pread_structured(256 * 1024, 64 * 1024, chunk, flags)
    return sorted(chunks), buf
plain, a = read(0)
whole, b = read(nbd.CMD_FLAG_DF)
assert a == b
print(plain)
print(whole)
`,
      );
      const [plain, whole] = out.trim().split("\n");
      assert.equal(plain, "[(65536, 65536, 2), (131072, 65536, 1), (196608, 131072, 2)]");
      assert.equal(whole, "[(65536, 262144, 1)]");
    });
  },
});

Deno.test({
  name: "nbdsh: block status with REQ_ONE gives one extent per context within the request",
  ignore,
  fn: async () => {
    const exp = disk();
    exp.fill(0, new Uint8Array(12 * KiB).fill(1));
    exp.markDirty(0, 1);
    await withNbdServer([exp], async (fixture) => {
      const out = await nbdsh(
        fixture.unixUri("disk"),
        `
h.add_meta_context("base:allocation")
h.add_meta_context("${DIRTY_CONTEXT}")
h.connect_uri(uri)
seen = {}
def extents(context, offset, entries, err):
    seen[context] = list(entries)
h.block_status(8192, 0, extents, nbd.CMD_FLAG_REQ_ONE)
print(seen["base:allocation"], seen["${DIRTY_CONTEXT}"])
`,
      );
      assert.equal(out.trim(), "[8192, 0] [8192, 1]");
    });
  },
});

Deno.test({
  name: "nbdsh: pipelined aio commands complete out of order",
  // A Worker serves its connection's requests one after another (as one nbdkit thread does).
  ignore: ignore || nbdTestWorkers() > 0,
  fn: async () => {
    const exp = new MemoryExport({ name: "disk", sizeBytes: MiB, readDelayMs: 200 });
    await withNbdServer([exp], async (fixture) => {
      const out = await nbdsh(
        fixture.tcpUri("disk"),
        `
h.connect_uri(uri)
order = []
def done(name):
    def completion(err):
        order.append(name)
        return 1
    return completion
buf = nbd.Buffer(4096)
h.aio_pread(buf, 0, done("read"))
h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(b"w" * 4096)), 8192, done("write"))
h.aio_flush(done("flush"))
while h.aio_in_flight() > 0:
    h.poll(-1)
print(order)
`,
      );
      assert.equal(out.trim(), "['write', 'flush', 'read']");
    });
  },
});

Deno.test({
  name: "nbdsh: a flush on one connection covers writes made on another (multi-conn)",
  ignore,
  fn: async () => {
    const exp = disk();
    await withNbdServer([exp], async (fixture) => {
      await nbdsh(
        fixture.tcpUri("disk"),
        `
h.connect_uri(uri)
h2 = nbd.NBD()
h2.connect_uri(uri)
assert h.can_multi_conn() and h2.can_multi_conn()
h.pwrite(b"a" * 4096, 0)
h2.flush()
assert h2.pread(4096, 0) == b"a" * 4096
h2.pwrite(b"b" * 4096, 4096)
assert h.pread(8192, 0) == b"a" * 4096 + b"b" * 4096
h2.shutdown()
`,
      );
      assert.equal(fixture.warnings.length, 0, fixture.warnings.join("\n"));
    });
    assert.ok(exp.flushes >= 1);
  },
});
