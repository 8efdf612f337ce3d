"""What the bench suites share: the MobileNetV2-shaped model, cached ONNX export, timing, tables, host facts.

Why one module: `cpu_int8.py` and `fp32_passes.py` both benchmark the same MobileNetV2-shaped network
and print the same kind of markdown table; one copy keeps their models (and so their numbers)
comparable and their output consistent. The suites import it as a sibling (`import benchlib`):
running `python bench/<suite>.py` puts `bench/` on `sys.path`.

torch, ONNX Runtime and edgec are imported inside the functions that need them, so a suite pays (in
start-up time and memory) only for the libraries it uses.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MOBILENET_VERSION",
    "SEED",
    "Column",
    "Progress",
    "default_cache_dir",
    "export_onnx_cached",
    "fmt",
    "host_facts",
    "markdown_table",
    "mobilenet_v2",
    "mobilenetv2_onnx",
    "parse_suite_args",
    "progress_printer",
    "stopwatch",
]

#: Bump when the MobileNetV2 architecture, init or export changes, so a stale cached file is not reused.
MOBILENET_VERSION = "mobilenetv2-he-v1"
SEED = 0

Progress = Callable[[str], None]
#: One table column: its header and how one row's cell is written.
Column = tuple[str, Callable[[dict[str, Any]], str]]


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """The suites' default `--cache-dir`: the user cache dir's `edgec/` (exported models go to its `bench/`)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("edgec"))


def export_onnx_cached(cached: Path, build: Callable[[], Any], example: tuple[Any, ...], input_names: Sequence[str],
                       output_names: Sequence[str]) -> Path:
    """Return `cached`, first exporting `build()` there (dynamo exporter, opset 18, static shapes) if missing.

    Why cache: the dynamo exporter takes seconds to tens of seconds per model, which would dominate
    a benchmark's wall time; why stage in a temp dir and rename: an interrupted export must never
    leave a truncated file that a later run would take for the model. The shapes stay those of
    `example` (batch 1), because the suites measure batch-1 latency and a static graph is what an
    edge deployment ships. Weights go inside the file (`external_data=False`).
    """
    if cached.is_file():
        return cached
    import torch

    from edgec.frontends.torch_frontend import quiet_exporter

    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent) as staging, quiet_exporter():
        staged = Path(staging) / cached.name
        torch.onnx.export(build(), example, str(staged), input_names=list(input_names),
                          output_names=list(output_names), opset_version=18, dynamo=True, external_data=False)
        os.replace(staged, cached)
    return cached


def mobilenet_v2() -> Any:
    """MobileNetV2 (width 1.0, 224x224, 1000 classes) with He fan-in init, in eval mode.

    Why He fan-in instead of PyTorch's defaults: with default inits the logits of a random 53-layer
    network shrink to ~1e-9 (FINDINGS), so int8 drift against them would be noise over noise;
    `std = sqrt(2 / fan_in)` keeps activations ~1 through every ReLU6 layer. BatchNorm keeps its
    identity statistics (mean 0, var 1), so folding it is exact and the weights stay He-scaled.
    """
    import torch
    from torch import nn

    def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if relu:
            layers.append(nn.ReLU6())
        return nn.Sequential(*layers)

    class InvertedResidual(nn.Module):
        """1x1 expand -> depthwise 3x3 -> 1x1 linear projection, with a skip when shapes allow."""

        def __init__(self, cin: int, cout: int, stride: int, expand: int):
            super().__init__()
            hidden = cin * expand
            layers = [conv_bn(cin, hidden, 1)] if expand != 1 else []
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, relu=False)]
            self.body = nn.Sequential(*layers)
            self.skip = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x) if self.skip else self.body(x)

    # (expansion t, output channels c, repeats n, first stride s): the paper's Table 2.
    config = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    layers: list[nn.Module] = [conv_bn(3, 32, 3, 2)]
    cin = 32
    for t, c, n, s in config:
        for i in range(n):
            layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    layers += [conv_bn(cin, 1280, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 1000)]
    model = nn.Sequential(*layers)
    torch.manual_seed(SEED)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)
    return model.eval()


def mobilenetv2_onnx(cache_dir: Path) -> Path:
    """Path of the exported MobileNetV2 (input `image` [1, 3, 224, 224], output `logits`), cached."""
    import torch

    return export_onnx_cached(cache_dir / f"{MOBILENET_VERSION}.onnx", mobilenet_v2, (torch.zeros(1, 3, 224, 224),),
                              ["image"], ["logits"])


# --------------------------------------------------------------------------------------------
# Timing, progress, tables, host facts
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    """Yield a one-element list that holds the block's wall time in seconds once it exits."""
    elapsed = [0.0]
    start = time.perf_counter()
    try:
        yield elapsed
    finally:
        elapsed[0] = time.perf_counter() - start


def progress_printer() -> Progress:
    """A progress callback that prints to stderr with seconds since its creation.

    Why stderr: stdout carries only the markdown table, so `python bench/x.py > table.md` works.
    """
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    return say


def fmt(value: float | None, spec: str) -> str:
    """`format(value, spec)`, or an em dash for a value that does not exist (not zero: absent)."""
    return "—" if value is None else format(value, spec)


def markdown_table(columns: Sequence[Column], rows: Sequence[dict[str, Any]],
                   left: Collection[str] = ("model",)) -> str:
    """A markdown table: one line per row; columns named in `left` are left-aligned, numbers right."""
    return "\n".join([
        "| " + " | ".join(header for header, _ in columns) + " |",
        "|" + "|".join("---" if header in left else "---:" for header, _ in columns) + "|",
        *("| " + " | ".join(cell(row) for _, cell in columns) + " |" for row in rows),
    ])


def host_facts() -> dict[str, Any]:
    """What every suite's numbers depend on: the machine, its core count, the library versions."""
    import onnxruntime

    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


def add_common_arguments(parser: argparse.ArgumentParser, *, threads: str, runs: int, warmup: int) -> None:
    """--threads/--runs/--warmup/--json/--cache-dir, shared by every suite."""
    parser.add_argument("--threads", default=threads, help=f"comma-separated intra-op thread counts (default {threads})")
    parser.add_argument("--runs", type=int, default=runs, help=f"timed inferences per variant (default {runs})")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"untimed inferences per variant first (default {warmup})")
    parser.add_argument("--json", type=Path, help="write the rows and host facts to this file")
    parser.add_argument("--cache-dir", type=Path, help="where exported models are cached (default: user cache)")


def parse_suite_args(description: str, models: Sequence[str], argv: Sequence[str] | None, *, threads: str, runs: int,
                     warmup: int, more: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The command line of a suite: the common arguments, `--models` (a list afterwards) and what `more` adds."""
    parser = argparse.ArgumentParser(description=description)
    add_common_arguments(parser, threads=threads, runs=runs, warmup=warmup)
    parser.add_argument("--models", default=",".join(models), help=f"comma-separated, from {', '.join(models)}")
    if more is not None:
        more(parser)
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    check_common_arguments(parser, args, models)
    return args


def check_common_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, known: Collection[str]) -> None:
    """Turn --threads into ints and reject unknown models or nonsensical counts (args.models: a list)."""
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    unknown = sorted(set(args.models) - set(known))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(known)}")
    if args.runs < 1 or args.warmup < 0 or not args.threads or min(args.threads) < 1:
        parser.error("--runs must be >= 1, --warmup >= 0 and every thread count >= 1")

