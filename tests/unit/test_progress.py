"""Progress output: bars on a terminal, plain lines in a pipe, nothing when quiet."""

from __future__ import annotations

import io

from edgec.progress import Progress

MESSAGES = ["loading artifact", "round 1/3", "round 2/3", "round 3/3", "  sensitivity 1/2: conv1 (int8)", "computing drift"]


def _run(**options: bool) -> str:
    stream = io.StringIO()
    with Progress(stream=stream, **options) as say:
        for message in MESSAGES:
            say(message)
    return stream.getvalue()


def test_a_pipe_gets_every_message_as_a_line() -> None:
    assert _run().splitlines() == MESSAGES


def test_quiet_shows_nothing() -> None:
    assert _run(quiet=True) == ""


def test_bars_count_steps_and_print_the_rest() -> None:
    shown = _run(bars=True)
    lines = shown.splitlines()
    assert "loading artifact" in lines and "computing drift" in lines
    assert "round 1/3" not in shown  # counted messages move a bar instead of printing a line each
    assert any("round" in line and "3/3" in line for line in lines)
    assert any("sensitivity: conv1 (int8)" in line and "1/2" in line for line in lines)
    assert lines.index("computing drift") > max(i for i, line in enumerate(lines) if "3/3" in line)
