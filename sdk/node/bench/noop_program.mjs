// The program bench_noop.mjs measures: a handler that does nothing, so that
// what is timed is the SDK's own cost per request. NOOP_ASYNC=1 makes the
// handler an async function, to price the promise per request too.

import { handler, run } from "distribot";

const noop = process.env.NOOP_ASYNC === "1" ? async (ctx, job) => undefined : (ctx, job) => undefined;

handler({ name: "Noop", version: "1.0.0", process: noop });

run();
