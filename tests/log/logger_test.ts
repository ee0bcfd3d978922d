import assert from "node:assert/strict";
import { Logger } from "../../src/log/logger.ts";

const clock = () => new Date("2026-12-01T09:30:00.123Z");

function collect(options: ConstructorParameters<typeof Logger>[0] = {}) {
  const lines: string[] = [];
  const logger = new Logger({ now: clock, write: (line) => lines.push(line), ...options });
  return { logger, lines };
}

Deno.test("Logger text lines: timestamp, padded level, message, key=value with quoting", () => {
  const { logger, lines } = collect();
  logger.info("device attached", {
    device: "vda",
    path: "/srv/a b.img",
    size: 4096,
    gone: undefined,
  });
  logger.warn("two\nlines", { empty: "", quote: 'say "x"' });
  assert.deepEqual(lines, [
    '2026-12-01T09:30:00.123Z info  device attached device=vda path="/srv/a b.img" size=4096\n',
    '2026-12-01T09:30:00.123Z warn  two lines empty="" quote="say \\"x\\""\n',
  ]);
});

Deno.test("Logger json lines: timestamp, level, message and the fields, one object per line", () => {
  const { logger, lines } = collect({ format: "json" });
  logger.error("snapshot corrupted", { snapshot: "s1", stack: "a\nb", none: undefined });
  assert.equal(lines.length, 1);
  assert.ok(lines[0].endsWith("}\n"));
  assert.deepEqual(JSON.parse(lines[0]), {
    timestamp: "2026-12-01T09:30:00.123Z",
    level: "error",
    message: "snapshot corrupted",
    snapshot: "s1",
    stack: "a\nb",
  });
});

Deno.test("Logger writes its level and above; child loggers add their fields", () => {
  const { logger, lines } = collect({ level: "warn", format: "json" });
  logger.debug("no");
  logger.info("no");
  logger.warn("yes");
  assert.equal(logger.enabled("info"), false);
  assert.equal(logger.enabled("error"), true);
  const child = logger.child({ requestId: "r1" });
  child.error("child", { extra: 1 });
  child.info("no");
  assert.deepEqual(lines.map((line) => JSON.parse(line).message), ["yes", "child"]);
  assert.equal(JSON.parse(lines[1]).requestId, "r1");
  assert.equal(JSON.parse(lines[1]).extra, 1);
});

Deno.test("Logger fields never overwrite timestamp, level or message", () => {
  const { logger, lines } = collect({ format: "json" });
  logger.info("real", { message: "fake", level: "error" });
  assert.deepEqual(JSON.parse(lines[0]), {
    timestamp: "2026-12-01T09:30:00.123Z",
    level: "info",
    message: "real",
  });
});
