/**
 * Keeps the lab cache from growing without bound: each built base disk or image is a gigabyte,
 * and a new one replaces the previous build for the same kernel package. Unfinished builds of
 * other processes that are still alive are left alone.
 *
 * @module
 */

function processAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Removes the entries of `dir` built for `kernelPackage` (named `<kernelPackage>-<key>`, or
 * `<kernelPackage>-<key>.partial-<pid>` while building) other than the one named `keep`, except
 * builds still running in another process. Returns the names removed.
 */
export async function pruneBuilds(
  dir: string,
  options: { kernelPackage: string; keep: string },
): Promise<string[]> {
  const { kernelPackage, keep } = options;
  const removed: string[] = [];
  const pattern = new RegExp(
    `^${kernelPackage.replace(/[.+]/g, "\\$&")}-[0-9a-f]{16}(?:\\.partial-(\\d+))?$`,
  );
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return removed;
    throw error;
  }
  for (const entry of entries) {
    const match = pattern.exec(entry.name);
    if (match === null || entry.name === keep) continue;
    const pid = match[1] === undefined ? undefined : Number(match[1]);
    if (pid !== undefined && pid !== Deno.pid && processAlive(pid)) continue;
    await Deno.remove(`${dir}/${entry.name}`, { recursive: true });
    removed.push(entry.name);
  }
  return removed.sort();
}

async function runStillUp(runDir: string): Promise<boolean> {
  try {
    const pid = Number((await Deno.readTextFile(`${runDir}/qemu.pid`)).trim());
    return Number.isInteger(pid) && pid > 0 && processAlive(pid);
  } catch {
    return false;
  }
}

/**
 * Removes all but the newest `keepCount` run folders of `runsDir` (names sort by time), except
 * those whose VM is still up (--keep).
 */
export async function pruneRuns(runsDir: string, keepCount: number): Promise<string[]> {
  let names: string[];
  try {
    names = (await Array.fromAsync(Deno.readDir(runsDir)))
      .filter((entry) => entry.isDirectory)
      .map((entry) => entry.name)
      .sort();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
  const removed: string[] = [];
  for (const name of names.slice(0, Math.max(0, names.length - keepCount))) {
    if (await runStillUp(`${runsDir}/${name}`)) continue;
    await Deno.remove(`${runsDir}/${name}`, { recursive: true });
    removed.push(name);
  }
  return removed;
}
