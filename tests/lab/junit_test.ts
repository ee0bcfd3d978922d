import assert from "node:assert/strict";
import {
  addSkipReasons,
  escapeXml,
  parseJUnit,
  parseSkipRecords,
  summarize,
  unescapeXml,
} from "../../lab/junit.ts";

// The shape `deno test --junit-path` writes (deno 2.9), including a failed step.
const denoJUnit = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="deno test" tests="5" failures="2" errors="0" time="0.325">
    <testsuite name="./tests/a_test.js" tests="5" disabled="1" errors="0" failures="2">
        <testcase name="first passes" classname="./tests/a_test.js" time="0.314" line="1" col="6">
        </testcase>
        <testcase name="module &quot;loads&quot; &amp; unloads" classname="./tests/a_test.js" time="0.000" line="2" col="6">
            <skipped/>
        </testcase>
        <testcase name="with steps" classname="./tests/a_test.js" time="0.002" line="3" col="6">
            <failure message="1 test step failed">1 test step failed.</failure>
        </testcase>
        <testcase name="with steps &gt; inner a" classname="./tests/a_test.js" time="0.000" line="3" col="48">
        </testcase>
        <testcase name="with steps &gt; inner b" classname="./tests/a_test.js" time="0.001" line="3" col="83">
            <failure message="Uncaught Error: boom">Error: boom &lt;here&gt;
    at file:///tmp/a_test.js:3:113</failure>
        </testcase>
    </testsuite>
</testsuites>
`;

Deno.test("parseJUnit reads deno's cases with status, time, file and failure text", () => {
  const cases = parseJUnit(denoJUnit);
  assert.deepEqual(cases.map((c) => [c.name, c.status, c.seconds]), [
    ["first passes", "passed", 0.314],
    ['module "loads" & unloads', "skipped", 0],
    ["with steps", "failed", 0.002],
    ["with steps > inner a", "passed", 0],
    ["with steps > inner b", "failed", 0.001],
  ]);
  assert.equal(cases[0].file, "./tests/a_test.js");
  assert.equal(cases[4].message, "Error: boom <here>\n    at file:///tmp/a_test.js:3:113");
  assert.deepEqual(summarize(cases), { passed: 2, failed: 2, skipped: 1 });
});

Deno.test("addSkipReasons fills the matching <skipped/> and leaves the rest", () => {
  const reasons = parseSkipRecords(
    JSON.stringify({ name: 'module "loads" & unloads', reason: "no module <given>" }) + "\n" +
      JSON.stringify({ name: "not in the file", reason: "x" }) + "\n",
  );
  const annotated = addSkipReasons(denoJUnit, reasons);
  const skipped = parseJUnit(annotated).find((c) => c.status === "skipped");
  assert.equal(skipped?.message, "no module <given>");
  assert.equal(annotated.replace(/<skipped message="[^"]*"\/>/, "<skipped/>"), denoJUnit);
});

Deno.test("parseJUnit handles self-closing cases and an empty document", () => {
  assert.deepEqual(
    parseJUnit(
      `<testsuites><testsuite><testcase name="a" classname="f" time="1.5"/></testsuite></testsuites>`,
    ),
    [
      { name: "a", file: "f", seconds: 1.5, status: "passed" },
    ],
  );
  assert.deepEqual(parseJUnit(""), []);
});

Deno.test("escapeXml and unescapeXml round-trip, numeric references decode", () => {
  const text = `a < b & "c" > 'd'`;
  assert.equal(unescapeXml(escapeXml(text)), text);
  assert.equal(unescapeXml("&#65;&#x42;"), "AB");
});
