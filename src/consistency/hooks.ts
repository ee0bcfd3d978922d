/**
 * Take hooks: executables in a folder given when the service starts
 * (`serve --hooks-dir DIR`, never from an API request), run in name order
 * before the freeze (`pre`) and after the thaw (`post`), e.g. to make a
 * database flush and hold its writes while the snapshot is taken.
 *
 * Each hook runs as `HOOK pre|post SNAPSHOT_ID` with the environment
 * variables BLKSNAP_HOOK_PHASE, BLKSNAP_SNAPSHOT_ID, BLKSNAP_DEVICES (device
 * ids, space-separated) and, for `post`, BLKSNAP_TAKE_RESULT (`taken`,
 * `failed`, or `aborted` when a pre hook failed). Each has a timeout, after
 * which it is killed. Every line it prints is logged. A `pre` hook that
 * fails (non-zero exit, killed, or timed out) aborts the take: the later
 * pre hooks do not run, nothing is frozen or taken, and the post hooks still
 * run so that what the earlier pre hooks did can be undone.
 *
 * @module
 */

import { join } from "node:path";
import { ServiceError } from "../errors.ts";

/** The phase a hook runs in. */
export type HookPhase = "pre" | "post";

/** How one hook run went. */
export interface HookRun {
  /** The hook's file name. */
  name: string;
  /** When it ran. */
  phase: HookPhase;
  /** Its exit status; absent when it was killed. */
  exitCode?: number;
  /** Whether it was killed at the timeout. */
  timedOut: boolean;
  /** Milliseconds it ran. */
  durationMs: number;
}

/** What a hook run is about. */
export interface HookContext {
  /** The snapshot being taken. */
  snapshotId: string;
  /** Its devices' ids. */
  deviceIds: string[];
  /** Post hooks: how the take ended. */
  result?: "taken" | "failed" | "aborted";
}

/** Options of {@link Hooks.fromDirectory}. */
export interface HooksOptions {
  /** Milliseconds each hook may run before it is killed. */
  timeoutMs: number;
  /** Where hook output and outcomes are logged, one line per call. */
  log: (line: string) => void;
}

/** Keep at most this much of a hook's output for the problem detail. */
const LAST_LINE_CHARS = 300;

/** The hooks of one folder. */
export class Hooks {
  readonly #dir: string;
  readonly #names: string[];
  readonly #options: HooksOptions;

  private constructor(dir: string, names: string[], options: HooksOptions) {
    this.#dir = dir;
    this.#names = names;
    this.#options = options;
  }

  /**
   * The executable regular files of `dir` (names not starting with "."),
   * in name order. NOT_FOUND when `dir` is not a readable folder.
   */
  static async fromDirectory(dir: string, options: HooksOptions): Promise<Hooks> {
    const names: string[] = [];
    try {
      for await (const entry of Deno.readDir(dir)) {
        if (entry.name.startsWith(".")) continue;
        const info = await Deno.stat(join(dir, entry.name));
        if (info.isFile && ((info.mode ?? 0) & 0o111) !== 0) names.push(entry.name);
      }
    } catch (cause) {
      throw new ServiceError(
        "NOT_FOUND",
        `Cannot read the hooks folder ${dir}: ${(cause as Error).message}`,
        {
          cause,
        },
      );
    }
    return new Hooks(dir, names.sort(), options);
  }

  /** The hooks' names, in the order they run. */
  get names(): readonly string[] {
    return this.#names;
  }

  /**
   * Runs every hook of `phase`. For `pre`, the first failure stops the run
   * and throws HOOK_FAILED (its runs so far are in the error's `runs`).
   */
  async run(phase: HookPhase, context: HookContext): Promise<HookRun[]> {
    const runs: HookRun[] = [];
    for (const name of this.#names) {
      const { run, lastLine } = await this.#runOne(name, phase, context);
      runs.push(run);
      const failed = run.exitCode !== 0;
      if (failed && phase === "pre") {
        const how = run.timedOut
          ? `was killed after ${this.#options.timeoutMs} ms`
          : run.exitCode === undefined
          ? "was killed"
          : `exited ${run.exitCode}`;
        throw new HookFailedError(
          `The pre-take hook ${name} ${how}${
            lastLine ? `: ${lastLine}` : ""
          }; the snapshot was not taken`,
          runs,
        );
      }
    }
    return runs;
  }

  async #runOne(
    name: string,
    phase: HookPhase,
    context: HookContext,
  ): Promise<{ run: HookRun; lastLine: string }> {
    const { log, timeoutMs } = this.#options;
    const started = performance.now();
    const env: Record<string, string> = {
      BLKSNAP_HOOK_PHASE: phase,
      BLKSNAP_SNAPSHOT_ID: context.snapshotId,
      BLKSNAP_DEVICES: context.deviceIds.join(" "),
    };
    if (context.result) env.BLKSNAP_TAKE_RESULT = context.result;
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(join(this.#dir, name), {
        args: [phase, context.snapshotId],
        env,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (error) {
      log(`hook ${name} (${phase}) could not start: ${(error as Error).message}`);
      return {
        run: { name, phase, timedOut: false, durationMs: 0 },
        lastLine: `it could not start: ${(error as Error).message}`,
      };
    }
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        child.kill("SIGKILL");
      } catch {
        // Ended meanwhile.
      }
    }, timeoutMs);
    let lastLine = "";
    const follow = async (stream: ReadableStream<Uint8Array>) => {
      let buffer = "";
      const emit = (text: string) => {
        const line = text.trimEnd();
        if (!line) return;
        log(`hook ${name} (${phase}): ${line}`);
        lastLine = line.slice(0, LAST_LINE_CHARS);
      };
      for await (const text of stream.pipeThrough(new TextDecoderStream())) {
        buffer += text;
        const lines = buffer.split("\n");
        buffer = lines.pop()!;
        lines.forEach(emit);
      }
      emit(buffer);
    };
    const [status] = await Promise.all([child.status, follow(child.stdout), follow(child.stderr)]);
    clearTimeout(timer);
    const run: HookRun = {
      name,
      phase,
      ...(status.signal === null ? { exitCode: status.code } : {}),
      timedOut,
      durationMs: Math.round(performance.now() - started),
    };
    log(
      `hook ${name} (${phase}) ${
        timedOut
          ? "timed out"
          : run.exitCode === null
          ? `killed by ${status.signal}`
          : `exited ${run.exitCode}`
      } after ${run.durationMs} ms`,
    );
    return { run, lastLine };
  }
}

/** A pre-take hook failed: HOOK_FAILED, with the hook runs up to the failure. */
export class HookFailedError extends ServiceError {
  /** The pre hooks that ran, the failed one last. */
  readonly runs: HookRun[];

  /** `detail` names the hook and why it failed. */
  constructor(detail: string, runs: HookRun[]) {
    super("HOOK_FAILED", detail);
    this.runs = runs;
  }
}
