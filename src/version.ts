/**
 * The service's version, read from deno.json so there is one place to bump.
 *
 * @module
 */

import config from "../deno.json" with { type: "json" };

/** The service version (semver). */
export const SERVICE_VERSION: string = config.version;

/** The license (SPDX identifier), as deno.json declares it for the package. */
export const SERVICE_LICENSE: string = config.license;
