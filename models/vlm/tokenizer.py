"""A small byte-level BPE tokenizer trained on the fly, for CPU presets without a hub.

Real runs use the backbone's own tokenizer from a local directory. The tiny presets train
their LM from scratch on the built-in dataset, so they need a tokenizer that exists offline,
decodes exactly back to the text (the label-mask check relies on it) and keeps sequences
short: byte-level BPE with digits split one by one (coordinates are read digit by digit),
trained deterministically on the dataset's own text.
"""

from __future__ import annotations

from collections.abc import Iterable

from transformers import PreTrainedTokenizerFast

SPECIALS = ["<|pad|>", "<|endoftext|>"]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``; pad id 0, eos id 1, exact decode round trip."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(sorted(set(texts)), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=SPECIALS[0], eos_token=SPECIALS[1]
    )
