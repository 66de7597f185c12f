// Plays the worker's side of the program protocol in tests: starts a real
// program process and speaks to it over its pipes, waiting on reads with
// timeouts instead of sleeping. It lives outside test/ because Node 20's test
// runner would run every module under test/ as a test file.

import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const WAIT_MS = 10_000;

export function programPath(name) {
  return fileURLToPath(new URL(`./programs/${name}`, import.meta.url));
}

// Splits a stream into lines and hands them out one by one, in order.
class LineReader {
  constructor(stream) {
    this.all = [];
    this.unread = [];
    this.waiters = [];
    this.ended = false;
    // Pieces of a line not yet ended; joined once, so long lines stay cheap.
    let partial = [];
    stream.setEncoding("utf8");
    stream.on("data", (chunk) => {
      const lines = chunk.split("\n");
      if (lines.length === 1) return partial.push(chunk);
      partial.push(lines[0]);
      lines[0] = partial.join("");
      partial = [lines.pop()];
      for (const line of lines) this.#push(line);
    });
    stream.on("end", () => {
      if (partial.join("") !== "") this.#push(partial.join(""));
      this.ended = true;
      for (const waiter of this.waiters.splice(0)) waiter();
    });
  }

  #push(line) {
    this.all.push(line);
    this.unread.push(line);
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  async next(what, timeoutMs = WAIT_MS) {
    const deadline = Date.now() + timeoutMs;
    while (this.unread.length === 0) {
      if (this.ended) throw new Error(`the stream ended while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.unread.shift();
  }
}

export class Program {
  constructor(name, env = {}) {
    this.child = spawn(process.execPath, [programPath(name)], {
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, ...env },
    });
    this.stdout = new LineReader(this.child.stdout);
    this.stderr = new LineReader(this.child.stderr);
    this.answers = new Map();
    this.answerOrder = [];
    this.duplicateAnswers = [];
    this.exited = new Promise((resolve) => this.child.on("exit", (code, signal) => resolve({ code, signal })));
    // A program that died must fail the test, not crash the test runner.
    this.child.stdin.on("error", () => {});
  }

  send(message) {
    this.child.stdin.write(JSON.stringify(message) + "\n");
  }

  sendRaw(text) {
    return new Promise((resolve) => this.child.stdin.write(text, resolve));
  }

  async hello() {
    return JSON.parse(await this.stdout.next("the hello"));
  }

  // Reads answers until the one for `id` has come; answers to other ids read
  // meanwhile are kept for their own turn.
  async answer(id, timeoutMs = WAIT_MS) {
    while (!this.answers.has(id)) {
      const line = await this.stdout.next(`the answer to request ${id}`, timeoutMs);
      const message = JSON.parse(line);
      if (this.answers.has(message.id)) this.duplicateAnswers.push(message.id);
      this.answers.set(message.id, message);
      this.answerOrder.push(message.id);
    }
    return this.answers.get(id);
  }

  // Reads stderr until a line satisfies `matches`; log lines come parsed.
  async stderrLine(what, matches, timeoutMs = WAIT_MS) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = await this.stderr.next(what, Math.max(1, deadline - Date.now()));
      let parsed = line;
      try {
        parsed = JSON.parse(line);
      } catch {}
      if (matches(parsed)) return parsed;
    }
  }

  async closeAndWait(timeoutMs = WAIT_MS) {
    this.child.stdin.end();
    return this.waitForExit(timeoutMs);
  }

  async waitForExit(timeoutMs = WAIT_MS) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the program did not exit within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const exit = await Promise.race([this.exited, timeout]);
      // Everything the program wrote is read once both pipes have ended.
      await Promise.all([this.#ended(this.stdout), this.#ended(this.stderr)]);
      return exit;
    } finally {
      clearTimeout(timer);
    }
  }

  async #ended(reader) {
    while (!reader.ended) await new Promise((resolve) => reader.waiters.push(resolve));
  }

  kill() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
  }
}

// The fields every request of the doc's examples carries.
export function processRequest(id, handler, job, extra = {}) {
  return {
    id,
    op: "process",
    handler,
    flow_id: "f1",
    workflow: "tests",
    phase: "testing",
    job_id: `f1.1.0.${id}`,
    attempt: 1,
    job,
    data: {},
    ...extra,
  };
}

export function enumerateRequest(id, handler, data = {}, extra = {}) {
  return { id, op: "enumerate", handler, flow_id: "f1", workflow: "tests", phase: "testing", data, outputs: {}, error: null, ...extra };
}
