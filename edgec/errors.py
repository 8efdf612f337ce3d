"""Errors a user can cause. The CLI prints their message and exits 2 (1 for a missed accuracy budget);
anything else is a bug."""

from __future__ import annotations

__all__ = [
    "first_line",
    "cause_line",
    "EdgecError",
    "BadInputError",
    "UntrustedSourceError",
    "TargetError",
    "RuntimeUnavailableError",
    "VerificationError",
    "AccuracyBudgetError",
    "StepTimeoutError",
]


class EdgecError(Exception):
    """Base of every error caused by user input or environment; the message says what to do."""


class BadInputError(EdgecError):
    """A model, data, labels or report file the user gave is missing, malformed or inconsistent."""


class UntrustedSourceError(BadInputError):
    """A model file would run code when loaded and the user has not said they trust it."""


class TargetError(EdgecError):
    """A target descriptor is unknown, malformed, or asks for something edgec cannot do yet."""


class RuntimeUnavailableError(EdgecError):
    """The runtime a target needs (TensorRT, LiteRT, a CUDA provider) is not installed here."""


class VerificationError(EdgecError):
    """A compiled model no longer computes what its source computed."""


class AccuracyBudgetError(EdgecError):
    """No int8 model met the accuracy budget; the best attempt and its report were still written."""


class StepTimeoutError(EdgecError):
    """A step of `compile` or `bench` ran past its time limit (`step_timeout_s`, `EDGEC_STEP_TIMEOUT_S`)."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (its class name when it has none).

    Library errors (ONNX Runtime, converters) run to pages; a user needs the first line, and an
    empty message must not turn into an IndexError that hides the real error.
    """
    for line in str(exc).strip().splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__



def cause_line(exc: BaseException) -> str:
    """`first_line` of the innermost explicit cause: libraries wrap the useful error in generic ones
    ("Error calling _deserialize_graph with: g")."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return first_line(exc)
