/**
 * Runs README.md's curl walkthrough, verbatim but for the two address lines,
 * against a live `serve` in a temporary folder, so the README stays true.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const missing = ["/usr/bin/curl", "/usr/bin/qemu-io"].filter((tool) => {
  try {
    return !Deno.statSync(tool).isFile;
  } catch {
    return true;
  }
});
if (missing.length) {
  console.log(`skipping the README walkthrough: ${missing.join(", ")} not installed`);
}

function walkthrough(readme: string): string {
  const section = /<!-- walkthrough:start -->\s*```sh\n([\s\S]*?)```\s*<!-- walkthrough:end -->/
    .exec(readme);
  assert.ok(section, "README.md has no walkthrough block");
  return section[1];
}

async function startService(cwd: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${root}src/cli/main.ts`,
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--nbd-listen",
      "127.0.0.1:0",
    ],
    cwd,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let log = "";
  let api: string | undefined;
  let nbd: string | undefined;
  while (!api || !nbd) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`serve exited early:\n${log}`);
    log += value;
    api ??= /HTTP API on (http:\/\/[^\s]+\/v1)/.exec(log)?.[1];
    nbd ??= /NBD exports on (nbd:\/\/[\d.]+:\d+)\//.exec(log)?.[1];
  }
  const drained = (async () => {
    while (!(await lines.read()).done) { /* keep the pipe flowing */ }
  })();
  return { child, api, nbd, drained };
}

Deno.test({
  name: "README walkthrough runs as written against a live service",
  ignore: missing.length > 0,
  async fn() {
    const cwd = await Deno.makeTempDir();
    const service = await startService(cwd);
    try {
      const script = walkthrough(await Deno.readTextFile(`${root}README.md`))
        .replace(/^API=.*$/m, `API=${service.api}`)
        .replace(/^NBD=.*$/m, `NBD=${service.nbd}`);
      const result = await new Deno.Command("bash", {
        args: ["-e", "-o", "pipefail", "-c", script],
        cwd,
        env: { PATH: `/usr/bin:/bin:${Deno.env.get("PATH")}` },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const out = new TextDecoder().decode(result.stdout);
      const err = new TextDecoder().decode(result.stderr);
      assert.equal(result.code, 0, `walkthrough failed:\n${out}\n${err}`);
      assert.match(out, /^ aa aa aa aa aa aa aa aa aa aa aa aa aa aa aa aa$/m);
      assert.match(out, /read 1048576\/1048576 bytes at offset 0/);
      assert.match(out, /^\{"events":\[\],"lastId":\d+,"truncated":false\}$/m);
      assert.match(out, /"code":"FULL_BACKUP_REQUIRED".*"reason":"generation_changed"/);
      assert.match(out, /"changeToken":"[A-Za-z0-9_-]+","sinceToken":"[A-Za-z0-9_-]+"/);
      assert.match(
        out,
        /"changedBytes":131072,"extents":\[\{"offset":0,"length":65536\},\{"offset":134217728,"length":65536\}\]/,
      );
      assert.match(out, /"code":"CONFLICT"/);
      assert.deepEqual([...Deno.readDirSync(`${cwd}/state`)].map((e) => e.name).sort(), [
        "cbt",
        "disk0.img",
        "service.lock",
        "userspace-devices.json",
        "userspace-snapshots.json",
      ]);
      assert.deepEqual([...Deno.readDirSync(`${cwd}/state/cbt`)], [], "detach removed the record");
    } finally {
      service.child.kill("SIGTERM");
      await service.child.status;
      await service.drained;
      await Deno.remove(cwd, { recursive: true });
    }
  },
});
