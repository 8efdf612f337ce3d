"""What each node costs in float, measured: the most its int8 kernel could save.

The accuracy fallback sends to float first the layers that hurt most per millisecond they could
save. ONNX Runtime's profiler times every kernel; the model runs at the "basic" optimization level
so nodes keep their names (the higher levels fuse and rename them), at the threads the artifact
will run with. One untimed warm-up run, then one profiled run per sample.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import onnx_ir as ir
import onnxruntime as ort

from edgec.tensors import Feeds
from edgec.backends.onnxruntime.session import lean_proto, session_options

__all__ = ["node_times_ms"]

_KERNEL_SUFFIX = "_kernel_time"


def node_times_ms(model: ir.Model, samples: Sequence[Feeds], threads: int) -> dict[str, float]:
    """Mean kernel time per inference (ms) of every node of `model` over `samples`, by node name."""
    if not samples:
        return {}
    options = session_options(threads, "basic")
    with tempfile.TemporaryDirectory(prefix="edgec-profile-") as workdir:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(workdir) / "profile")
        proto, shared = lean_proto(model)  # `shared` must outlive the session: ORT reads its memory in place
        options.add_external_initializers(list(shared), list(shared.values()))
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        session.run(None, dict(samples[0]))
        for feeds in samples:
            session.run(None, dict(feeds))
        events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith(_KERNEL_SUFFIX):
            totals[name[: -len(_KERNEL_SUFFIX)]] += event["dur"]
    runs = len(samples) + 1  # the warm-up is profiled too
    return {name: microseconds / 1000 / runs for name, microseconds in totals.items()}
