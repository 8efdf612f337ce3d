"""Run the mutation fuzzer (`tests/fuzz/fuzzer.py`) for longer than the test suite does.

    python bench/fuzz.py --seconds 600 --seed 7

Runs rounds of cases (every kind, interleaved) until the time is up, then prints the cases per kind,
the exit codes and every finding (a traceback, exit 3 or another code, exit 2 without one error
line, a case past its time limit); exits 1 when there is a finding. The same seed and number of
rounds give the same cases.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

#: Cases per kind in one round.
ROUND = {"onnx": 10, "npz": 8, "target": 16, "policy": 16, "manifest": 6, "report": 24}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300, help="stop starting rounds after this long (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first round; round i uses seed + i")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))
    from fuzzer import Tally, run_cases

    total, started, round_ = Tally(), time.monotonic(), 0
    while time.monotonic() - started < args.seconds:
        with tempfile.TemporaryDirectory(prefix="edgec-fuzz-") as workdir:
            tally = run_cases(Path(workdir), args.seed + round_, ROUND)
        for kind, count in tally.cases.items():
            total.cases[kind] += count
        total.exits.update(tally.exits)
        total.findings += tally.findings
        round_ += 1
    print(f"seeds {args.seed}..{args.seed + round_ - 1} ({round_} rounds, {time.monotonic() - started:.0f} s): "
          f"{total.summary()}")
    for finding in total.findings:
        print(f"  {finding.kind}: {finding.case}: {finding.problem} (exit {finding.code}): {finding.last_line}")
    return 1 if total.findings else 0


if __name__ == "__main__":
    sys.exit(main())
