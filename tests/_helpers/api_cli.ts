/**
 * The CLI as a subprocess: `deno run -A src/cli/main.ts ...` with a clean
 * environment (no BLKSNAP_* from the caller's shell unless given), run to
 * completion or kept running (serve) with its standard error followed line
 * by line.
 *
 * @module
 */

const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;
const REPO = new URL("../..", import.meta.url).pathname;

/** The outcome of a finished CLI run. */
export interface CliResult {
  /** Exit status. */
  code: number;
  /** Standard output as text. */
  stdout: string;
  /** Standard output as bytes (image reads to stdout). */
  stdoutBytes: Uint8Array;
  /** Standard error as text. */
  stderr: string;
}

function environment(env: Record<string, string>): Record<string, string> {
  const kept: Record<string, string> = { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" };
  for (const name of ["PATH", "HOME", "DENO_DIR", "XDG_CACHE_HOME", "TMPDIR"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) kept[name] = value;
  }
  return { ...kept, ...env };
}

function command(
  args: string[],
  env: Record<string, string>,
  options: { stdin: "null" | "piped"; cwd?: string },
) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    cwd: options.cwd ?? REPO,
    clearEnv: true,
    env: environment(env),
    stdin: options.stdin,
    stdout: "piped",
    stderr: "piped",
  });
}

/**
 * Runs `blksnapctl ARGS` to completion with `env` added to a clean environment, in `cwd`
 * (default the repository).
 */
export async function runCli(
  args: string[],
  env: Record<string, string> = {},
  options: { cwd?: string } = {},
): Promise<CliResult> {
  const output = await command(args, env, { stdin: "null", cwd: options.cwd }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stdoutBytes: output.stdout,
    stderr: decoder.decode(output.stderr),
  };
}

/** True when util-linux `script` (to run the CLI on a terminal) is installed. */
export function terminalAvailable(): boolean {
  try {
    return Deno.statSync("/usr/bin/script").isFile;
  } catch {
    return false;
  }
}

function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/**
 * Runs `blksnap ARGS` on a pseudo-terminal (util-linux `script`), so that its
 * standard output and error are terminals; returns what the terminal showed.
 */
export async function runCliOnTerminal(
  args: string[],
  env: Record<string, string> = {},
): Promise<CliResult> {
  const line = [Deno.execPath(), "run", "-A", MAIN, ...args].map(shellQuote).join(" ");
  const output = await new Deno.Command("/usr/bin/script", {
    args: ["-qefc", line, "/dev/null"],
    cwd: REPO,
    clearEnv: true,
    env: environment(env),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stdoutBytes: output.stdout,
    stderr: decoder.decode(output.stderr),
  };
}

/** A CLI process left running (serve, watch), its standard error read as it comes. */
export class RunningCli implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #stderrLines: string[] = [];
  readonly #stdout: Promise<string>;
  readonly #stderrDone: Promise<void>;
  #changed = Promise.withResolvers<void>();

  /** Starts `blksnap ARGS` with `env` added to a clean environment. */
  constructor(args: string[], env: Record<string, string> = {}) {
    this.#child = command(args, env, { stdin: "null" }).spawn();
    this.#stdout = new Response(this.#child.stdout).text();
    this.#stderrDone = this.#follow();
  }

  async #follow(): Promise<void> {
    let buffer = "";
    for await (const text of this.#child.stderr.pipeThrough(new TextDecoderStream())) {
      buffer += text;
      const lines = buffer.split("\n");
      buffer = lines.pop()!;
      this.#stderrLines.push(...lines);
      this.#changed.resolve();
      this.#changed = Promise.withResolvers<void>();
    }
    if (buffer) this.#stderrLines.push(buffer);
    this.#changed.resolve();
  }

  /** The process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Standard error lines so far. */
  get stderrLines(): readonly string[] {
    return this.#stderrLines;
  }

  /**
   * The first match of `pattern` in a standard error line, waiting for it;
   * throws with the output so far when the process ends or `timeoutMs` passes first.
   */
  async waitForStderr(pattern: RegExp, timeoutMs = 15_000): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    let ended = false;
    const status = this.#child.status.then(() => (ended = true));
    while (true) {
      for (const line of this.#stderrLines) {
        const match = pattern.exec(line);
        if (match) return match;
      }
      const left = deadline - Date.now();
      if (ended || left <= 0) {
        throw new Error(`no ${pattern} on stderr:\n${this.#stderrLines.join("\n")}`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.#changed.promise,
        status,
        new Promise((resolve) => timer = setTimeout(resolve, Math.min(left, 100))),
      ]);
      clearTimeout(timer);
    }
  }

  /** Sends `signal` to the process. */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    this.#child.kill(signal);
  }

  /** Waits for the process to end; returns its exit status and output. */
  async finished(): Promise<CliResult> {
    const [status, stdout] = await Promise.all([this.#child.status, this.#stdout]);
    await this.#stderrDone;
    return {
      code: status.code,
      stdout,
      stdoutBytes: new TextEncoder().encode(stdout),
      stderr: this.#stderrLines.join("\n"),
    };
  }

  /** Like {@link finished}, but throws when the process still runs after `timeoutMs`. */
  async finishedWithin(timeoutMs: number): Promise<CliResult> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new Error(`still running after ${timeoutMs} ms:\n${this.#stderrLines.join("\n")}`),
          ),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([this.finished(), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Kills the process if it still runs and waits for it. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already ended.
    }
    await this.finished();
  }
}
