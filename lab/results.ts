/**
 * Bringing a run's results back: the guest leaves a tar archive of its output folder on the
 * lab-out disk (JUnit XML, the test output, skip reasons, the service log when a case ran the
 * service, the journal, dmesg, the exit status). This unpacks it, adds the skip reasons to the
 * JUnit file and decides the verdict.
 *
 * @module
 */

import {
  addSkipReasons,
  type JUnitCase,
  type JUnitSummary,
  parseJUnit,
  parseSkipRecords,
  summarize,
} from "./junit.ts";
import { runLogged } from "./process.ts";

/** The outcome of a run. */
export interface RunVerdict {
  /** True when the suite ran, nothing failed and at least one case passed. */
  readonly ok: boolean;
  readonly cases: readonly JUnitCase[];
  readonly summary: JUnitSummary;
  /** Why the run is not ok, when it is not. */
  readonly problems: readonly string[];
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
}

/**
 * Unpacks the output disk into `resultsDir`; returns false when the guest wrote nothing.
 */
export async function unpackResults(outputDisk: string, resultsDir: string): Promise<boolean> {
  await Deno.mkdir(resultsDir, { recursive: true });
  const head = new Uint8Array(512);
  const file = await Deno.open(outputDisk, { read: true });
  try {
    await file.read(head);
  } finally {
    file.close();
  }
  if (head.every((byte) => byte === 0)) return false;
  await runLogged("tar", ["-xf", outputDisk, "-C", resultsDir]);
  return true;
}

/**
 * Reads `resultsDir` (unpacked), writes `junitOut` (the JUnit file with skip reasons) and
 * decides the verdict. `agentExitCode` is what the agent reported, if it reported.
 */
export async function judgeResults(
  resultsDir: string,
  options: { junitOut: string; agentExitCode?: number },
): Promise<RunVerdict> {
  const { junitOut, agentExitCode } = options;
  const problems: string[] = [];
  const xml = await readOptional(`${resultsDir}/junit.xml`);
  const reasons = parseSkipRecords(await readOptional(`${resultsDir}/skips.jsonl`) ?? "");
  let cases: JUnitCase[] = [];
  if (xml === undefined) {
    problems.push("the guest produced no JUnit report (see serial.log and results/)");
  } else {
    const annotated = addSkipReasons(xml, reasons);
    await Deno.writeTextFile(junitOut, annotated);
    cases = parseJUnit(annotated);
  }
  const summary = summarize(cases);
  if (agentExitCode === undefined) problems.push("the guest agent never reported the end");
  else if (agentExitCode !== 0) problems.push(`the e2e suite exited with status ${agentExitCode}`);
  if (summary.failed > 0) problems.push(`${summary.failed} case(s) failed`);
  if (xml !== undefined && summary.passed === 0 && summary.failed === 0) {
    problems.push("no case passed (nothing ran?)");
  }
  return { ok: problems.length === 0, cases, summary, problems };
}
