// A program that registers one handler name twice: it must stop before its hello.

import { handler, run } from "distribot";

handler({ name: "Twice", version: "1.0.0" });
handler({ name: "Twice", version: "2.0.0" });

run();
