// The handlers of the Node example (invoice.json), in one long-lived program
// on the Node SDK, which it imports from the repository by relative path.
//
//   PriceLookup  pricing    one job per line of data.cart: look its item up in prices.csv
//   Invoicer     invoicing  one job: add the lines up, write out/<flow_id>/invoice.txt
//
// The worker starts the program once (handlers.toml) and sends it many
// requests at once; the lookups of one cart run concurrently. The working
// directory is this folder.

import { randomUUID } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { Fail, handler, run } from "../../sdk/node/index.js";

handler({
  name: "PriceLookup",
  version: "1.0.0",
  enumerate: (ctx) => {
    const cart = ctx.data?.cart;
    if (!Array.isArray(cart) || cart.length === 0) {
      throw new Fail('data.cart must be a non-empty list like [{"item": "honey", "qty": 2}]');
    }
    return cart;
  },
  process: async (ctx, line) => {
    // Read at every lookup: an edited price list counts without a restart.
    const cents = (await priceList(ctx.signal)).get(line.item);
    // Another attempt would not find it either: fail the phase now.
    if (cents === undefined) throw new Fail(`no price for ${JSON.stringify(line.item)} in prices.csv`);
    const qty = line.qty ?? 1;
    return { item: line.item, qty, unit_cents: cents, cents: qty * cents };
  },
});

handler({
  name: "Invoicer",
  version: "1.0.0",
  // process only sees its job, so the job carries every priced line.
  enumerate: (ctx) => [{ lines: ctx.outputs.pricing?.PriceLookup ?? [] }],
  process: async (ctx, { lines }) => {
    const total = lines.reduce((sum, line) => sum + line.cents, 0);
    const text = [
      ...lines.map((line) => `${line.qty} x ${line.item.padEnd(12)} ${money(line.cents).padStart(8)}`),
      `${"total".padEnd(16)} ${money(total).padStart(8)}`,
    ].join("\n");
    const invoice = await writeWhole(ctx, "invoice.txt", `${text}\n`);
    return { lines: lines.length, total_cents: total, total: money(total), invoice };
  },
});

// prices.csv as a Map from item to cents; lines starting with # are comments.
async function priceList(signal) {
  const text = await readFile("prices.csv", { encoding: "utf8", signal });
  const rows = text.split("\n").filter((row) => row.trim() && !row.startsWith("#"));
  return new Map(rows.slice(1).map((row) => row.split(",")).map(([item, cents]) => [item.trim(), Number(cents)]));
}

function money(cents) {
  return `€${(cents / 100).toFixed(2)}`;
}

// Writes out/<flow_id>/<name> whole: a temporary file renamed over it, so a
// job that runs twice (jobs run at least once) leaves the same file.
async function writeWhole(ctx, name, text) {
  if (!/^[\w.-]+$/.test(ctx.flowId) || /^\.+$/.test(ctx.flowId)) {
    throw new Fail(`flow_id ${JSON.stringify(ctx.flowId)} cannot be used as a folder name`);
  }
  const file = path.join("out", ctx.flowId, name);
  await mkdir(path.dirname(file), { recursive: true });
  const temporary = `${file}.${randomUUID()}.tmp`;
  await writeFile(temporary, text, { signal: ctx.signal });
  await rename(temporary, file);
  return file;
}

run();
