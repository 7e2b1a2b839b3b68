"""Tiny random models, a tiny tokenizer and a tiny data directory.

Used by the test suite and by the workflow's tiny config, so both run in seconds on a CPU and
never need the Hub. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Pruning removes weights from a neural network while keeping its accuracy.",
    "Large language models hold outlier features in a few of their layers.",
    "Sparsity is the fraction of weights that are exactly zero.",
    "Calibration data flows through the network block by block.",
    "Perplexity measures how surprised a language model is by a text.",
    "A mixture of numbers 12 345 6789 and punctuation: commas, dots; colons!",
    "Outlier weighed layerwise sparsity gives every block its own ratio.",
]


def tiny_corpus(n_lines: int = 400, seed: int = 0) -> list[str]:
    """Deterministic pseudo-text made of shuffled sentences and words."""
    generator = torch.Generator().manual_seed(seed)
    words = " ".join(_SENTENCES).split()
    lines = []
    for _ in range(n_lines):
        length = int(torch.randint(5, 60, (1,), generator=generator))
        picks = torch.randint(0, len(words), (length,), generator=generator).tolist()
        lines.append(" ".join(words[i] for i in picks))
    return lines


def tiny_tokenizer(vocab_size: int = 320):
    """A byte-level BPE tokenizer trained in memory on :func:`tiny_corpus`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_SENTENCES + tiny_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


FAMILIES = ("llama", "mistral", "opt", "qwen2", "gemma3")


def tiny_config(family: str = "llama", vocab_size: int = 320, num_layers: int = 4):
    """Config of a tiny model of the given family (one of :data:`FAMILIES`): llama, mistral
    (grouped-query attention), opt, qwen2 (biases on q/k/v) or gemma3 (sliding-window and global
    attention layers, each with its own rotary embedding and mask)."""
    from transformers import Gemma3TextConfig, LlamaConfig, MistralConfig, OPTConfig, Qwen2Config

    if family == "llama":
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=num_layers,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
            tie_word_embeddings=False,
        )
    if family == "mistral":
        return MistralConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=num_layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            sliding_window=None,
        )
    if family == "opt":
        return OPTConfig(
            vocab_size=vocab_size, hidden_size=64, ffn_dim=128, num_hidden_layers=num_layers,
            num_attention_heads=4, max_position_embeddings=1024, word_embed_proj_dim=64,
            do_layer_norm_before=True,
        )
    if family == "qwen2":
        return Qwen2Config(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=num_layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            use_sliding_window=False, tie_word_embeddings=False,
        )
    if family == "gemma3":
        # A window shorter than the test sequences, so the sliding layers' mask differs from the
        # global layers' one; global layers at positions 2 and 5 of the pattern, as in Gemma 3's 5:1.
        layer_types = ["full_attention" if i % 3 == 2 else "sliding_attention" for i in range(num_layers)]
        return Gemma3TextConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=num_layers,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
            max_position_embeddings=1024, sliding_window=8, layer_types=layer_types,
        )
    raise ValueError(f"unknown tiny model family {family!r}; allowed: {', '.join(FAMILIES)}")


def tiny_model(family: str = "llama", seed: int = 0, num_layers: int = 4, vocab_size: int = 320):
    """A tiny random causal LM in float32, eval mode.

    Weights get a few large input columns so that blocks differ in their outlier ratios, as real
    LLMs do; otherwise OWL's allocation would be degenerate on random weights.
    """
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(family, vocab_size=vocab_size, num_layers=num_layers)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in (m for m in model.modules() if isinstance(m, torch.nn.Linear)):
            if module.weight.shape[0] == vocab_size:
                continue
            scale = 1.0 + 4.0 * torch.rand(module.weight.shape[1], generator=generator) ** 8
            module.weight.mul_(scale)
    return model.eval()


def save_tiny_model(path: str | Path, family: str = "llama", seed: int = 0, num_layers: int = 4) -> Path:
    """Write a tiny model and its tokenizer to ``path`` (loadable by ``owl prune --model path``)."""
    path = Path(path)
    tokenizer = tiny_tokenizer()
    model = tiny_model(family, seed=seed, num_layers=num_layers, vocab_size=len(tokenizer))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_tiny_data_dir(path: str | Path, n_docs: int = 60, n_test_rows: int = 300, seed: int = 0) -> Path:
    """Write a data directory laid out like ``OWL_DATA_DIR`` with small pseudo-text files."""
    path = Path(path)
    lines = tiny_corpus(n_lines=n_docs * 8 + n_test_rows, seed=seed)
    c4 = path / "c4"
    c4.mkdir(parents=True, exist_ok=True)
    with open(c4 / "c4-train.00000-of-01024.head1000.jsonl", "w") as f:
        for i in range(n_docs):
            # Documents of varied length: some short (rejected by the sampler), most long.
            doc_lines = lines[i * 8 : i * 8 + (1 if i % 5 == 0 else 8)]
            f.write(json.dumps({"text": " ".join(doc_lines), "timestamp": "", "url": f"tiny://{i}"}) + "\n")
    wiki = path / "wikitext-2-raw-v1"
    wiki.mkdir(parents=True, exist_ok=True)
    for split in ("test", "validation", "train"):
        with open(wiki / f"{split}.jsonl", "w") as f:
            for line in lines[n_docs * 8 :]:
                f.write(json.dumps({"text": f" {line} \n"}) + "\n")
                if split != "test":
                    f.write(json.dumps({"text": ""}) + "\n")
    return path
