import assert from "node:assert/strict";
import { ERASE_TO_END, formatBytes, formatDuration, Progress } from "../../src/cli/progress.ts";

function run(totalBytes: number, steps: Array<[number, number]>): string[] {
  const frames: string[] = [];
  let now = 0;
  const progress = new Progress(totalBytes, (text) => frames.push(text), { now: () => now });
  for (const [ms, bytes] of steps) {
    now = ms;
    progress.advance(bytes);
  }
  now += 1000;
  progress.finish();
  return frames;
}

Deno.test("Progress frames return to the line start and erase what a longer frame left", () => {
  const frames = run(4 << 20, [[0, 0], [150, 1 << 20], [300, 2 << 20], [450, 1 << 20]]);
  const drawn = frames.filter((f) => f !== "\n");
  assert.ok(drawn.length >= 3);
  for (const frame of drawn) {
    assert.ok(frame.startsWith("\r"), JSON.stringify(frame));
    assert.ok(frame.endsWith(ERASE_TO_END), JSON.stringify(frame));
  }
  assert.equal(frames.at(-1), "\n");
  assert.match(drawn[1], /^\r\[#{8} {22}\] {2}25% 1\.0 MiB of 4\.0 MiB {2}6\.7 MiB\/s {2}ETA 0s/);
  assert.match(
    drawn.at(-1)!,
    new RegExp(String.raw`100% 4\.0 MiB of 4\.0 MiB .* in 1s` + "\u001b\\[K$"),
  );
  assert.ok(!frames.join("").includes("ETA 0s s"));
});

Deno.test("Progress of an unknown or empty size shows what was moved, not 0.0 MiB of 0.0 MiB", () => {
  const unknown = run(0, [[0, 0], [200, 1500]]);
  assert.ok(unknown.every((f) => !f.includes(" of ")), unknown.join("|"));
  assert.match(unknown.at(-2)!, /^\r1\.5 KiB {2}\S+ \S+\/s {2}in 1s/);
  const empty = run(0, []);
  assert.equal(empty[0], `\r0 B  in 1s${ERASE_TO_END}`);
});

Deno.test("formatBytes and formatDuration pick readable units", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(3 * 2 ** 30), "3.00 GiB");
  assert.equal(formatDuration(0.4), "0s");
  assert.equal(formatDuration(187), "3m07s");
  assert.equal(formatDuration(3720), "1h02m");
});
