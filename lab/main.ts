/**
 * `deno task lab`: builds the lab image when it is missing or its inputs changed, boots it with
 * QEMU (KVM when a short probe answers, else TCG), runs the e2e suite inside the guest, brings
 * the results back into a run folder and exits non-zero on any failure. See lab/README.md.
 *
 * @module
 */

import { ServiceError } from "../src/errors.ts";
import { bundle } from "../src/build/bundle.ts";
import { type LabOptions, labUsage, parseLabArgs } from "./args.ts";
import { baseRecipe, ensureBaseImage } from "./base_image.ts";
import { chooseAccelerator } from "./kvm_probe.ts";
import { type CustomKernel, readCustomKernel } from "./kernel_image.ts";
import { ensureLabImage } from "./lab_image.ts";
import { bootGuest, followProgress, type Guest, type RunFiles, runFiles } from "./guest_run.ts";
import { cacheRoot, e2eDir, packerDir, repoRoot, runnerScript, serviceEntry } from "./paths.ts";
import { pruneRuns } from "./prune.ts";
import { createReporter, formatDuration, type Reporter } from "./reporter.ts";
import { judgeResults, type RunVerdict, unpackResults } from "./results.ts";
import { listTestFiles, prepareRunInput, selectTests } from "./run_input.ts";

/** Bundles the service for the image; undefined (with the reason printed) when it cannot. */
async function bundleService(root: string, reporter: Reporter): Promise<string | undefined> {
  try {
    await Deno.stat(serviceEntry);
  } catch {
    reporter.line(`service bundle: none (${serviceEntry} does not exist); service cases skip`);
    return undefined;
  }
  const out = `${root}/bundle/blksnap.js`;
  try {
    await reporter.step("bundle the service", () => bundle([serviceEntry], { outFile: out }));
    return out;
  } catch (error) {
    reporter.line(
      `WARNING: the image gets no service bundle, service cases skip: ${(error as Error).message}`,
    );
    return undefined;
  }
}

function runStamp(): string {
  const now = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*$/, "").replace("T", "-");
  return `${now}-${crypto.randomUUID().slice(0, 6)}`;
}

function describeCase(event: { name: string; depth: number; status: string; duration: string }) {
  const mark = event.status === "ok"
    ? "ok     "
    : event.status === "failed"
    ? "FAILED "
    : "skipped";
  return `${"  ".repeat(event.depth + 1)}${mark} ${event.duration.padStart(7)}  ${event.name}`;
}

