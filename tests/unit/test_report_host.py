"""Host and provenance facts a bench report records."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgec import __version__
from edgec.harness.run import latency_samples_ms
from edgec.report.host import INT8_ISA_FLAGS, cpu_model, git_describe, host_facts, provenance


@given(st.lists(st.integers(min_value=0, max_value=10**12), max_size=50))
def test_latency_samples_give_back_the_exact_nanoseconds(ns: list[int]) -> None:
    assert [round(ms * 1e6) for ms in latency_samples_ms(ns)] == ns


def test_host_facts_name_the_cpu_and_only_known_isa_flags() -> None:
    facts = host_facts()
    assert facts["cpu_model"] == cpu_model() and facts["cpu_model"]
    assert set(facts["isa"]) <= set(INT8_ISA_FLAGS)
    assert facts["usable_cpus"] >= 1


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_describe_inside_and_outside_a_work_tree(tmp_path) -> None:
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_describe(outside) is None
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "f").write_text("x")
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    subprocess.run([*git, "tag", "v1.2"], check=True)
    assert git_describe(repo) == "v1.2"
    (repo / "f").write_text("y")
    assert git_describe(repo) == "v1.2-dirty"


def test_provenance_hashes_the_model_bytes(tmp_path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not really onnx")
    record = provenance(model, {"source": {"sha256": "ab" * 32}})
    assert record["artifact_sha256"] == hashlib.sha256(b"not really onnx").hexdigest()
    assert record["source_sha256"] == "ab" * 32 and record["edgec_version"] == __version__ and record["model"] == "m"
    assert provenance(model, {"source": {"path": "/x/resnet.pt2"}})["model"] == "resnet"
    assert provenance(model, None)["source_sha256"] is None


def test_samples_summary_agree() -> None:
    ns = [1_000_001, 2_500_000, 900_000]
    assert np.percentile(latency_samples_ms(ns), 50) == pytest.approx(1.000001)
