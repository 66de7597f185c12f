// The benchmark's no-op handler on the Node SDK: `Noop` 1.0.0 enumerates
// `data.jobs[PHASE]` jobs (one when absent), and does nothing with each,
// as the built-in `noop` handler does.
import { handler, run } from "../../sdk/node/index.js";

handler({
  name: "Noop",
  version: "1.0.0",
  enumerate: (ctx) => new Array(Number((ctx.data.jobs || {})[ctx.phase] ?? 1)).fill(null),
  process: async (ctx) => {
    if (ctx.data.sleep_ms) await new Promise((resolve) => setTimeout(resolve, ctx.data.sleep_ms));
    return undefined;
  },
});
run();
