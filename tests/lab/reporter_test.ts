import assert from "node:assert/strict";
import { createReporter, formatDuration } from "../../lab/reporter.ts";

Deno.test("formatDuration picks ms, seconds, then minutes", () => {
  assert.equal(formatDuration(850), "850 ms");
  assert.equal(formatDuration(12_340), "12.3 s");
  assert.equal(formatDuration(245_000), "4 min 05 s");
});

Deno.test("the plain reporter writes whole lines only: step start, end with time, failures", async () => {
  let out = "";
  const reporter = createReporter({ live: false, write: (text) => out += text });
  assert.equal(await reporter.step("build", () => Promise.resolve(7)), 7);
  reporter.status("hidden detail");
  reporter.line("a case");
  await assert.rejects(reporter.step("boot", () => Promise.reject(new Error("no"))));
  reporter.close();
  const lines = out.split("\n");
  assert.equal(lines[0], "build ...");
  assert.match(lines[1], /^build: done in \d+ ms$/);
  assert.equal(lines[2], "a case");
  assert.equal(lines[3], "boot ...");
  assert.match(lines[4], /^boot: FAILED after \d+ ms$/);
  assert.ok(!out.includes("\x1b") && !out.includes("\r") && !out.includes("hidden"));
});

Deno.test("the live reporter redraws one status line and keeps finished lines", async () => {
  let out = "";
  const reporter = createReporter({ live: true, write: (text) => out += text, columns: () => 40 });
  await reporter.step("build the image", () => {
    reporter.status("a very long line from the build tool that must be cut to the width");
    reporter.line("kept line");
    return Promise.resolve();
  });
  reporter.close();
  const frames = out.split("\r\x1b[2K").filter((frame) => frame !== "");
  assert.ok(frames.every((frame) => frame.replace(/\n$/, "").length <= 39), frames.join("|"));
  assert.ok(frames.includes("kept line\n"));
  assert.ok(
    frames.some((frame) => /^✔ build the image {2}\d+ ms\n$/.test(frame)),
    frames.join("|"),
  );
});
