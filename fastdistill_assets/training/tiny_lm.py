"""A tiny randomly initialized causal LM saved as a local model folder: for smoke runs of the hf-sft
trainer, its tests and the throughput benchmarks, without downloading any weights (needs the
`train` extra)."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant\n{% endif %}")


def make_tiny_model(folder: Path, corpus: list[str], seed: int = 0, chat_template: str | None = None,
                    **sizes: int) -> Path:
    """A tiny randomly initialized Llama-style model and a BPE tokenizer trained on ``corpus``.

    For tests and smoke runs without any download: real architecture, random weights.
    ``chat_template``: a Jinja chat template for the tokenizer (e.g. ``CHAT_TEMPLATE``);
    ``sizes``: ``LlamaConfig`` sizes replacing the tiny ones (``hidden_size=768``, ...).
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    raw.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", chat_template=chat_template)
    shape = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, **sizes}
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **shape)
    folder.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
