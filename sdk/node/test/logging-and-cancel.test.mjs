// What handler code prints reaches the worker's log tagged with its request
// and never the protocol channel; a cancel from the worker reaches handler
// code through ctx.signal.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Program, processRequest } from "../test-support/harness.mjs";

async function startProgram(t) {
  const program = new Program("handlers.mjs");
  t.after(() => program.kill());
  await program.hello();
  return program;
}

test("console output inside a handler becomes stderr log lines with its request id, never stdout", async (t) => {
  const program = await startProgram(t);
  program.send(processRequest(11, "Logger", "first"));
  program.send(processRequest(12, "Logger", "second"));
  assert.deepEqual(await program.answer(11), { id: 11, output: "logged" });
  assert.deepEqual(await program.answer(12), { id: 12, output: "logged" });
  const exit = await program.closeAndWait();
  assert.equal(exit.code, 0);

  const logs = program.stderr.all.filter((line) => line.startsWith("{")).map((line) => JSON.parse(line));
  for (const [id, job] of [[11, "first"], [12, "second"]]) {
    const messages = logs.filter((log) => log.id === id).map((log) => log.log);
    assert.deepEqual(messages, [
      `console.log ${job}`,
      `console.error ${job}`,
      `ctx.log ${job}`,
      `console.info after await ${job}`,
      `console.warn { job: '${job}' }`,
      `process.stdout.write ${job}`,
    ]);
  }
  for (const line of program.stdout.all) {
    const message = JSON.parse(line);
    assert.ok(message.op === "hello" || Number.isInteger(message.id), `a protocol line on stdout: ${line}`);
    assert.doesNotMatch(line, /console|printed|process\.stdout/);
  }
});

test("console output outside any request goes to stderr as a plain line", async (t) => {
  const program = await startProgram(t);
  const line = await program.stderrLine("the top-level print", (line) => line === "printed outside any request");
  assert.equal(line, "printed outside any request");
  await program.closeAndWait();
  assert.ok(program.stdout.all.every((line) => !line.includes("printed")));
});

test("a cancel aborts ctx.signal, and the canceled request gets no answer", async (t) => {
  const program = await startProgram(t);
  program.send(processRequest(21, "Cancelable", null));
  program.send({ id: 21, op: "cancel", reason: "timeout" });
  const log = await program.stderrLine("the handler seeing the abort", (line) => line.id === 21);
  assert.equal(log.log, "aborted: AbortError: the worker canceled this request (timeout)");
  // A cancel for a request that is no longer outstanding is harmless.
  program.send({ id: 21, op: "cancel", reason: "shutdown" });
  program.send({ id: 999, op: "cancel", reason: "canceled" });
  program.send(processRequest(22, "SyncSquarer", 4));
  assert.deepEqual(await program.answer(22), { id: 22, output: 16 });
  const exit = await program.closeAndWait();
  assert.equal(exit.code, 0);
  assert.deepEqual(program.answerOrder, [22], "the canceled request was not answered");
});
