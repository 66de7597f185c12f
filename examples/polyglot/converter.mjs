// Converter, the Node part of the polyglot example (weather.json): one job
// per Reader output, each turned from Fahrenheit into Celsius figures,
// {"station", "days", "min_c", "max_c", "mean_c"}, rounded to 0.1 °C.

import { handler, run } from "../../sdk/node/index.js";

const celsius = (f) => ((f - 32) * 5) / 9;
const round = (c) => Math.round(c * 10) / 10;

handler({
  name: "Converter",
  version: "1.0.0",
  enumerate: (ctx) => ctx.outputs.reading?.Reader ?? [],
  process: (ctx, { station, high_f }) => {
    const highs = high_f.map(celsius);
    return {
      station,
      days: highs.length,
      min_c: round(Math.min(...highs)),
      max_c: round(Math.max(...highs)),
      mean_c: round(highs.reduce((sum, c) => sum + c, 0) / highs.length),
    };
  },
});

run();
