"""The ``hf-sft`` trainer: LoRA supervised fine-tuning of a local causal LM with TRL's ``SFTTrainer``.

Needs the ``train`` extra (torch, transformers, peft, trl). The model is a local Hugging Face
folder or a GGUF file (loaded by transformers with the ``gguf`` package); nothing is downloaded.
Runs on a GPU when one is there (bf16 where it is supported, else fp16), else on the CPU (fp32).
The data are prompt-completion pairs and the loss covers the completion only: the SQL, after
its rationale in the step-by-step recipe (``prompt_format.assistant_target``, as in ``sft.jsonl``).
With a ``checkpoint_dir``, checkpoints are saved there and a killed run of the same training
(same config and rows) resumes from the last one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl
import torch
from datasets import Dataset, disable_progress_bars
from peft import LoraConfig, PeftModel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GgufConfig,
    TrainerCallback,
)
from transformers.trainer_callback import PrinterCallback
from trl import SFTConfig, SFTTrainer

from fastdistill_assets.config.models import TrainingConfig
from fastdistill_assets.core.prompt_format import assistant_target

MAX_NEW_TOKENS = 128
FINGERPRINT_FILE = "fingerprint.txt"
SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def _split_model_path(model_path: str) -> tuple[str, dict[str, Any]]:
    path = Path(model_path)
    if not path.exists():
        raise FileNotFoundError(f"hf-sft model_path not found: {model_path} (nothing is downloaded)")
    if path.suffix == ".gguf":
        return str(path.parent), {"gguf_file": path.name}
    return str(path), {}


def _load_base(model_path: str, device: str) -> tuple[Any, Any]:
    folder, extra = _split_model_path(model_path)
    tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dense = {"quantization_config": GgufConfig(dequantize=True)} if extra else {}  # LoRA wraps nn.Linear
    # fp32 weights everywhere; on a GPU the Trainer's autocast (bf16/fp16) does the mixed precision
    model = AutoModelForCausalLM.from_pretrained(folder, **extra, **dense, dtype=torch.float32).to(device)
    if getattr(model, "hf_quantizer", None) is not None:  # an unpacked GGUF: a plain model for the Trainer
        model.hf_quantizer.remove_quantization_config(model)
    return model, tokenizer


def _has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _plain_prompt(messages: list[dict[str, str]]) -> str:
    """The prompt as text for a tokenizer without a chat template."""
    return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages) + "<|assistant|>\n"


def _prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The prompt's token ids, tokenized as ``SFTTrainer`` tokenizes the training prompts."""
    if _has_chat_template(tokenizer):
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"])
    return tokenizer(_plain_prompt(messages))["input_ids"]


def _record(tokenizer: Any, messages: list[dict[str, str]], target: str) -> dict[str, Any]:
    """One prompt-completion example: conversational with a chat template, else plain text."""
    if _has_chat_template(tokenizer):
        return {"prompt": messages, "completion": [{"role": "assistant", "content": target}]}
    return {"prompt": _plain_prompt(messages), "completion": target}


def sft_records(tokenizer: Any, frame: pl.DataFrame, sql_column: str) -> list[dict[str, Any]]:
    """The training examples: the rows of ``frame`` with SQL in ``sql_column``, in order."""
    rows = frame.filter(pl.col(sql_column).is_not_null() & (pl.col(sql_column) != ""))
    rationales = rows["rationale"] if "rationale" in rows.columns else [None] * rows.height
    return [_record(tokenizer, json.loads(messages), assistant_target(sql, rationale))
            for messages, sql, rationale in zip(rows["messages"], rows[sql_column], rationales, strict=True)]


