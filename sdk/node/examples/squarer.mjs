// A complete handler program to copy from: it hosts one handler, Squarer,
// which squares the numbers below data.n. Declare it in handlers.toml with
//   [[programs]]
//   command = ["node", "examples/squarer.mjs"]
// and run the worker; the worker starts it and keeps it running.

import { handler, run, Fail } from "distribot";

handler({
  name: "Squarer",
  version: "2.1.0",
  // One job per number: the worker spreads them over its program copies.
  enumerate: (ctx) => {
    const n = ctx.data?.n;
    if (!Number.isInteger(n) || n < 0) throw new Fail(`data.n must be a non-negative integer, not ${JSON.stringify(n)}`);
    return [...Array(n).keys()];
  },
  process: async (ctx, job) => {
    console.log(`squaring ${job} (attempt ${ctx.attempt})`);
    return job * job;
  },
});

run();
