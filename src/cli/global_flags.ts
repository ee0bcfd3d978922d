/**
 * Global flags anywhere on the command line: `blksnapctl --url U devices`,
 * `blksnapctl devices --url U` and `blksnapctl snapshot --json list` mean the
 * same. The client flags (--url, --token-file, --json) are lifted out of
 * wherever they stand and handed to the command after its own arguments,
 * where its parser expects them; --help and --version before the command
 * are the program's own. Nothing after a `--` is touched.
 *
 * @module
 */

const VALUE_FLAGS = new Set(["--url", "--token-file"]);
const BOOLEAN_FLAGS = new Set(["--json"]);

/** The command line sorted out. */
export interface CommandLine {
  /** The command's name (the first argument that is not a global flag). */
  command?: string;
  /** The command's own arguments, then the global flags it should see. */
  rest: string[];
  /** -h or --help came before the command. */
  help: boolean;
  /** -V or --version came before the command. */
  version: boolean;
}

/** Sorts `args` into the command, its arguments and the global flags (see the module doc). */
export function hoistGlobalFlags(args: readonly string[]): CommandLine {
  const globals: string[] = [];
  const rest: string[] = [];
  let command: string | undefined;
  let help = false;
  let version = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      rest.push(...args.slice(i));
      break;
    }
    const flag = arg.split("=", 1)[0];
    if (VALUE_FLAGS.has(flag)) {
      if (arg.includes("=") || i + 1 >= args.length) globals.push(arg);
      else globals.push(arg, args[++i]);
    } else if (BOOLEAN_FLAGS.has(flag)) {
      globals.push(arg);
    } else if (command === undefined && (arg === "-h" || arg === "--help")) {
      help = true;
    } else if (command === undefined && (arg === "-V" || arg === "--version")) {
      version = true;
    } else if (command === undefined) {
      command = arg;
    } else {
      rest.push(arg);
    }
  }
  const dashDash = rest.indexOf("--");
  const at = dashDash < 0 ? rest.length : dashDash;
  rest.splice(at, 0, ...(help ? ["--help"] : []), ...globals);
  return { command, rest, help, version };
}