def fingerprint(config: TrainingConfig, records: list[dict[str, Any]]) -> str:
    """sha256 of the training config and examples: a checkpoint is resumed only by the same training."""
    payload = json.dumps({"config": config.model_dump(mode="json"), "records": records}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _empty(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for child in folder.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def _last_complete_checkpoint(folder: Path) -> str | None:
    """The newest ``checkpoint-N`` whose trainer state (saved last) reads: a kill mid-save leaves
    it out."""
    done = [p for p in folder.glob("checkpoint-*")
            if p.name.removeprefix("checkpoint-").isdigit() and _state_reads(p / "trainer_state.json")]
    return str(max(done, key=lambda p: checkpoint_step(str(p)))) if done else None


def _state_reads(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def checkpoint_step(checkpoint: str | None) -> int:
    """The optimizer step a checkpoint was saved at (0: none, a fresh start)."""
    return int(Path(checkpoint).name.removeprefix("checkpoint-")) if checkpoint else 0


def resume_point(checkpoint_dir: Path, print_: str) -> str | None:
    """The checkpoint to resume from: the last one of this same training, else None.

    A folder holding another training's checkpoints (another fingerprint) is emptied first.
    """
    mark = checkpoint_dir / FINGERPRINT_FILE
    if mark.is_file() and mark.read_text() == print_:
        return _last_complete_checkpoint(checkpoint_dir)
    _empty(checkpoint_dir)
    mark.write_text(print_)
    return None


def device_name() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def synced_clock(device: str) -> float:
    """``time.perf_counter()`` once the device's queued work is done (CUDA runs asynchronously)."""
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def _precision(device: str) -> dict[str, bool]:
    """Mixed precision: bf16 on a GPU that supports it, else fp16 on a GPU, else fp32."""
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    return {"bf16": bf16, "fp16": device == "cuda" and not bf16}


def sft_config(config: TrainingConfig, output_dir: Path, device: str, checkpoints: bool) -> SFTConfig:
    """TRL's config from the run's ``TrainingConfig`` (which holds every default)."""
    return SFTConfig(
        output_dir=str(output_dir), seed=config.seed, learning_rate=config.lora_learning_rate,
        num_train_epochs=config.epochs, max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        lr_scheduler_type=SCHEDULERS[config.lr_scheduler], warmup_steps=config.warmup_ratio,  # < 1: a ratio
        max_grad_norm=config.max_grad_norm, max_length=config.max_length, completion_only_loss=True,
        activation_checkpointing=False, include_num_input_tokens_seen="non_padding",
        save_strategy="steps" if checkpoints else "no", save_steps=config.checkpoint_steps, save_total_limit=2,
        logging_strategy="no", report_to="none", disable_tqdm=True, dataloader_pin_memory=device == "cuda",
        **_precision(device))


class TrainClock(TrainerCallback):
    """Times one ``train()`` call from the first optimizer step's start to the last one's end
    (checkpoint saves in between included) and counts the non-padding tokens those steps trained."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.started: float | None = None
        self.ended: float | None = None
        self.tokens_before = 0
        self.tokens = 0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.started is None:
            self.started, self.tokens_before = synced_clock(self.device), state.num_input_tokens_seen

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ended, self.tokens = synced_clock(self.device), state.num_input_tokens_seen - self.tokens_before

    @property
    def seconds(self) -> float:
        return round(self.ended - self.started, 6) if self.started is not None and self.ended is not None else 0.0


def _mean_loss(trainer: SFTTrainer) -> float:
    """Teacher-forced loss on the completion tokens of the training set."""
    return float(trainer.evaluate(trainer.train_dataset)["eval_loss"])


def _build_trainer(config: TrainingConfig, base: Any, tokenizer: Any, records: list[dict[str, Any]],
                   output_dir: Path, device: str, checkpoints: bool, clock: TrainClock) -> SFTTrainer:
    lora = LoraConfig(r=config.lora_r, lora_alpha=2 * config.lora_r, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    disable_progress_bars()  # the dataset preparation's bars: the step's log is not a terminal
    trainer = SFTTrainer(model=base, args=sft_config(config, output_dir, device, checkpoints),
                         train_dataset=Dataset.from_list(records), processing_class=tokenizer, peft_config=lora,
                         callbacks=[clock])
    trainer.remove_callback(PrinterCallback)  # nothing printed: the report carries the figures
    if len(trainer.train_dataset) == 0:
        raise ValueError(f"hf-sft: every prompt is longer than training.max_length ({config.max_length})")
    return trainer


def _save(model: Any, tokenizer: Any, base_model: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder / "adapter")
    tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "model.json").write_text(json.dumps({"trainer": "hf-sft", "base_model": base_model}))


def train_hf_sft(config: TrainingConfig, frame: pl.DataFrame, sql_column: str, folder: Path,
                 checkpoint_dir: Path | None = None) -> tuple[HfStudent, dict[str, Any]]:
    """Fine-tune LoRA adapters on (prompt messages, SQL) pairs and save them to ``folder``.

    ``checkpoint_dir``: where checkpoints go every ``checkpoint_steps`` steps; a checkpoint of
    the same training found there is resumed (``resumed_from_step``), another is cleared first. The
    checkpoints stay after the adapter is saved (the stage is published only after this returns),
    at most ``save_total_limit`` of them. Without it, nothing is checkpointed.
    ``steps`` and ``epochs`` count the whole training, resumed steps included; ``train_tokens``
    and ``train_s`` this call's steps only: ``train_s`` runs from the first optimizer step's
    start to the end of the last one, ``train_tokens_per_sec = train_tokens / train_s`` (tokens
    of the trained batches, padding excluded). ``wall_s`` is the whole call (loading, the loss
    passes before and after, saving).
    """
    if not config.model_path:
        raise ValueError("trainer hf-sft needs training.model_path (a local model folder or .gguf file)")
    started = time.perf_counter()
    device = device_name()
    base, tokenizer = _load_base(config.model_path, device)
    records = sft_records(tokenizer, frame, sql_column)
    if not records:
        raise ValueError(f"hf-sft: no rows with SQL in column {sql_column!r} to train on")
    resume = resume_point(checkpoint_dir, fingerprint(config, records)) if checkpoint_dir else None
    clock = TrainClock(device)
    with tempfile.TemporaryDirectory(prefix="hf-sft-") as scratch:
        trainer = _build_trainer(config, base, tokenizer, records, checkpoint_dir or Path(scratch), device,
                                 checkpoint_dir is not None, clock)
        loss_before = _mean_loss(trainer)
        trainer.train(resume_from_checkpoint=resume)
        loss_after = _mean_loss(trainer)
    model = trainer.model.eval()
    _save(model, tokenizer, config.model_path, folder)  # checkpoints stay: the stage is not published yet
    used, no_sql = len(trainer.train_dataset), frame.height - len(records)
    skipped = {"no_sql": no_sql, "prompt_over_max_length": len(records) - used}
    report = {"examples": frame.height, "used": used, "skipped_by_reason": {k: n for k, n in skipped.items() if n},
              "epochs": round(trainer.state.epoch or 0.0, 2), "steps": trainer.state.global_step,
              "resumed_from_step": checkpoint_step(resume), "train_tokens": clock.tokens, "train_s": clock.seconds,
              "train_tokens_per_sec": round(clock.tokens / clock.seconds, 1) if clock.seconds else 0.0,
              "device": device, "train_loss_before": round(loss_before, 4), "train_loss_after": round(loss_after, 4),
              "model_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())}
    report["wall_s"] = round(time.perf_counter() - started, 3)
    return HfStudent(model, tokenizer, device), report


class HfStudent:
    """A fine-tuned causal LM answering with greedy decoding."""

    def __init__(self, model: Any, tokenizer: Any, device: str) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device

    def answer(self, messages: list[dict[str, str]]) -> str:
        return self._generate([_prompt_ids(self.tokenizer, messages)])[0]

    def answer_many(self, prompts: list[list[dict[str, str]]], batch_size: int) -> list[str | None]:
        """Greedy replies, ``batch_size`` prompts per ``generate`` call (left-padded)."""
        ids = [_prompt_ids(self.tokenizer, messages) for messages in prompts]
        return [answer for start in range(0, len(ids), batch_size)
                for answer in self._generate(ids[start: start + batch_size])]

    def _generate(self, prompts: list[list[int]]) -> list[str]:
        batch = self.tokenizer.pad({"input_ids": prompts}, padding_side="left", return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = self.model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        width = batch["input_ids"].shape[1]
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]

    @classmethod
    def load(cls, folder: Path) -> HfStudent:
        base_path = json.loads((folder / "model.json").read_text())["base_model"]
        device = device_name()
        base, _ = _load_base(base_path, device)
        tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
        model = PeftModel.from_pretrained(base, folder / "adapter").to(device)
        model.eval()
        return cls(model, tokenizer, device)
