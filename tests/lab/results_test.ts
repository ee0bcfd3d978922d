import assert from "node:assert/strict";
import { judgeResults, unpackResults } from "../../lab/results.ts";

const junit = (body: string) =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="deno test"><testsuite name="./tests/a_test.js">\n${body}\n</testsuite></testsuites>\n`;

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("unpackResults reads a tar written at the start of a larger zeroed disk", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(`${dir}/out`);
    await Deno.writeTextFile(`${dir}/out/junit.xml`, junit(""));
    await Deno.writeTextFile(`${dir}/out/exit-code`, "0\n");
    const disk = `${dir}/out.img`;
    await Deno.writeFile(disk, new Uint8Array());
    await Deno.truncate(disk, 8 * 1024 * 1024);
    // As the guest does: tar straight onto the block device, the rest stays zero.
    const tar = await new Deno.Command("tar", { args: ["-C", `${dir}/out`, "-cf", "-", "."] })
      .output();
    const file = await Deno.open(disk, { write: true });
    await file.write(tar.stdout);
    file.close();
    assert.equal(await unpackResults(disk, `${dir}/results`), true);
    assert.equal(await Deno.readTextFile(`${dir}/results/exit-code`), "0\n");
  });
});

Deno.test("unpackResults says false for a disk the guest never wrote", async () => {
  await withDir(async (dir) => {
    await Deno.writeFile(`${dir}/out.img`, new Uint8Array(1024 * 1024));
    assert.equal(await unpackResults(`${dir}/out.img`, `${dir}/results`), false);
  });
});

Deno.test("judgeResults: passes, skips with reasons, and writes the annotated JUnit", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(
      `${dir}/junit.xml`,
      junit(
        `<testcase name="a" classname="./tests/a_test.js" time="1.000"></testcase>\n` +
          `<testcase name="b" classname="./tests/a_test.js" time="0.000"><skipped/></testcase>`,
      ),
    );
    await Deno.writeTextFile(`${dir}/skips.jsonl`, '{"name":"b","reason":"no module given"}\n');
    const verdict = await judgeResults(dir, { junitOut: `${dir}/annotated.xml`, agentExitCode: 0 });
    assert.equal(verdict.ok, true);
    assert.deepEqual(verdict.summary, { passed: 1, failed: 0, skipped: 1 });
    assert.equal(verdict.cases[1].message, "no module given");
    assert.match(
      await Deno.readTextFile(`${dir}/annotated.xml`),
      /<skipped message="no module given"\/>/,
    );
  });
});

Deno.test("judgeResults fails on a failed case, a bad exit, no report, or nothing passing", async () => {
  await withDir(async (dir) => {
    const failing =
      `<testcase name="a" classname="f" time="0.1"><failure message="x">boom</failure></testcase>`;
    await Deno.writeTextFile(`${dir}/junit.xml`, junit(failing));
    const failed = await judgeResults(dir, { junitOut: `${dir}/a.xml`, agentExitCode: 1 });
    assert.equal(failed.ok, false);
    assert.deepEqual(failed.problems, ["the e2e suite exited with status 1", "1 case(s) failed"]);

    await Deno.writeTextFile(
      `${dir}/junit.xml`,
      junit(`<testcase name="s" classname="f" time="0"><skipped/></testcase>`),
    );
    const nothing = await judgeResults(dir, { junitOut: `${dir}/a.xml`, agentExitCode: 0 });
    assert.deepEqual(nothing.problems, ["no case passed (nothing ran?)"]);

    await Deno.remove(`${dir}/junit.xml`);
    const silent = await judgeResults(dir, { junitOut: `${dir}/a.xml` });
    assert.equal(silent.ok, false);
    assert.equal(silent.problems.length, 2);
  });
});
