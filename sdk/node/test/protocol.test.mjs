// The exchange a worker has with a healthy program: the hello, enumerate and
// process answers, many requests at once, long and split lines, and the exit
// when stdin closes.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Program, processRequest, enumerateRequest } from "../test-support/harness.mjs";

const packageVersion = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")).version;

function startProgram(t, name = "handlers.mjs") {
  const program = new Program(name);
  t.after(() => program.kill());
  return program;
}

test("the hello is the first line and lists every handler with a full version", async (t) => {
  const program = startProgram(t);
  const hello = await program.hello();
  assert.equal(hello.op, "hello");
  assert.equal(hello.protocol, 1);
  assert.equal(hello.program, `distribot-node ${packageVersion}`);
  const versions = Object.fromEntries(hello.handlers.map(({ name, version }) => [name, version]));
  assert.equal(versions.Squarer, "2.1.0");
  assert.equal(versions.SyncSquarer, "1.0.0", "MAJOR.MINOR is sent as MAJOR.MINOR.0");
  assert.equal(versions.Defaults, "0.0.0");
  assert.equal(hello.handlers.length, new Set(Object.keys(versions)).size);
});

test("enumerate and process answer with jobs and outputs, from async and sync handlers", async (t) => {
  const program = startProgram(t);
  await program.hello();
  program.send(enumerateRequest(1, "Squarer", { n: 3 }, { version: "2.1.0" }));
  program.send(enumerateRequest(2, "SyncSquarer", { n: 2 }, { version: "1.0.0" }));
  program.send(processRequest(3, "Squarer", 7, { version: "2.1.0" }));
  program.send(processRequest(4, "SyncSquarer", 5));
  assert.deepEqual(await program.answer(1), { id: 1, jobs: [0, 1, 2] });
  assert.deepEqual(await program.answer(2), { id: 2, jobs: [0, 1] });
  assert.deepEqual(await program.answer(3), { id: 3, output: 49 });
  assert.deepEqual(await program.answer(4), { id: 4, output: 25 });
});

test("a handler without enumerate has one null job, and one without process succeeds with no output", async (t) => {
  const program = startProgram(t);
  await program.hello();
  program.send(enumerateRequest(1, "Defaults"));
  program.send(processRequest(2, "Defaults", null));
  assert.deepEqual(await program.answer(1), { id: 1, jobs: [null] });
  assert.deepEqual(await program.answer(2), { id: 2 });
});

test("a process that returns undefined answers with no output, null is an output", async (t) => {
  const program = startProgram(t);
  await program.hello();
  program.send(processRequest(1, "Unencodable", "anything else"));
  program.send(processRequest(2, "Echo", undefined));
  assert.deepEqual(await program.answer(1), { id: 1, output: null });
  assert.deepEqual(await program.answer(2), { id: 2 });
});

test("enumerate and process written as methods see their handler object as this", async (t) => {
  const program = startProgram(t);
  await program.hello();
  program.send(enumerateRequest(1, "Method"));
  program.send(processRequest(2, "Method", "world"));
  assert.deepEqual(await program.answer(1), { id: 1, jobs: ["hello"] });
  assert.deepEqual(await program.answer(2), { id: 2, output: "hello world" });
});

test("the context carries the request's fields under JavaScript names", async (t) => {
  const program = startProgram(t);
  await program.hello();
  const error = { phase: "p0", handler: "H", job_id: null, attempts: 1, message: "broke" };
  program.send(enumerateRequest(1, "ContextEcho", { q: 1 }, { version: "0.0.0", outputs: { p0: { H: [1] } }, error }));
  program.send(processRequest(2, "ContextEcho", { page: 3 }, { version: "0.0.0", attempt: 2, data: { q: 1 } }));
  const [listed] = (await program.answer(1)).jobs;
  assert.deepEqual(listed, {
    flowId: "f1",
    workflow: "tests",
    phase: "testing",
    handler: "ContextEcho",
    version: "0.0.0",
    data: { q: 1 },
    outputs: { p0: { H: [1] } },
    error,
  });
  assert.deepEqual((await program.answer(2)).output, {
    flowId: "f1",
    workflow: "tests",
    phase: "testing",
    handler: "ContextEcho",
    version: "0.0.0",
    data: { q: 1 },
    jobId: "f1.1.0.2",
    attempt: 2,
    job: { page: 3 },
  });
});

test("64 outstanding requests are answered out of order, each exactly once", async (t) => {
  const program = startProgram(t);
  await program.hello();
  const ids = [];
  for (let index = 0; index < 64; index++) {
    const id = 100 + index;
    ids.push(id);
    // Later requests wait less, and every fourth one is synchronous.
    if (index % 4 === 3) program.send(processRequest(id, "SyncSquarer", index));
    else program.send(processRequest(id, "Delayed", { delayMs: 64 - index, value: index }));
  }
  for (const [index, id] of ids.entries()) {
    const answer = await program.answer(id);
    assert.equal(answer.output, index % 4 === 3 ? index * index : index);
  }
  assert.equal(program.answerOrder.length, 64);
  assert.deepEqual([...program.answerOrder].sort((a, b) => a - b), ids);
  assert.notDeepEqual(program.answerOrder, ids, "answers should not come in request order");
  assert.deepEqual(program.duplicateAnswers, []);
  const exit = await program.closeAndWait();
  assert.equal(exit.code, 0);
  assert.equal(program.stdout.unread.length, 0, "no answer beyond the 64");
});

test("requests split across writes and very long lines are read whole", async (t) => {
  const program = startProgram(t);
  await program.hello();
  const line = JSON.stringify(processRequest(1, "Echo", { text: "héllo → 世界 🙂" })) + "\n";
  const bytes = Buffer.from(line);
  // Split inside multi-byte characters too, and send one byte at a time for a stretch.
  const cuts = [5, 30, bytes.indexOf(Buffer.from("世")) + 1, bytes.indexOf(Buffer.from("🙂")) + 2];
  let start = 0;
  for (const cut of cuts) {
    await program.sendRaw(bytes.subarray(start, cut));
    start = cut;
  }
  for (; start < bytes.length; start++) await program.sendRaw(bytes.subarray(start, start + 1));
  assert.deepEqual((await program.answer(1)).output, { text: "héllo → 世界 🙂" });

  const long = "x".repeat(8 * 1024 * 1024);
  await program.sendRaw(JSON.stringify(processRequest(2, "Echo", long)) + "\n" + JSON.stringify(processRequest(3, "Echo", "short")) + "\n");
  assert.equal((await program.answer(2)).output, long);
  assert.equal((await program.answer(3)).output, "short");
});

test("when stdin closes the program finishes its outstanding work and exits 0", async (t) => {
  const program = startProgram(t);
  await program.hello();
  program.send(processRequest(1, "Delayed", { delayMs: 200, value: "done" }));
  program.child.stdin.end();
  assert.deepEqual(await program.answer(1), { id: 1, output: "done" });
  const exit = await program.waitForExit();
  assert.deepEqual(exit, { code: 0, signal: null });
});

test("a program with nothing outstanding exits 0 as soon as stdin closes", async (t) => {
  const program = startProgram(t);
  await program.hello();
  const exit = await program.closeAndWait();
  assert.deepEqual(exit, { code: 0, signal: null });
});
