"""Per-pass verification names the pass that changed a model's outputs, and lets correct passes through."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx_ir.passes import InPlacePass, PassResult

from edgec.errors import VerificationError
from edgec.passes.cleanup import FoldConstantsPass
from edgec.passes.manager import run_passes
from edgec.passes.verify import VerifyInstrument, compare_outputs

MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 4] x) => (float[2, 4] y) {
    two = Constant <value = float[1] {2.0}> ()
    three = Constant <value = float[1] {3.0}> ()
    k = Mul(two, three)
    y = Mul(x, k)
}
"""


class NudgeConstantsPass(InPlacePass):
    """A deliberately wrong 'optimization': scales every Constant by 1 + 1e-2."""

    def call(self, model: ir.Model) -> PassResult:
        for node in model.graph:
            if node.op_type == "Constant":
                value = node.attributes["value"].as_tensor().numpy() * np.float32(1.01)
                node.attributes["value"] = ir.AttrTensor("value", ir.tensor(value))
        return PassResult(model, True)


def _model() -> ir.Model:
    return ir.serde.deserialize_model(onnx.parser.parse_model(MODEL))


def _instrument() -> VerifyInstrument:
    feeds = [{"x": np.random.default_rng(i).standard_normal((2, 4)).astype(np.float32)} for i in range(3)]
    return VerifyInstrument(feeds, rtol=1e-3, atol=1e-4)


def test_correct_pass_is_verified_and_recorded() -> None:
    instrument = _instrument()
    run_passes(_model(), [("fold_constants", FoldConstantsPass())], [instrument])
    assert instrument.max_abs_diff["fold_constants"] <= 1e-6


def test_the_first_breaking_pass_is_named() -> None:
    instrument = _instrument()
    passes = [("nudge", NudgeConstantsPass()), ("fold_constants", FoldConstantsPass())]
    with pytest.raises(VerificationError, match=r"pass 'nudge' changed the model's result: output 'y'.*--skip-passes nudge"):
        run_passes(_model(), passes, [instrument])


def test_unmodified_passes_are_not_rerun() -> None:
    instrument = _instrument()

    class NoOpPass(InPlacePass):
        def call(self, model: ir.Model) -> PassResult:
            return PassResult(model, False)

    run_passes(_model(), [("noop", NoOpPass())], [instrument])
    assert instrument.max_abs_diff == {}


def test_compare_outputs_tolerance_is_relative_plus_absolute() -> None:
    before = [[np.array([100.0, 0.0], np.float32)]]
    within = [[np.array([100.09, 0.00009], np.float32)]]
    beyond = [[np.array([100.0, 0.0002], np.float32)]]
    assert compare_outputs(before, within, ["y"], rtol=1e-3, atol=1e-4)[1] is None
    worst, problem = compare_outputs(before, beyond, ["y"], rtol=1e-3, atol=1e-4)
    assert problem is not None and "'y'" in problem and worst == pytest.approx(2e-4, rel=1e-3)
    assert "changed shape" in compare_outputs(before, [[np.zeros(3, np.float32)]], ["y"], 1e-3, 1e-4)[1]
