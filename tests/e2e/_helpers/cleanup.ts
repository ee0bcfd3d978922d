/**
 * Cases set up a lot (a service, modules, NBD connections, mounts, snapshots) and must undo all
 * of it in reverse order, also after a failure. {@link withCleanup} gives a case an
 * AsyncDisposableStack and unwinds it at the end; unlike a bare `await using`, whose
 * SuppressedError prints as "An error was suppressed during disposal" and hides both errors, it
 * reports every error by message and stack: the case's own failure first, then each cleanup
 * step that failed.
 *
 * @module
 */

/** The errors inside `error`, unwrapping SuppressedError chains (outermost last). */
export function flattenErrors(error: unknown): unknown[] {
  if (error instanceof SuppressedError) {
    return [...flattenErrors(error.suppressed), ...flattenErrors(error.error)];
  }
  return [error];
}

function describe(error: unknown): string {
  return error instanceof Error
    ? (error.stack ?? `${error.name}: ${error.message}`)
    : String(error);
}

/**
 * Runs `fn` with a fresh stack, then disposes the stack. When `fn` failed, its error is thrown
 * (cleanup failures are printed after it); when only the cleanup failed, an error listing every
 * cleanup failure is thrown.
 */
export async function withCleanup<T>(fn: (stack: AsyncDisposableStack) => Promise<T>): Promise<T> {
  const stack = new AsyncDisposableStack();
  let result: T;
  try {
    result = await fn(stack);
  } catch (error) {
    try {
      await stack.disposeAsync();
    } catch (cleanupError) {
      const details = flattenErrors(cleanupError).map(describe).join("\n");
      console.error(`The cleanup after this failure failed too:\n${details}`);
    }
    throw error;
  }
  try {
    await stack.disposeAsync();
  } catch (cleanupError) {
    const errors = flattenErrors(cleanupError);
    throw new AggregateError(errors, `Cleanup failed in ${errors.length} step(s)`);
  }
  return result;
}
