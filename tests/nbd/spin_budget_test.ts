import assert from "node:assert/strict";
import { SPIN_MAX_US, SPIN_MIN_US, SpinBudget } from "../../src/nbd/worker/spin_budget.ts";

Deno.test("spin budget: failed spins halve it down to nothing; an idle connection stops spinning", () => {
  const budget = new SpinBudget();
  assert.equal(budget.us, SPIN_MAX_US);
  const seen = [budget.us];
  while (budget.us > 0) {
    budget.spun(false);
    seen.push(budget.us);
    assert.ok(seen.length < 10, "the budget reaches 0");
  }
  assert.deepEqual(seen, [50, 25, 12.5, 6.25, 0]);
  budget.slept(1_000_000);
  assert.equal(budget.us, 0, "a long sleep says spinning would not have paid");
});

Deno.test("spin budget: a short sleep starts it again, and caught spins double it to the bound", () => {
  const budget = new SpinBudget();
  for (let i = 0; i < 5; i++) budget.spun(false);
  assert.equal(budget.us, 0);
  budget.slept(SPIN_MAX_US - 1);
  assert.equal(budget.us, SPIN_MIN_US);
  budget.spun(true);
  assert.equal(budget.us, 2 * SPIN_MIN_US);
  for (let i = 0; i < 5; i++) budget.spun(true);
  assert.equal(budget.us, SPIN_MAX_US);
  budget.slept(1);
  assert.equal(budget.us, SPIN_MAX_US, "a short sleep never lowers it");
});
