// The program side of distribot's long-lived handler protocol (version 1,
// docs/command-protocol.md): a worker starts this program once, and it serves
// many enumerate and process requests over stdin and stdout, so handler code
// in JavaScript pays for starting Node once instead of once per job.

import { AsyncLocalStorage } from "node:async_hooks";
import { createRequire } from "node:module";
import { format, inspect } from "node:util";

const PROTOCOL = 1;
const PROGRAM = `distribot-node ${createRequire(import.meta.url)("./package.json").version}`;
// The worker refuses a line longer than 16 MiB and restarts the program, which
// would fail every outstanding request; an oversized answer fails only its own.
const LINE_LIMIT = 16 * 1024 * 1024;
// A log message that big helps nobody and would hit the same limit on stderr.
const LOG_LIMIT = 1024 * 1024;
// The worker sends SIGTERM 5 s after closing stdin; past this, stop waiting.
const SHUTDOWN_WAIT_MS = 5000;
const VERSION_PATTERN = /^(0|[1-9]\d*)\.(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?$/;
// A symbol from the global registry, so that Retry and Fail from a second copy
// of this package (one imported by path, one installed) are still recognised.
const RETRYABLE = Symbol.for("distribot.retryable");

const handlers = new Map();
let running = false;

/** Thrown by handler code: this attempt failed, another one may succeed. */
export class Retry extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = "Retry";
  }
  get [RETRYABLE]() {
    return true;
  }
}

/** Thrown by handler code: fail the phase now, retrying cannot help. */
export class Fail extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = "Fail";
  }
  get [RETRYABLE]() {
    return false;
  }
}

export function handler(spec) {
  if (running) throw new Error("distribot: handler() was called after run(); register every handler first");
  if (spec === null || typeof spec !== "object") throw new TypeError("distribot: handler() takes an object: { name, version, enumerate, process }");
  const { name, version = "0.0.0", enumerate, process: processJob } = spec;
  if (typeof name !== "string" || name === "") throw new TypeError("distribot: a handler needs a non-empty string name");
  const versionParts = typeof version === "string" ? VERSION_PATTERN.exec(version) : null;
  if (versionParts === null) {
    throw new TypeError(`distribot: handler ${name} has version ${JSON.stringify(version)}; it must be MAJOR.MINOR.PATCH (or MAJOR.MINOR), like "1.2.0"`);
  }
  for (const [field, value] of [["enumerate", enumerate], ["process", processJob]]) {
    if (value !== undefined && typeof value !== "function") throw new TypeError(`distribot: ${field} of handler ${name} must be a function`);
  }
  if (handlers.has(name)) throw new Error(`distribot: handler ${name} is registered twice; a program hosts each handler once`);
  // The worker reads 1.2 as 1.2.0 and echoes the full form in its requests.
  const fullVersion = `${versionParts[1]}.${versionParts[2]}.${versionParts[3] ?? "0"}`;
  // Bound, so that methods written with `this` see the object they came in.
  handlers.set(name, { name, version: fullVersion, enumerate: enumerate?.bind(spec), process: processJob?.bind(spec) });
}

// What the SDK tracks for one request; it is also the AsyncLocalStorage store,
// which is how console output inside handler code finds its request id.
class Request {
  constructor(id) {
    this.id = id;
    this.canceled = false;
    // Created on first use: most handlers never look at ctx.signal.
    this.abortController = null;
  }
  signal() {
    return (this.abortController ??= new AbortController()).signal;
  }
  cancel(reason) {
    this.canceled = true;
    const why = typeof reason === "string" ? reason : "canceled";
    const controller = (this.abortController ??= new AbortController());
    // Abort listeners run in the context of whoever aborts: abort inside the
    // request's own, so that what they print is logged under the request.
    storage.run(this, () => controller.abort(new DOMException(`the worker canceled this request (${why})`, "AbortError")));
  }
}

