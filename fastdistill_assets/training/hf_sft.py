"""The ``hf-sft`` trainer: LoRA supervised fine-tuning of a local causal LM on the distilled chat data.

Needs the ``train`` extra (torch, transformers, peft). The model is a local Hugging Face folder
or a GGUF file (loaded by transformers with the ``gguf`` package); nothing is downloaded. Runs
on a GPU when one is there, else on the CPU. The loss covers the assistant's answer only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import polars as pl

from fastdistill_assets.config import TrainingConfig

MAX_NEW_TOKENS = 128


def _split_model_path(model_path: str) -> tuple[str, dict[str, Any]]:
    path = Path(model_path)
    if not path.exists():
        raise FileNotFoundError(f"hf-sft model_path not found: {model_path} (nothing is downloaded)")
    if path.suffix == ".gguf":
        return str(path.parent), {"gguf_file": path.name}
    return str(path), {}


def _load_base(model_path: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, extra = _split_model_path(model_path)
    tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, **extra).to(device)
    return model, tokenizer


def _prompt_text(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages) + "<|assistant|>\n"


def _encode(tokenizer: Any, messages: list[dict[str, str]], answer: str, max_length: int) -> tuple[list[int], list[int]]:
    prompt = tokenizer(_prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"]
    target = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prompt = prompt[-max(1, max_length - len(target)):]
    ids = (prompt + target)[:max_length]
    labels = ([-100] * len(prompt) + target)[:max_length]
    return ids, labels


def _batch_tensors(batch: list[tuple[list[int], list[int]]], pad_id: int, device: str) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.tensor([i + [pad_id] * (width - len(i)) for i, _ in batch], device=device)
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch], device=device)
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch], device=device)
    return ids, labels, mask


def mean_loss(model: Any, encoded: list[tuple[list[int], list[int]]], pad_id: int, device: str,
              batch_size: int = 8) -> float:
    """Teacher-forced loss on the answer tokens, averaged over the examples."""
    import torch

    was_training = model.training
    model.eval()
    losses = []
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            ids, labels, mask = _batch_tensors(encoded[start: start + batch_size], pad_id, device)
            losses.append(float(model(input_ids=ids, attention_mask=mask, labels=labels).loss))
    model.train(was_training)
    return sum(losses) / len(losses) if losses else float("nan")


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def synced_clock(device: str) -> float:
    """``time.perf_counter()`` once the device's queued work is done (CUDA runs asynchronously)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def train_hf_sft(config: TrainingConfig, frame: pl.DataFrame, sql_column: str,
                 folder: Path) -> tuple[HfStudent, dict[str, Any]]:
    """Fine-tune LoRA adapters on (prompt messages, SQL) pairs and save them to ``folder``.

    ``wall_s`` is the whole call (loading, encoding, the loss passes before and after, saving);
    ``train_s`` runs from the first optimizer step's forward pass to the end of the last optimizer
    step, and ``train_tokens_per_sec`` is ``train_tokens / train_s`` (the tokens, padding
    excluded, of the batches those steps trained on).
    """
    import torch
    from peft import LoraConfig, get_peft_model

    if not config.model_path:
        raise ValueError("trainer hf-sft needs training.model_path (a local model folder or .gguf file)")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    device = device_name()
    base, tokenizer = _load_base(config.model_path, device)
    model = get_peft_model(base, LoraConfig(r=config.lora_r, lora_alpha=2 * config.lora_r, lora_dropout=0.0,
                                            target_modules="all-linear", task_type="CAUSAL_LM"))
    rows = frame.filter(pl.col(sql_column).is_not_null() & (pl.col(sql_column) != ""))
    encoded = [_encode(tokenizer, json.loads(m), sql, config.max_length)
               for m, sql in rows.select("messages", sql_column).iter_rows()]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lora_learning_rate)
    steps_per_epoch = max(1, -(-len(encoded) // config.batch_size))
    total_steps = config.max_steps or steps_per_epoch * config.epochs
    generator = torch.Generator().manual_seed(config.seed)
    tokens, step, train_started = 0, 0, None
    loss_before = mean_loss(model, encoded, tokenizer.pad_token_id, device)
    model.train()
    while step < total_steps and encoded:
        order = torch.randperm(len(encoded), generator=generator).tolist()  # a new shuffle each epoch
        for start in range(0, len(encoded), config.batch_size):
            if step >= total_steps:
                break
            batch = [encoded[i] for i in order[start: start + config.batch_size]]
            if train_started is None:
                train_started = synced_clock(device)
            ids, labels, mask = _batch_tensors(batch, tokenizer.pad_token_id, device)
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            tokens += int(mask.sum())
            step += 1
    train_s = round(synced_clock(device) - train_started, 6) if step else 0.0
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder / "adapter")
    tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "model.json").write_text(json.dumps({"trainer": "hf-sft", "base_model": config.model_path}))
    loss_after = mean_loss(model, encoded, tokenizer.pad_token_id, device)
    model.eval()
    report = {"examples": frame.height, "used": len(encoded), "skipped_by_reason": {},
              "epochs": round(step * config.batch_size / len(encoded), 2) if encoded else 0,
              "steps": step, "train_tokens": tokens, "train_s": train_s,
              "train_tokens_per_sec": round(tokens / train_s, 1) if train_s else 0.0, "device": device,
              "train_loss_before": round(loss_before, 4), "train_loss_after": round(loss_after, 4),
              "model_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())}
    report["wall_s"] = round(time.perf_counter() - started, 3)
    return HfStudent(model, tokenizer, device), report


class HfStudent:
    """A fine-tuned causal LM answering with greedy decoding."""

    def __init__(self, model: Any, tokenizer: Any, device: str) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device

    def answer(self, messages: list[dict[str, str]]) -> str:
        import torch

        text = _prompt_text(self.tokenizer, messages)
        inputs = self.tokenizer(text, return_tensors="pt", add_special_tokens=False).to(self.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    @classmethod
    def load(cls, folder: Path) -> HfStudent:
        from peft import PeftModel

        base_path = json.loads((folder / "model.json").read_text())["base_model"]
        device = device_name()
        base, _ = _load_base(base_path, device)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
        model = PeftModel.from_pretrained(base, folder / "adapter").to(device)
        model.eval()
        return cls(model, tokenizer, device)


def make_tiny_model(folder: Path, corpus: list[str], seed: int = 0) -> Path:
    """A tiny randomly initialized Llama-style model and a BPE tokenizer trained on ``corpus``.

    For tests and smoke runs without any download: real architecture, random weights.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    from tokenizers import decoders

    raw.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    folder.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
