import assert from "node:assert/strict";
import { LineSplitter, parseProgressLine, ProgressParser } from "../../lab/progress.ts";

Deno.test("parseProgressLine reads the agent's lines and its final status", () => {
  assert.deepEqual(parseProgressLine("lab-agent: booted 6.1.0-56-amd64 in 31.2 s"), {
    kind: "agent",
    message: "booted 6.1.0-56-amd64 in 31.2 s",
  });
  assert.deepEqual(parseProgressLine("lab-agent: done rc=1\r"), { kind: "done", exitCode: 1 });
});

Deno.test("parseProgressLine reads deno test's plain report: files, cases, steps, times", () => {
  assert.deepEqual(parseProgressLine("running 3 tests from ./tests/module_test.js"), {
    kind: "file",
    file: "./tests/module_test.js",
    count: 3,
  });
  assert.deepEqual(parseProgressLine("the module builds ... ok (4s)"), {
    kind: "case",
    name: "the module builds",
    depth: 0,
    status: "ok",
    duration: "4s",
  });
  assert.deepEqual(parseProgressLine("  unload ... FAILED (12ms)"), {
    kind: "case",
    name: "unload",
    depth: 1,
    status: "failed",
    duration: "12ms",
  });
  assert.deepEqual(parseProgressLine("loads ... FAILED (due to 1 failed step) (1m 2s)"), {
    kind: "case",
    name: "loads",
    depth: 0,
    status: "failed",
    duration: "1m 2s",
  });
  assert.equal(parseProgressLine("needs a module ... ignored (0ms)").kind, "case");
  assert.deepEqual(parseProgressLine("  with steps ..."), {
    kind: "start",
    name: "with steps",
    depth: 1,
  });
});

Deno.test("parseProgressLine leaves other lines as output", () => {
  for (
    const line of [
      "with steps ... inner b => ./c_test.js:4:83",
      "SKIP x: runs only inside the lab guest",
      "FAILED | 2 passed (1 step) | 1 failed (1 step) | 1 ignored (1s)",
    ]
  ) {
    assert.equal(parseProgressLine(line).kind, "output", line);
  }
});

Deno.test("LineSplitter joins lines split across chunks, including split UTF-8", () => {
  const splitter = new LineSplitter();
  const bytes = new TextEncoder().encode("first\r\nsecond µs line\nthi");
  const cut = bytes.indexOf(0xc2) + 1; // inside the two-byte "µ"
  assert.deepEqual(splitter.push(bytes.subarray(0, cut)), ["first"]);
  assert.deepEqual(splitter.push(bytes.subarray(cut)), ["second µs line"]);
  assert.deepEqual(splitter.push(new TextEncoder().encode("rd\n")), ["third"]);
  assert.deepEqual(splitter.flush(), []);
  splitter.push(new TextEncoder().encode("tail"));
  assert.deepEqual(splitter.flush(), ["tail"]);
});

Deno.test("ProgressParser gives a slow case its late result line", () => {
  const parser = new ProgressParser();
  const lines = [
    "running 2 tests from ./tests/module_test.js",
    "the module builds ...'the module builds' has been running for over (1m0s)",
    " ok (1m16s)",
    "loads and unloads ...",
    "  load ... ok (1s)",
    "  unload ...",
    "------- output -------",
    "rmmod said something",
    "----- output end -----",
    "  unload ... FAILED (763ms)",
    "loads and unloads ... FAILED (due to 1 failed step) (2s)",
  ];
  const events = lines.map((line) => parser.parse(line));
  assert.deepEqual(events[1], {
    kind: "start",
    name: "the module builds",
    depth: 0,
    slowFor: "1m0s",
  });
  assert.deepEqual(events[2], {
    kind: "case",
    name: "the module builds",
    depth: 0,
    status: "ok",
    duration: "1m16s",
  });
  assert.deepEqual(
    events.flatMap((e) => e.kind === "case" ? [[e.name, e.depth, e.status]] : []),
    [
      ["the module builds", 0, "ok"],
      ["load", 1, "ok"],
      ["unload", 1, "failed"],
      ["loads and unloads", 0, "failed"],
    ],
  );
  assert.equal(events[7].kind, "output");
});

Deno.test("ProgressParser reads a second slow notice as the same case still running", () => {
  const parser = new ProgressParser();
  parser.parse("builds ...'builds' has been running for over (1m0s)");
  assert.deepEqual(parser.parse("'builds' has been running for over (2m0s)"), {
    kind: "start",
    name: "builds",
    depth: 0,
    slowFor: "2m0s",
  });
  assert.equal(parser.parse(" ok (2m5s)").kind, "case");
});
