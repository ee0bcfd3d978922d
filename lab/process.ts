/**
 * Running the lab's build tools (mmdebstrap, Packer, qemu-img, ssh-keygen): output goes to a
 * log file and, line by line, to a callback that feeds the progress display.
 *
 * @module
 */

import { ServiceError } from "../src/errors.ts";
import { LineSplitter } from "./progress.ts";

/** Options of {@link runLogged}. */
export interface RunLoggedOptions {
  /** Append stdout and stderr here. */
  logFile?: string;
  /** Called with each output line. */
  onLine?: (line: string) => void;
  /** Working directory and extra environment. */
  cwd?: string;
  env?: Record<string, string>;
  /** Abort (SIGTERM) the command. */
  signal?: AbortSignal;
}

/**
 * Runs `command` and waits for it.
 *
 * @throws {ServiceError} UNAVAILABLE when the program is missing, IO when it exits non-zero
 * (the detail names the log file and repeats the last lines).
 */
export async function runLogged(
  command: string,
  args: readonly string[],
  options: RunLoggedOptions = {},
): Promise<void> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(command, {
      args: [...args],
      cwd: options.cwd,
      env: options.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: options.signal,
    }).spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new ServiceError("UNAVAILABLE", `Cannot run ${command}: it is not installed`, {
        cause: error,
      });
    }
    throw error;
  }
  const log = options.logFile === undefined
    ? undefined
    : await Deno.open(options.logFile, { create: true, append: true });
  const tail: string[] = [];
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const splitter = new LineSplitter();
    const deliver = (lines: string[]) => {
      for (const line of lines) {
        tail.push(line);
        if (tail.length > 20) tail.shift();
        options.onLine?.(line);
      }
    };
    for await (const chunk of stream) {
      if (log !== undefined) await log.write(chunk);
      deliver(splitter.push(chunk));
    }
    deliver(splitter.flush());
  };
  try {
    const [status] = await Promise.all([child.status, pump(child.stdout), pump(child.stderr)]);
    if (!status.success) {
      const where = options.logFile ? ` (log: ${options.logFile})` : "";
      throw new ServiceError(
        "IO",
        `${command} ${args[0] ?? ""} failed with exit status ${status.code}${where}:\n` +
          tail.slice(-10).join("\n"),
      );
    }
  } finally {
    log?.close();
  }
}

/**
 * Runs `command` and returns its stdout.
 *
 * @throws {ServiceError} UNAVAILABLE when the program is missing, IO when it fails.
 */
export async function capture(command: string, args: readonly string[]): Promise<string> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(command, { args: [...args], stdin: "null" }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new ServiceError("UNAVAILABLE", `Cannot run ${command}: it is not installed`, {
        cause: error,
      });
    }
    throw error;
  }
  if (!output.success) {
    throw new ServiceError(
      "IO",
      `${command} ${args.join(" ")} failed: ${new TextDecoder().decode(output.stderr).trim()}`,
    );
  }
  return new TextDecoder().decode(output.stdout);
}
