"""The mutation fuzzer, bounded: a fixed number of seeded cases per kind of input (the same cases on every
run), each ending in exit 0, 1 or 2 with one line, never a traceback, another exit code or a hang."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fuzzer import KINDS, run_cases  # noqa: E402

#: Cases per kind: about 30 s in all on one core, within the suite's 60 s for the fuzzer.
CASES = {"onnx": 25, "npz": 20, "target": 40, "policy": 40, "manifest": 15, "report": 60}
SEED = 20261203


def test_every_case_ends_in_an_exit_code_with_one_line(tmp_path) -> None:
    tally = run_cases(tmp_path, SEED, CASES)
    assert sum(tally.cases.values()) == sum(CASES.values()) and set(tally.cases) == set(KINDS)
    assert not tally.findings, "\n".join(f"{o.kind}: {o.case}: {o.problem} (exit {o.code}): {o.last_line}"
                                         for o in tally.findings)
    assert tally.exits[2] and tally.exits[0]  # the mutations reach both refusals and inputs that still work
