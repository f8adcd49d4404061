"""Tiny local models for the embedded default and for tests: a character tokenizer and small
GPT-2-style models built from a config (nothing is downloaded).

The prompt format is shared by training (distill), evaluation (evalsets' lm-eval YAMLs) and serving
(the tokenizer's chat template), so a model trained here answers the same way everywhere:

    "Q: What is 347 + 85?\nA:" + " 432\n" + <eos>
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
PROMPT_FORMAT = "Q: {prompt}\nA:"
RESPONSE_FORMAT = " {response}\n"
# Multi-turn conversations alternate the same two parts; system messages are dropped because the
# tiny models never saw any.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}Q: {{ m['content'] }}\nA:"
    "{% elif m['role'] == 'assistant' %} {{ m['content'] }}\n{% endif %}"
    "{% endfor %}"
)
CHARSET = string.printable  # digits, letters, punctuation, whitespace


def format_prompt(prompt: str) -> str:
    return PROMPT_FORMAT.format(prompt=prompt)


def format_response(response: str) -> str:
    return RESPONSE_FORMAT.format(response=response)


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character (BPE with no merges); unknown characters map to <unk>."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK, *dict.fromkeys(CHARSET)])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK, bos_token=EOS,
        model_max_length=512,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(vocab_size: int, n_layer: int = 2, n_head: int = 2, n_embd: int = 64,
                n_positions: int = 256):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
        n_head=n_head, bos_token_id=1, eos_token_id=1, pad_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )


def build_tiny_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0,
                     **config_kwargs) -> PreTrainedModel:
    """A randomly initialised GPT-2-style causal LM sized for the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(len(tokenizer), **config_kwargs)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager")


def save_tiny_model(path: str | Path, seed: int = 0, **config_kwargs) -> Path:
    """Build a random tiny model and its char tokenizer and save both to `path`."""
    path = Path(path)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, seed=seed, **config_kwargs)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
