// The guest runs `deno test` with NO_COLOR and --junit-path; the host reads both outputs. This
// runs the same deno on a small suite and checks that the host's readers understand it.
import assert from "node:assert/strict";
import { parseJUnit, summarize } from "../../lab/junit.ts";
import { parseProgressLine } from "../../lab/progress.ts";

const suite = `
Deno.test("passes", async () => { await new Promise((r) => setTimeout(r, 20)); });
Deno.test({ name: "is skipped", ignore: true, fn() {} });
Deno.test("has steps", async (t) => {
  await t.step("good step", () => {});
  await t.step("bad step", () => { console.log("noise from the step"); throw new Error("boom"); });
});
`;

Deno.test("the host reads a real deno test run: progress lines and JUnit agree", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/sample_test.js`, suite);
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["test", "--no-config", "-A", `--junit-path=${dir}/junit.xml`, "sample_test.js"],
      cwd: dir,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(output.success, false, "the suite has a failing step");
    const lines = new TextDecoder().decode(output.stdout).split("\n");
    const events = lines.map(parseProgressLine);
    assert.deepEqual(
      events.flatMap((e) => e.kind === "case" ? [[e.name, e.depth, e.status]] : []),
      [
        ["passes", 0, "ok"],
        ["is skipped", 0, "ignored"],
        ["good step", 1, "ok"],
        ["bad step", 1, "failed"],
        ["has steps", 0, "failed"],
      ],
    );
    assert.ok(events.some((e) => e.kind === "file" && e.count === 3));
    const cases = parseJUnit(await Deno.readTextFile(`${dir}/junit.xml`));
    assert.deepEqual(summarize(cases), { passed: 2, failed: 2, skipped: 1 });
    assert.match(cases.find((c) => c.name === "has steps > bad step")?.message ?? "", /boom/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
