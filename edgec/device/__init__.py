"""Benchmarking on the device: an HTTP agent on the board and the client `edgec bench --device` uses."""

from __future__ import annotations

__all__ = ["API_PREFIX"]

#: Path prefix of every agent endpoint; a breaking change of the protocol bumps it.
API_PREFIX = "/v1"
