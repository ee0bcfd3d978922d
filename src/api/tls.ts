/**
 * TLS material for the API: a PEM certificate chain and its private key,
 * read from files at start and read again on SIGHUP (a renewed certificate
 * takes effect without a restart). Reading checks that both look like PEM,
 * so a wrong file is named at once instead of failing the first handshake.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";

/** Where the certificate chain and the key live. */
export interface TlsFiles {
  /** PEM certificate chain (leaf first). */
  certFile: string;
  /** PEM private key. */
  keyFile: string;
}

/** The material Deno.serve takes. */
export interface TlsMaterial {
  /** PEM certificate chain. */
  cert: string;
  /** PEM private key. */
  key: string;
}

async function readPem(path: string, what: string, label: RegExp): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new ServiceError(
      error instanceof Deno.errors.NotFound ? "NOT_FOUND" : "INVALID_ARGUMENT",
      `Cannot read the TLS ${what} ${path}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  if (!label.test(text)) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      `The TLS ${what} ${path} is not PEM (no "-----BEGIN …-----" line of a ${what})`,
    );
  }
  return text;
}

/** Reads and checks the PEM files. NOT_FOUND or INVALID_ARGUMENT naming the file at fault. */
export async function readTlsFiles(files: TlsFiles): Promise<TlsMaterial> {
  const [cert, key] = await Promise.all([
    readPem(files.certFile, "certificate", /-----BEGIN CERTIFICATE-----/),
    readPem(files.keyFile, "key", /-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----/),
  ]);
  return { cert, key };
}
