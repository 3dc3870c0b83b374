"""Tiny models and tokenizers built from a config inside the tests (no downloads)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

CORPUS = [
    "the cat sat on the mat", "le chat est sur le tapis", "die Katze sitzt auf der Matte",
    "el gato está en la alfombra", "кошка сидит на коврике", "a good film, I loved it",
    "a dull film, I hated it", "In the beginning God created the heavens and the earth.",
]

ARCHITECTURES: dict[str, dict] = {
    "gemma3_text": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
                        num_key_value_heads=1, head_dim=16, sliding_window=16, max_position_embeddings=128),
    "llama": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=128),
    "qwen2": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=128),
    "bloom": dict(hidden_size=32, n_layer=3, n_head=2),
    "gpt2": dict(n_embd=32, n_layer=3, n_head=2, n_positions=128),
}


def tiny_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few sentences, with pad/bos/eos tokens."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<unk>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>")


def tiny_causal_lm(arch: str = "llama", vocab_size: int = 300, seed: int = 0, **overrides) -> PreTrainedModel:
    """A randomly initialised causal LM of the given architecture (config entries overridden as given), small enough
    for unit tests."""
    torch.manual_seed(seed)
    config = AutoConfig.for_model(arch, vocab_size=vocab_size, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                                  **{**ARCHITECTURES[arch], **overrides})
    return AutoModelForCausalLM.from_config(config).eval()