class Context {
  #request;
  constructor(request, message) {
    this.#request = request;
    this.flowId = message.flow_id;
    this.workflow = message.workflow;
    this.phase = message.phase;
    this.handler = message.handler;
    this.version = message.version;
    // The W3C trace context of this call while the worker traces.
    this.traceparent = message.traceparent ?? null;
  }
  get signal() {
    return this.#request.signal();
  }
  log(...parts) {
    writeRequestLog(this.#request.id, format(...parts));
  }
}

class EnumerateContext extends Context {
  constructor(request, message) {
    super(request, message);
    this.data = message.data;
    this.outputs = message.outputs;
    this.error = message.error ?? null;
  }
}

class ProcessContext extends Context {
  constructor(request, message) {
    super(request, message);
    this.jobId = message.job_id;
    this.attempt = message.attempt;
    this.data = message.data;
  }
}

const storage = new AsyncLocalStorage();
const inFlight = new Map();
let writeToStdout;
let pendingAnswers = "";
let flushScheduled = false;
let stdinEnded = false;
let exiting = false;

export function run() {
  if (running) throw new Error("distribot: run() was called twice");
  if (handlers.size === 0) throw new Error("distribot: no handlers registered; call handler({ name, ... }) before run()");
  running = true;
  claimStdout();
  installErrorNets();
  const hello = {
    op: "hello",
    protocol: PROTOCOL,
    handlers: [...handlers.values()].map(({ name, version }) => ({ name, version })),
    program: PROGRAM,
  };
  writeToStdout(JSON.stringify(hello) + "\n");
  readRequests();
}

// stdout carries the protocol and nothing else: everything that would print
// there (console methods, direct writes, pipes into process.stdout) goes to
// stderr instead, as a log line of the request it ran under.
function claimStdout() {
  const stdout = process.stdout;
  const originalWrite = stdout.write;
  writeToStdout = (text, callback) => originalWrite.call(stdout, text, callback);
  stdout.write = (chunk, encoding, callback) => {
    writeLog(typeof chunk === "string" ? chunk : Buffer.from(chunk).toString(typeof encoding === "string" ? encoding : "utf8"));
    const done = typeof encoding === "function" ? encoding : callback;
    if (typeof done === "function") queueMicrotask(done);
    return true;
  };
  for (const method of ["log", "info", "debug", "warn", "error"]) {
    console[method] = (...parts) => writeLog(format(...parts));
  }
  // The worker went away: nobody is left to read answers or logs.
  stdout.on("error", (error) => {
    if (error.code === "EPIPE") process.exit(0);
    process.stderr.write(`distribot: cannot write to stdout: ${error.message}\n`);
    process.exit(1);
  });
  process.stderr.on("error", () => {});
}

function writeLog(text) {
  const request = storage.getStore();
  if (request !== undefined) {
    writeRequestLog(request.id, text.endsWith("\n") ? text.slice(0, -1) : text);
  } else {
    process.stderr.write(text.endsWith("\n") ? text : text + "\n");
  }
}

function writeRequestLog(id, text) {
  if (text.length > LOG_LIMIT) text = `${text.slice(0, LOG_LIMIT)}… (${text.length - LOG_LIMIT} more characters)`;
  process.stderr.write('{"id":' + id + ',"log":' + JSON.stringify(text) + "}\n");
}

function installErrorNets() {
  // One handler's forgotten promise must not take down the requests of all.
  process.on("unhandledRejection", (reason) => {
    writeLog(`unhandled rejection: ${describeWithStack(reason)}`);
  });
  // A throw from a timer or callback that handler code started still runs in
  // its request's context: fail that request and keep serving the others.
  process.on("uncaughtException", (error) => {
    const request = storage.getStore();
    if (request === undefined) {
      process.stderr.write(`distribot: uncaught exception outside any request: ${describeWithStack(error)}\n`);
      process.exit(1);
    }
    if (inFlight.has(request.id)) fail(request, error);
    else writeRequestLog(request.id, `uncaught exception after the request was answered: ${describeWithStack(error)}`);
  });
}

// A manual splitter on string chunks: readline costs more per line, and
// joining the pieces of a long line only once keeps 16 MiB lines linear.
function readRequests() {
  const stdin = process.stdin;
  stdin.setEncoding("utf8");
  let pieces = [];
  stdin.on("data", (chunk) => {
    let start = 0;
    let newline = chunk.indexOf("\n");
    if (newline === -1) {
      pieces.push(chunk);
      return;
    }
    if (pieces.length > 0) {
      pieces.push(chunk.slice(0, newline));
      const line = pieces.join("");
      pieces = [];
      handleLine(line);
      start = newline + 1;
      newline = chunk.indexOf("\n", start);
    }
    while (newline !== -1) {
      handleLine(chunk.slice(start, newline));
      start = newline + 1;
      newline = chunk.indexOf("\n", start);
    }
    if (start < chunk.length) pieces.push(chunk.slice(start));
  });
  const onEnd = () => {
    if (stdinEnded) return;
    if (pieces.length > 0) handleLine(pieces.join(""));
    pieces = [];
    stdinEnded = true;
    setTimeout(() => {
      process.stderr.write(`distribot: stdin closed ${SHUTDOWN_WAIT_MS / 1000} s ago and ${inFlight.size} request(s) are still running; exiting\n`);
      exitAfterFlushing();
    }, SHUTDOWN_WAIT_MS);
    exitIfIdle();
  };
  stdin.on("end", onEnd);
  stdin.on("error", onEnd);
}

function handleLine(line) {
  let message;
  try {
    message = JSON.parse(line);
  } catch (error) {
    if (line.trim() !== "") process.stderr.write(`distribot: ignored a request line that is not JSON (${error.message}): ${preview(line)}\n`);
    return;
  }
  if (message === null || typeof message !== "object" || Array.isArray(message)) {
    process.stderr.write(`distribot: ignored a request line that is not a JSON object: ${preview(line)}\n`);
    return;
  }
  const id = message.id;
  if (!Number.isSafeInteger(id)) {
    process.stderr.write(`distribot: ignored a request without an integer id: ${preview(line)}\n`);
    return;
  }
  switch (message.op) {
    case "process":
      return startProcess(id, message);
    case "enumerate":
      return startEnumerate(id, message);
    case "cancel":
      // Canceling a request that is already answered is normal: the two crossed.
      inFlight.get(id)?.cancel(message.reason);
      return;
    default:
      // A later protocol may add operations that name an outstanding
      // request, as cancel does: answering one would answer that request.
      process.stderr.write(`distribot: ignored a request with an unknown op ${JSON.stringify(message.op)} (this program speaks protocol ${PROTOCOL}: enumerate, process, cancel)\n`);
  }
}

// By name alone: a program hosts each handler once, and the worker routes a
// request here only for the version this program's hello announced.
function findHandler(id, message) {
  const entry = handlers.get(message.handler);
  if (entry === undefined) {
    const hosted = [...handlers.keys()].join(", ");
    queueAnswer(errorLine(id, `this program hosts no handler ${JSON.stringify(message.handler)} (it hosts ${hosted})`, false));
    return undefined;
  }
  return entry;
}

// The hot path: a synchronous handler is called and answered without
// allocating a promise.
function startProcess(id, message) {
  const entry = findHandler(id, message);
  if (entry === undefined) return;
  const request = new Request(id);
  inFlight.set(id, request);
  if (entry.process === undefined) return answer(request, '{"id":' + id + "}\n");
  const context = new ProcessContext(request, message);
  let result;
  try {
    result = storage.run(request, entry.process, context, message.job);
  } catch (error) {
    return fail(request, error);
  }
  if (result !== null && (typeof result === "object" || typeof result === "function") && typeof result.then === "function") {
    const succeed = (output) => answerOutput(request, output);
    const failWith = (error) => fail(request, error);
    if (result instanceof Promise) result.then(succeed, failWith);
    else Promise.resolve(result).then(succeed, failWith);
  } else {
    answerOutput(request, result);
  }
}

function answerOutput(request, output) {
  const id = request.id;
  if (output === undefined) return answer(request, '{"id":' + id + "}\n");
  let json;
  try {
    json = JSON.stringify(output);
  } catch (error) {
    return answer(request, errorLine(id, `the output cannot be encoded as JSON: ${error.message}`, false));
  }
  if (json === undefined) {
    return answer(request, errorLine(id, `the output cannot be encoded as JSON: process returned ${describeType(output)}`, false));
  }
  answerWithinLimit(request, '{"id":' + id + ',"output":' + json + "}\n", "output");
}

function startEnumerate(id, message) {
  const entry = findHandler(id, message);
  if (entry === undefined) return;
  const request = new Request(id);
  inFlight.set(id, request);
  const context = new EnumerateContext(request, message);
  storage.run(request, listJobs, entry, context).then(
    (jobs) => answerJobs(request, jobs),
    (error) => fail(request, error),
  );
}

// Runs inside the request's context, so that a generator's body logs under
// its request too.
async function listJobs(entry, context) {
  if (entry.enumerate === undefined) return [null];
  const result = await entry.enumerate(context);
  if (Array.isArray(result)) return result;
  if (result !== null && typeof result === "object") {
    if (typeof result[Symbol.iterator] === "function") return Array.from(result);
    if (typeof result[Symbol.asyncIterator] === "function") {
      const jobs = [];
      for await (const job of result) jobs.push(job);
      return jobs;
    }
  }
  throw new Fail(`enumerate must return an array (or iterable) of jobs, not ${describeType(result)}`);
}

function answerJobs(request, jobs) {
  let json;
  try {
    json = JSON.stringify(jobs);
  } catch (error) {
    return answer(request, errorLine(request.id, `the jobs cannot be encoded as JSON: ${error.message}`, false));
  }
  answerWithinLimit(request, '{"id":' + request.id + ',"jobs":' + json + "}\n", "jobs");
}

function answerWithinLimit(request, line, what) {
  // UTF-8 takes at most 3 bytes per UTF-16 unit: short lines skip the count.
  if (line.length * 3 > LINE_LIMIT) {
    const bytes = Buffer.byteLength(line);
    if (bytes > LINE_LIMIT) {
      return answer(request, errorLine(request.id, `the ${what} would make an answer line of ${bytes} bytes, more than the protocol's limit of 16 MiB`, false));
    }
  }
  answer(request, line);
}

function fail(request, error) {
  if (request.canceled) return answer(request, "");
  const retryable = error !== null && typeof error === "object" ? error[RETRYABLE] : undefined;
  if (typeof retryable === "boolean") return answer(request, errorLine(request.id, String(error.message ?? ""), retryable));
  if (error instanceof Error && error.stack) writeRequestLog(request.id, error.stack);
  answer(request, errorLine(request.id, describe(error), true));
}

function errorLine(id, message, retryable) {
  return '{"id":' + id + ',"error":' + JSON.stringify({ message, retryable }) + "}\n";
}

// Answers of one tick go out in one write (queueAnswer): a system call per
// answer would cost more than a no-op handler does.
function answer(request, line) {
  inFlight.delete(request.id);
  // The worker drops answers to canceled requests; not sending them at all
  // spares it from remembering which ids it canceled.
  if (!request.canceled && line !== "") queueAnswer(line);
  exitIfIdle();
}

function queueAnswer(line) {
  pendingAnswers += line;
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flushAnswers);
  }
}

