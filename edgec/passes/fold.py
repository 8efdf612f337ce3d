"""Folding passes: merge an affine op into the weights of the op before it.

BatchNormalization after Conv/ConvTranspose/Gemm is folded with onnxscript's rewrite rules, which
check each match (constant scale/bias/mean/var, a single consumer) before rewriting.
"""

from __future__ import annotations

from onnxscript.rewriter import RewritePass, RewriteRuleSet
from onnxscript.rewriter.rules.common import (
    fuse_batchnorm_into_conv_rule,
    fuse_batchnorm_into_conv_transpose_rule,
    fuse_batchnorm_into_gemm_rule,
)

__all__ = ["FoldBatchNormPass"]


class FoldBatchNormPass(RewritePass):
    """BatchNormalization(Conv(x)) -> Conv'(x) with W' = W*g/sqrt(v+eps), b' = (b-m)*g/sqrt(v+eps)+beta."""

    def __init__(self) -> None:
        super().__init__(
            RewriteRuleSet(
                [fuse_batchnorm_into_conv_rule, fuse_batchnorm_into_conv_transpose_rule, fuse_batchnorm_into_gemm_rule]
            )
        )
