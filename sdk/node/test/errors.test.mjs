// Everything that can go wrong in a request, and what the worker is told:
// thrown errors and their retryable flag, outputs that JSON cannot carry,
// enumerate results that are not lists, and requests the program cannot
// serve. None of them may stop the program serving the next request.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Program, processRequest, enumerateRequest } from "../test-support/harness.mjs";

async function startProgram(t) {
  const program = new Program("handlers.mjs");
  t.after(() => program.kill());
  await program.hello();
  return program;
}

// The program still works: the failure before this did not take it down.
async function assertStillServing(program, id) {
  program.send(processRequest(id, "SyncSquarer", 3));
  assert.deepEqual(await program.answer(id), { id, output: 9 });
}

test("Retry, Fail and other thrown values become errors with the right retryable flag", async (t) => {
  const program = await startProgram(t);
  const cases = [
    ["retry", "the page server answered 503", true],
    ["fail", "the page does not exist", false],
    ["type-error", "TypeError: Cannot read properties of null (reading 'field')", true],
    ["string", "a plain string", true],
    ["async-fail", "rejected for good", false],
    ["async-error", "RangeError: out of range", true],
  ];
  for (const [index, [job]] of cases.entries()) program.send(processRequest(index + 1, "Failing", job));
  for (const [index, [job, message, retryable]] of cases.entries()) {
    assert.deepEqual(await program.answer(index + 1), { id: index + 1, error: { message, retryable } }, job);
  }
  await assertStillServing(program, 99);
});

test("an unexpected error's stack is logged under its request", async (t) => {
  const program = await startProgram(t);
  program.send(processRequest(7, "Failing", "type-error"));
  await program.answer(7);
  const log = await program.stderrLine("the stack of request 7", (line) => line.id === 7);
  assert.match(log.log, /^TypeError: Cannot read properties of null/);
  assert.match(log.log, /\n\s+at /, "the log holds the stack");
});

test("an output JSON cannot encode is an error that retrying cannot fix", async (t) => {
  const program = await startProgram(t);
  program.send(processRequest(1, "Unencodable", "bigint"));
  program.send(processRequest(2, "Unencodable", "cycle"));
  program.send(processRequest(3, "Unencodable", "function"));
  for (const id of [1, 2, 3]) {
    const { error } = await program.answer(id);
    assert.equal(error.retryable, false);
    assert.match(error.message, /^the output cannot be encoded as JSON: /);
  }
  assert.match((await program.answer(1)).error.message, /BigInt/);
  assert.match((await program.answer(2)).error.message, /circular/);
  assert.match((await program.answer(3)).error.message, /a function/);
  await assertStillServing(program, 4);
});

test("an output too long for one protocol line fails its own request, not the program", async (t) => {
  const program = await startProgram(t);
  program.send(processRequest(1, "Echo", "a".repeat(16 * 1024 * 1024)));
  const { error } = await program.answer(1);
  assert.equal(error.retryable, false);
  assert.match(error.message, /^the output would make an answer line of \d+ bytes, more than the protocol's limit of 16 MiB$/);
  await assertStillServing(program, 2);
});

test("enumerate must give a list: arrays and iterables pass, anything else names its type", async (t) => {
  const program = await startProgram(t);
  program.send(enumerateRequest(1, "Listing", { kind: "number" }));
  program.send(enumerateRequest(2, "Listing", { kind: "string" }));
  program.send(enumerateRequest(3, "Listing", { kind: "nothing" }));
  program.send(enumerateRequest(4, "Listing", { kind: "generator" }));
  program.send(enumerateRequest(5, "Listing", { kind: "async-generator" }));
  program.send(enumerateRequest(6, "Listing", { kind: "set" }));
  const wrongType = (type) => ({ message: `enumerate must return an array (or iterable) of jobs, not ${type}`, retryable: false });
  assert.deepEqual((await program.answer(1)).error, wrongType("a number"));
  assert.deepEqual((await program.answer(2)).error, wrongType("a string"));
  assert.deepEqual((await program.answer(3)).error, wrongType("undefined"));
  assert.deepEqual((await program.answer(4)).jobs, ["a", "b"]);
  assert.deepEqual((await program.answer(5)).jobs, ["x", "y"]);
  assert.deepEqual((await program.answer(6)).jobs, [1, 2]);
});

test("a request for a handler this program does not host is answered with an error", async (t) => {
  const program = await startProgram(t);
  program.send(processRequest(1, "Nobody", 1));
  program.send(enumerateRequest(2, "Nobody"));
  const first = await program.answer(1);
  assert.equal(first.error.retryable, false);
  assert.match(first.error.message, /hosts no handler "Nobody" \(it hosts Squarer, /);
  assert.match((await program.answer(2)).error.message, /hosts no handler "Nobody"/);
  await assertStillServing(program, 4);
});

test("malformed lines are answered when they carry an id and can be served, and logged otherwise", async (t) => {
  const program = await startProgram(t);
  await program.sendRaw("this is not json\n");
  await program.stderrLine("the complaint about the line", (line) => typeof line === "string" && line.includes("not JSON") && line.includes("this is not json"));
  await program.sendRaw("[1, 2, 3]\n");
  await program.stderrLine("the complaint about the array", (line) => typeof line === "string" && line.includes("not a JSON object"));
  await program.sendRaw('{"op": "process", "handler": "Echo"}\n');
  await program.stderrLine("the complaint about the missing id", (line) => typeof line === "string" && line.includes("without an integer id"));
  await program.sendRaw('\n{"id": 5, "op": "dance"}\n');
  await program.stderrLine("the unknown op, logged rather than answered", (line) => typeof line === "string" && line.includes('unknown op "dance"'));
  await assertStillServing(program, 6);
  assert.deepEqual(program.answerOrder, [6], "an unknown op is not answered: it may name an outstanding request");
});

test("an unhandled rejection or a throw from a timer does not take the program down", async (t) => {
  const program = await startProgram(t);
  program.send(processRequest(1, "Careless", "unhandled-rejection"));
  assert.deepEqual(await program.answer(1), { id: 1, output: "still answered" });
  await program.stderrLine("the rejection's log", (line) => typeof line === "object" && /unhandled rejection: Error: nobody awaited this/.test(line.log));
  program.send(processRequest(2, "Careless", "timer"));
  assert.deepEqual(await program.answer(2), { id: 2, error: { message: "Error: thrown from a timer", retryable: true } });
  await assertStillServing(program, 3);
});