function flushAnswers() {
  flushScheduled = false;
  if (pendingAnswers === "") return;
  const batch = pendingAnswers;
  pendingAnswers = "";
  writeToStdout(batch);
}

function exitIfIdle() {
  if (stdinEnded && inFlight.size === 0) exitAfterFlushing();
}

// Exits once stdout and stderr have handed everything to the kernel: a pipe
// the worker reads slowly may still hold answers in Node's buffers.
function exitAfterFlushing() {
  if (exiting) return;
  exiting = true;
  const batch = pendingAnswers;
  pendingAnswers = "";
  let streamsLeft = 2;
  const streamDone = () => {
    if (--streamsLeft === 0) process.exit(0);
  };
  writeToStdout(batch, streamDone);
  process.stderr.write("", streamDone);
}

function describe(error) {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  if (error !== null && typeof error === "object" && typeof error.message === "string") {
    return `${error.name ?? "Error"}: ${error.message}`;
  }
  return typeof error === "string" ? error : `thrown value: ${inspect(error, { depth: 2, breakLength: Infinity })}`;
}

function describeWithStack(error) {
  return error instanceof Error && error.stack ? error.stack : describe(error);
}

function describeType(value) {
  if (value === null) return "null";
  if (typeof value === "object") return `an object (${value.constructor?.name ?? "without prototype"})`;
  if (typeof value === "undefined") return "undefined";
  return `a ${typeof value}`;
}

function preview(line) {
  return line.length > 200 ? `${line.slice(0, 200)}… (${line.length} characters)` : line;
}
