"""Tiny random models of the supported layouts, built in-process for tests and quick notebook runs.

No hub access: the tokenizer is a byte-level BPE trained on a slice of the Python documentation that ships
with the standard library; the weights are random with a fixed seed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from lcc_lens.atomic import atomic_dir
from lcc_lens.cache import cache_root

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Layout = Literal["llama", "qwen2", "qwen3", "mistral", "gpt2", "gemma3"]
LAYOUTS: tuple[Layout, ...] = ("llama", "qwen2", "qwen3", "mistral", "gpt2", "gemma3")
_VOCAB = 512


def tiny_tokenizer() -> PreTrainedTokenizerBase:
    """A 512-token byte-level BPE tokenizer, trained once and cached on disk (deterministic)."""
    from transformers import AutoTokenizer

    target = cache_root() / "tiny" / f"tokenizer-bpe{_VOCAB}"
    if not (target / "tokenizer.json").is_file():
        from pydoc_data.topics import topics

        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=_VOCAB,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        texts = [topics[k] for k in sorted(topics)[:40]]
        tok.train_from_iterator(texts, trainer)
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            eos_token="<|endoftext|>",
            bos_token="<|endoftext|>",
            pad_token="<|endoftext|>",
            model_max_length=256,
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(target) as tmp:
            fast.save_pretrained(tmp)
    return AutoTokenizer.from_pretrained(
        str(target), local_files_only=True, trust_remote_code=False
    )


def tiny_config(layout: Layout, *, n_layers: int = 3, n_heads: int = 4, n_kv_heads: int = 2):
    """A config of ``layout`` with d_model 64, d_head 16 and grouped-query attention where supported."""
    import transformers as tf

    d_head = 16
    common = dict(
        vocab_size=_VOCAB,
        hidden_size=n_heads * d_head,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    if layout == "llama":
        return tf.LlamaConfig(head_dim=d_head, **common)
    if layout == "qwen2":
        return tf.Qwen2Config(**common)
    if layout == "qwen3":
        return tf.Qwen3Config(head_dim=d_head, **common)
    if layout == "mistral":
        return tf.MistralConfig(head_dim=d_head, sliding_window=None, **common)
    if layout == "gemma3":
        # sliding-window layers then a global one, as in Gemma 3 (n_kv_heads is 1 there)
        return tf.Gemma3TextConfig(
            head_dim=d_head,
            query_pre_attn_scalar=d_head,
            sliding_window=4,
            layer_types=["sliding_attention"] * (n_layers - 1) + ["full_attention"],
            **{**common, "num_key_value_heads": 1, "tie_word_embeddings": True},
        )
    if layout == "gpt2":
        return tf.GPT2Config(
            vocab_size=_VOCAB,
            n_embd=n_heads * d_head,
            n_layer=n_layers,
            n_head=n_heads,
            n_positions=256,
            bos_token_id=0,
            eos_token_id=0,
        )
    raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")


def tiny_model(layout: Layout = "llama", *, seed: int = 0, **shape: int) -> PreTrainedModel:
    """A randomly initialised tiny causal LM (fp32, eval mode); weights scaled up to be non-trivial.

    Gemma's norms multiply by (1 + w), so their 1-D weights get uniform(-0.5, 0.5) values to matter.
    """
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(layout, **shape)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.08)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.02)
            elif layout == "gemma3":
                p.uniform_(-0.5, 0.5)
    return model.eval()


def save_tiny_checkpoint(
    directory: str | os.PathLike[str], layout: Layout = "llama", *, seed: int = 0, **shape: int
) -> Path:
    """Write a tiny model and the tiny tokenizer as a Hugging Face checkpoint directory."""
    directory = Path(directory)
    model = tiny_model(layout, seed=seed, **shape)
    with atomic_dir(directory) as tmp:
        model.save_pretrained(tmp)
        tiny_tokenizer().save_pretrained(tmp)
    return directory
