// Mistakes in declaring handlers are reported when the program starts, with a
// message that says what to fix, before the worker sees a hello.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Program } from "../test-support/harness.mjs";
import { handler } from "../index.js";

test("registering one name twice stops the program before its hello", async (t) => {
  const program = new Program("duplicate.mjs");
  t.after(() => program.kill());
  const exit = await program.waitForExit();
  assert.notEqual(exit.code, 0);
  assert.deepEqual(program.stdout.all, [], "no hello");
  assert.match(program.stderr.all.join("\n"), /handler Twice is registered twice/);
});

test("versions must be MAJOR.MINOR.PATCH or MAJOR.MINOR", () => {
  for (const version of ["1", "1.2.3.4", "v1.2.3", "1.02.3", "1.2.x", "", 1.2]) {
    assert.throws(() => handler({ name: `Bad ${version}`, version }), /must be MAJOR\.MINOR\.PATCH \(or MAJOR\.MINOR\)/, String(version));
  }
  handler({ name: "Short", version: "1.2" });
  handler({ name: "Full", version: "10.0.3" });
  handler({ name: "Unversioned" });
});

test("a handler needs a name, and enumerate and process must be functions", () => {
  assert.throws(() => handler({ version: "1.0.0" }), /needs a non-empty string name/);
  assert.throws(() => handler({ name: "" }), /needs a non-empty string name/);
  assert.throws(() => handler({ name: "NotAFunction", process: 42 }), /process of handler NotAFunction must be a function/);
  assert.throws(() => handler("Squarer"), /handler\(\) takes an object/);
});
