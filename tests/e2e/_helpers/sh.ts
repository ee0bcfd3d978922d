/**
 * Running the guest's tools from e2e cases: a command that fails throws with its output, so a
 * failed case says which command failed and what it printed.
 *
 * @module
 */

/** Options of {@link run}. */
export interface RunOptions {
  /** Working directory. */
  cwd?: string;
  /** Bytes for the command's standard input. */
  stdin?: Uint8Array;
  /** Accept a non-zero exit status instead of throwing. */
  allowFailure?: boolean;
}

/** Outcome of {@link run}. */
export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `command` with `args` and waits for it.
 *
 * @throws {Error} when it exits non-zero (unless allowFailure), with its stderr and stdout.
 */
export async function run(
  command: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const child = new Deno.Command(command, {
    args: [...args],
    cwd: options.cwd,
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin) {
    const writer = child.stdin.getWriter();
    await writer.write(options.stdin);
    await writer.close();
  }
  const output = await child.output();
  const result = {
    code: output.code,
    stdout: new TextDecoder().decode(output.stdout),
    stderr: new TextDecoder().decode(output.stderr),
  };
  if (result.code !== 0 && !options.allowFailure) {
    throw new Error(
      `${command} ${args.join(" ")} exited with ${result.code}\n${result.stderr}${result.stdout}`,
    );
  }
  return result;
}

/**
 * Polls `condition` every 100 ms until it holds.
 *
 * @throws {Error} naming `what` after `timeoutMs` (default 10 s).
 */
export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  options: { timeoutMs?: number } = {},
): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** True when `path` exists (without following a missing target's error). */
export function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Hex SHA-256 of a file's contents. */
export async function sha256File(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}