async function runLab(options: LabOptions, reporter: Reporter): Promise<RunVerdict> {
  const root = cacheRoot();
  await Deno.mkdir(root, { recursive: true });
  const moduleSrc = options.moduleSrc && await Deno.realPath(options.moduleSrc);
  const moduleKo = options.moduleKo && await Deno.realPath(options.moduleKo);
  const custom = options.kernelImage === undefined
    ? undefined
    : await readCustomKernel(options.kernelImage);
  if (custom !== undefined) {
    reporter.line(`kernel image: ${custom.path} (release ${custom.release}, no initrd)`);
  }

  const serviceBundle = await bundleService(root, reporter);
  const recipe = await baseRecipe(options.kernel);
  const base = await ensureBaseImage({
    recipe,
    packerDir,
    cacheRoot: root,
    reporter,
    rebuild: options.rebuild,
  });
  const decision = await chooseAccelerator(options.accel, {
    kernel: base.kernel,
    cacheDir: root,
  });
  reporter.line(`accelerator: ${decision.accel} (${decision.reason})`);
  const image = await ensureLabImage({
    base,
    kernelPackage: options.kernel,
    serviceBundle,
    accel: decision.accel,
    packerDir,
    cacheRoot: root,
    reporter,
    rebuild: options.rebuild,
  });

  await pruneRuns(`${root}/runs`, 20);
  const runDir = `${root}/runs/${runStamp()}`;
  const files = runFiles(runDir);
  await Deno.mkdir(runDir, { recursive: true });
  reporter.line(`run folder: ${runDir}`);
  const selection = selectTests(await listTestFiles(e2eDir), options.only);
  const bundled = await reporter.step(
    "bundle the e2e cases",
    () =>
      prepareRunInput(files.inDir, files.inputTar, {
        e2eDir,
        runnerScript,
        readme: `${repoRoot}/README.md`,
        selection,
        kernelPackage: options.kernel,
        moduleSrc,
        moduleKo,
        ...(custom !== undefined ? { kernelRelease: custom.release } : {}),
        ...(options.kernelModules !== undefined ? { kernelModules: options.kernelModules } : {}),
        ...(options.kernelHeaders !== undefined ? { kernelHeaders: options.kernelHeaders } : {}),
      }),
  );
  reporter.line(
    `e2e files: ${bundled.join(", ")}` +
      (selection.filter !== undefined ? ` (cases matching ${selection.filter})` : ""),
  );
  if (moduleSrc === undefined && moduleKo === undefined) {
    reporter.line(
      custom === undefined
        ? "module: none given, the module cases will be skipped"
        : "module: none given; the module cases run if the kernel has blksnap of its own " +
          "(built in, or among --kernel-modules)",
    );
  }

  const guest = await bootGuest({
    image,
    runDir,
    accel: decision.accel,
    keep: options.keep,
    ...(custom !== undefined ? { kernel: custom.path } : {}),
  });
  if (options.keep) {
    reporter.line(`VM started (--keep); stop it with: kill $(cat ${files.pidFile})`);
  }
  const { agentExitCode, bootedRelease } = await watchGuest(guest, files, options, reporter);

  const unpacked = await unpackResults(files.outputDisk, files.resultsDir);
  const verdict = await judgeResults(files.resultsDir, {
    junitOut: `${runDir}/junit.xml`,
    agentExitCode,
  });
  if (!unpacked) reporter.line("  the guest wrote no results");
  if (!options.keep) {
    for (const disk of [files.rootDisk, files.scratchDisk, files.outputDisk, files.inputTar]) {
      await Deno.remove(disk).catch(() => {});
    }
  } else if (guest.sshPort !== undefined) {
    reporter.line(
      [
        "VM left running (--keep). Reach it with:",
        `  ssh -i ${files.sshKey} -p ${guest.sshPort} -o StrictHostKeyChecking=no ` +
        `-o UserKnownHostsFile=/dev/null root@127.0.0.1`,
        `Console log: ${files.serialLog}`,
        `Stop it with: kill $(cat ${files.pidFile})`,
      ].join("\n"),
    );
  }
  const kernel = kernelLine(bootedRelease, {
    imageRelease: image.kernelRelease,
    kernelPackage: options.kernel,
    custom,
  });
  reporter.line(kernel);
  await writeSummary(runDir, verdict, kernel);
  for (const skipped of verdict.cases.filter((c) => c.status === "skipped")) {
    reporter.line(`skipped: ${skipped.name}${skipped.message ? ` (${skipped.message})` : ""}`);
  }
  for (const failed of verdict.cases.filter((c) => c.status === "failed")) {
    reporter.line(`FAILED: ${failed.name}\n${indent(failed.message ?? "")}`);
  }
  const { passed, failed, skipped } = verdict.summary;
  reporter.line(`${passed} passed, ${failed} failed, ${skipped} skipped; results in ${runDir}`);
  for (const problem of verdict.problems) reporter.line(`problem: ${problem}`);
  return verdict;
}

/** What the guest reported about itself. */
interface GuestReport {
  /** The exit status the agent reported (undefined when it never did). */
  readonly agentExitCode?: number;
  /** The kernel release the agent said it booted (undefined when it never started). */
  readonly bootedRelease?: string;
}

/**
 * The summary's kernel line: what the guest booted, and where that kernel came from (the image's
 * Debian package, or a --kernel-image with its release and digest).
 */
export function kernelLine(
  bootedRelease: string | undefined,
  source: { imageRelease: string; kernelPackage: string; custom?: CustomKernel },
): string {
  const { imageRelease, kernelPackage, custom } = source;
  const booted = bootedRelease ?? "unknown (the agent never started)";
  if (custom === undefined) return `kernel: ${booted} (${kernelPackage} ${imageRelease})`;
  return `kernel: ${booted} (--kernel-image ${custom.path}, release ${custom.release}, ` +
    `sha256 ${custom.sha256.slice(0, 16)}; image userland from ${kernelPackage})`;
}

/**
 * Follows the guest from boot to the end of the suite, printing cases as they finish; returns
 * what the agent reported. Without --keep, the guest is stopped by the time this returns.
 */
