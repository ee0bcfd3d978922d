/**
 * The typed HTTP client of the blksnap service.
 *
 * @module
 */

export * from "./client.ts";
export * from "./problem_error.ts";
