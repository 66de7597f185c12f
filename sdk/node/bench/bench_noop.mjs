// Measures how many no-op process requests one program process answers per
// second, and the program's CPU time per request, the way a worker drives it:
// a fixed number of requests outstanding, a new one sent per answer.
//
//   node sdk/node/bench/bench_noop.mjs [requests] [outstanding]

import { spawn, execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const TOTAL = Number(process.argv[2] ?? 100_000);
const OUTSTANDING = Number(process.argv[3] ?? 64);
const PROGRAM = fileURLToPath(new URL("./noop_program.mjs", import.meta.url));

function clockTicksPerSecond() {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
}

// utime + stime of a child, which process.cpuUsage cannot see.
function cpuSeconds(pid, ticksPerSecond) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name may hold spaces; fields are counted after its ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

function requestLine(id) {
  return `{"id":${id},"op":"process","handler":"Noop","version":"1.0.0","flow_id":"01a2188b-4230-708d-903b-a4000cc3dbf2","workflow":"bench","phase":"noop","job_id":"01a2188b-4230-708d-903b-a4000cc3dbf2.1.0.${id}","attempt":1,"job":${id},"data":{"n":${TOTAL}}}\n`;
}

const ticksPerSecond = clockTicksPerSecond();
const program = spawn(process.execPath, [PROGRAM], { stdio: ["pipe", "pipe", "inherit"] });
program.stdout.setEncoding("utf8");

let sent = 0;
let answered = 0;
let helloSeen = false;
let cpuAtHello = 0;
let startedAt = 0n;
let partial = "";
const seen = new Uint8Array(TOTAL + 1);

function sendUpTo(count) {
  let batch = "";
  while (sent < count && sent < TOTAL) batch += requestLine(++sent);
  if (batch !== "") program.stdin.write(batch);
}

program.stdout.on("data", (chunk) => {
  const lines = (partial + chunk).split("\n");
  partial = lines.pop();
  let newlyAnswered = 0;
  for (const line of lines) {
    const message = JSON.parse(line);
    if (!helloSeen) {
      helloSeen = true;
      cpuAtHello = cpuSeconds(program.pid, ticksPerSecond);
      startedAt = process.hrtime.bigint();
      sendUpTo(OUTSTANDING);
      continue;
    }
    if (message.error || seen[message.id]) throw new Error(`unexpected answer: ${line}`);
    seen[message.id] = 1;
    newlyAnswered++;
  }
  answered += newlyAnswered;
  if (answered === TOTAL) return finish();
  sendUpTo(answered + OUTSTANDING);
});

function finish() {
  const seconds = Number(process.hrtime.bigint() - startedAt) / 1e9;
  const cpu = cpuSeconds(program.pid, ticksPerSecond) - cpuAtHello;
  program.stdin.end();
  program.on("exit", (code) => {
    console.log(`${TOTAL} no-op jobs, ${OUTSTANDING} outstanding, Node ${process.version}`);
    console.log(`${Math.round(TOTAL / seconds)} jobs/s (${seconds.toFixed(2)} s)`);
    console.log(`program CPU ${cpu.toFixed(2)} s, ${((cpu / TOTAL) * 1e6).toFixed(1)} µs per job (startup excluded)`);
    if (code !== 0) {
      console.error(`the program exited with ${code}`);
      process.exitCode = 1;
    }
  });
}