async function watchGuest(
  guest: Guest,
  files: RunFiles,
  options: LabOptions,
  reporter: Reporter,
): Promise<GuestReport> {
  const deadline = Date.now() + options.timeoutMinutes * 60_000;
  const events = followProgress(files.progressLog, { exited: guest.exited, deadline });
  let agentExitCode: number | undefined;
  let bootedRelease: string | undefined;
  let interrupted = false;
  const interrupt = () => {
    interrupted = true;
    guest.kill();
  };
  Deno.addSignalListener("SIGINT", interrupt);
  try {
    await reporter.step(`boot the guest`, async () => {
      // Read by hand: a for-await loop would close the stream when the step returns.
      for (let next = await events.next(); !next.done; next = await events.next()) {
        const event = next.value;
        if (event.kind === "agent" && event.message.startsWith("booted")) {
          bootedRelease = /^booted (\S+)/.exec(event.message)?.[1];
          reporter.line(`  guest: ${event.message}`);
          return;
        }
        if (options.verbose && event.kind === "output") reporter.line(`  | ${event.text}`);
      }
      throw new ServiceError(
        "TIMEOUT",
        interrupted
          ? "Interrupted"
          : `The guest's agent did not start ${
            Date.now() > deadline ? `within ${options.timeoutMinutes} min` : "(the guest stopped)"
          }; see ${files.serialLog} and ${files.qemuLog}`,
      );
    });
    await reporter.step("run the e2e suite in the guest", async () => {
      for (let next = await events.next(); !next.done; next = await events.next()) {
        const event = next.value;
        if (event.kind === "case") reporter.line(describeCase(event));
        else if (event.kind === "start") {
          reporter.status(event.slowFor ? `${event.name} (over ${event.slowFor})` : event.name);
        } else if (event.kind === "file") reporter.line(`  ${event.file} (${event.count} cases)`);
        else if (event.kind === "agent") reporter.status(event.message);
        else if (event.kind === "done") {
          agentExitCode = event.exitCode;
          return;
        } else if (options.verbose) reporter.line(`  | ${event.text}`);
        else reporter.status(event.text);
      }
      throw new ServiceError(
        "TIMEOUT",
        interrupted
          ? "Interrupted"
          : Date.now() > deadline
          ? `The suite did not finish within ${options.timeoutMinutes} min`
          : `The guest stopped before the suite finished (see ${files.serialLog})`,
      );
    }).catch((error) => reporter.line(`  ${(error as Error).message}`));
    if (!options.keep) {
      // The agent powers the guest off; give it two minutes.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const stopped = await Promise.race([
        guest.exited.then(() => true),
        new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), 120_000)),
      ]);
      clearTimeout(timer);
      if (!stopped) guest.kill();
    }
  } finally {
    Deno.removeSignalListener("SIGINT", interrupt);
    if (!options.keep) {
      guest.kill();
      await guest.exited;
    }
  }
  return { agentExitCode, bootedRelease };
}

function indent(text: string): string {
  return text.split("\n").slice(0, 30).map((line) => `    ${line}`).join("\n");
}

async function writeSummary(runDir: string, verdict: RunVerdict, kernel: string): Promise<void> {
  const lines = [
    kernel,
    ...verdict.cases.map((c) =>
      `${c.status.padEnd(7)} ${c.seconds.toFixed(3).padStart(9)} s  ${c.file}  ${c.name}` +
      (c.status === "skipped" && c.message ? `  (${c.message})` : "")
    ),
  ];
  lines.push(
    `${verdict.summary.passed} passed, ${verdict.summary.failed} failed, ` +
      `${verdict.summary.skipped} skipped`,
    ...verdict.problems.map((problem) => `problem: ${problem}`),
    verdict.ok ? "verdict: ok" : "verdict: FAILED",
  );
  await Deno.writeTextFile(`${runDir}/summary.txt`, lines.join("\n") + "\n");
}

/** Runs `deno task lab` with `args`; returns the exit code (0 ok, 1 failure, 2 usage). */
export async function main(args: readonly string[]): Promise<number> {
  let options: LabOptions;
  try {
    options = parseLabArgs(args);
  } catch (error) {
    console.error(`lab: ${(error as Error).message}\n\n${labUsage}`);
    return 2;
  }
  if (options.help) {
    console.log(labUsage);
    return 0;
  }
  const reporter = createReporter({ live: Deno.stdout.isTerminal() });
  const started = performance.now();
  try {
    const verdict = await runLab(options, reporter);
    reporter.line(
      `lab: ${verdict.ok ? "ok" : "FAILED"} in ${formatDuration(performance.now() - started)}`,
    );
    return verdict.ok ? 0 : 1;
  } catch (error) {
    reporter.line(`lab: ${(error as Error).message}`);
    return 1;
  } finally {
    reporter.close();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
