// The program most tests talk to: one handler per behaviour under test.

import { setTimeout as sleep } from "node:timers/promises";
import { handler, run, Retry, Fail } from "distribot";

const contextFields = (ctx) => ({
  flowId: ctx.flowId,
  workflow: ctx.workflow,
  phase: ctx.phase,
  handler: ctx.handler,
  version: ctx.version,
  data: ctx.data,
  outputs: ctx.outputs,
  error: ctx.error,
  jobId: ctx.jobId,
  attempt: ctx.attempt,
});

handler({
  name: "Squarer",
  version: "2.1.0",
  enumerate: async (ctx) => [...Array(ctx.data.n).keys()],
  process: async (ctx, job) => job * job,
});

handler({
  name: "SyncSquarer",
  version: "1.0",
  enumerate: (ctx) => [...Array(ctx.data.n).keys()],
  process: (ctx, job) => job * job,
});

handler({ name: "Defaults" });

handler({
  name: "ContextEcho",
  enumerate: (ctx) => [contextFields(ctx)],
  process: (ctx, job) => ({ ...contextFields(ctx), job }),
});

handler({ name: "Echo", process: (ctx, job) => job });

handler({
  name: "Method",
  greeting: "hello",
  enumerate() {
    return [this.greeting];
  },
  process(ctx, job) {
    return `${this.greeting} ${job}`;
  },
});

handler({
  name: "Delayed",
  process: async (ctx, job) => {
    await sleep(job.delayMs);
    return job.value;
  },
});

handler({
  name: "Failing",
  process: (ctx, job) => {
    switch (job) {
      case "retry":
        throw new Retry("the page server answered 503");
      case "fail":
        throw new Fail("the page does not exist");
      case "type-error":
        return null.field;
      case "string":
        throw "a plain string";
      case "async-fail":
        return Promise.reject(new Fail("rejected for good"));
      case "async-error":
        return (async () => {
          await null;
          throw new RangeError("out of range");
        })();
    }
  },
});

handler({
  name: "Unencodable",
  process: (ctx, job) => {
    if (job === "bigint") return 10n;
    if (job === "cycle") {
      const node = { name: "loop" };
      node.self = node;
      return node;
    }
    if (job === "function") return () => 1;
    return null;
  },
});

handler({
  name: "Listing",
  enumerate: (ctx) => {
    switch (ctx.data.kind) {
      case "number":
        return 42;
      case "string":
        return "abc";
      case "nothing":
        return undefined;
      case "generator":
        return (function* () {
          yield "a";
          yield "b";
        })();
      case "async-generator":
        return (async function* () {
          yield "x";
          await null;
          yield "y";
        })();
      case "set":
        return new Set([1, 2]);
    }
  },
});

handler({
  name: "Cancelable",
  process: (ctx, job) =>
    new Promise((resolve, reject) => {
      ctx.signal.addEventListener("abort", () => {
        console.log(`aborted: ${ctx.signal.reason.name}: ${ctx.signal.reason.message}`);
        reject(ctx.signal.reason);
      });
    }),
});

handler({
  name: "Logger",
  process: async (ctx, job) => {
    console.log("console.log", job);
    console.error("console.error %s", job);
    ctx.log("ctx.log", job);
    await sleep(1);
    console.info("console.info after await", job);
    console.warn("console.warn", { job });
    process.stdout.write(`process.stdout.write ${job}\n`);
    return "logged";
  },
});

handler({
  name: "Careless",
  process: (ctx, job) => {
    if (job === "unhandled-rejection") {
      Promise.reject(new Error("nobody awaited this"));
      return "still answered";
    }
    // Never settles: the timer's throw is what ends this request.
    return new Promise(() => {
      setTimeout(() => {
        throw new Error("thrown from a timer");
      }, 1);
    });
  },
});

run();

console.log("printed outside any request");
