"""Reader, the Python part of the polyglot example (weather.json).

enumerate  one job per CSV file of readings/ (this folder is the working directory)
process    {"station": "oslo", "high_f": [64.0, 68.0, ...]}, the file's daily highs in order
"""

import csv
import os

import distribot

READINGS = "readings"


@distribot.handler("Reader", version="1.0.0")
class Reader:
    def enumerate(self, ctx):
        return sorted(os.path.join(READINGS, name)
                      for name in os.listdir(READINGS) if name.endswith(".csv"))

    def process(self, ctx, path):
        with open(path, newline="", encoding="utf-8") as file:
            rows = csv.DictReader(line for line in file if not line.startswith("#"))
            try:
                highs = [float(row["high_f"]) for row in rows]
            except (KeyError, TypeError, ValueError) as err:
                # The file will not read better next time: fail the phase.
                raise distribot.Fail(f"{path}: no high_f number in a row ({err})")
        station = os.path.basename(path)[: -len(".csv")]
        return {"station": station, "high_f": highs}


if __name__ == "__main__":
    distribot.run()
