/**
 * The options of `serve` that concern operating it rather than the service
 * itself: the log (level and format), TLS for the API, and the API on a
 * Unix socket (`--listen unix:PATH`). Each also comes from a BLKSNAP_*
 * environment variable; flags win.
 *
 * @module
 */

import { isAbsolute } from "node:path";
import type { TlsFiles } from "../api/tls.ts";
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from "../log/logger.ts";
import { UsageError } from "./exit_codes.ts";
import type { CliIo, FlagSpec } from "./context.ts";

/** The flags, for serve's parser. */
export const operatorFlags: FlagSpec = {
  "log-level": { type: "string" },
  "log-format": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
};

/** Help text of the flags. */
export const OPERATOR_FLAGS_HELP =
  `  --listen unix:PATH      the HTTP API on a Unix socket instead (mode 0660; no token needed)
  --tls-cert FILE         PEM certificate chain: serve the API over HTTPS (env BLKSNAP_TLS_CERT);
                          with --tls-key; SIGHUP reads both files again
  --tls-key FILE          PEM private key (env BLKSNAP_TLS_KEY)
  --log-level LEVEL       debug | info | warn | error (env BLKSNAP_LOG_LEVEL, default info)
  --log-format FORMAT     text | json (env BLKSNAP_LOG_FORMAT, default text)
`;

/** The operator settings. */
export interface OperatorSettings {
  /** Log level and format. */
  log: { level: LogLevel; format: LogFormat };
  /** TLS files, when the API is served over HTTPS. */
  tls?: TlsFiles;
  /** The API's Unix socket path, when --listen is unix:PATH. */
  listenUnix?: string;
}

/** The Unix socket path of a `unix:PATH` listen address, or undefined for HOST:PORT. */
export function unixListenPath(text: string): string | undefined {
  if (!text.startsWith("unix:")) return undefined;
  const path = text.slice("unix:".length);
  if (!isAbsolute(path)) {
    throw new UsageError(`--listen unix:PATH needs an absolute path, got "${text}"`);
  }
  return path;
}

/** Reads the operator settings from parsed `values` and the environment. */
export function operatorSettings(
  values: Record<string, unknown>,
  listenText: string,
  io: CliIo,
): OperatorSettings {
  const level = (values["log-level"] as string | undefined) ?? io.env("BLKSNAP_LOG_LEVEL") ??
    "info";
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new UsageError(`--log-level must be ${LOG_LEVELS.join(", ")}, got "${level}"`);
  }
  const format = (values["log-format"] as string | undefined) ?? io.env("BLKSNAP_LOG_FORMAT") ??
    "text";
  if (!(LOG_FORMATS as readonly string[]).includes(format)) {
    throw new UsageError(`--log-format must be text or json, got "${format}"`);
  }
  const certFile = (values["tls-cert"] as string | undefined) ?? io.env("BLKSNAP_TLS_CERT");
  const keyFile = (values["tls-key"] as string | undefined) ?? io.env("BLKSNAP_TLS_KEY");
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new UsageError("--tls-cert and --tls-key go together: give both or neither");
  }
  const listenUnix = unixListenPath(listenText);
  if (listenUnix && certFile) {
    throw new UsageError("--tls-cert applies to a TCP --listen address, not to a Unix socket");
  }
  return {
    log: { level: level as LogLevel, format: format as LogFormat },
    ...(certFile && keyFile ? { tls: { certFile, keyFile } } : {}),
    ...(listenUnix ? { listenUnix } : {}),
  };
}
