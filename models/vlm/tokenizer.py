"""The small BPE trained when a run has no tokenizer, and the pad id every batch uses.

Real runs use the backbone's own tokenizer from a local directory (which one a run reads is the
experiment's: :func:`vlab.vlm.tokenizer.run_tokenizer`). The tiny presets train their LM from
scratch on the built-in dataset, so they need a tokenizer that exists offline, decodes exactly
back to the text (the label-mask check relies on it) and keeps sequences short: byte-level BPE
with digits split one by one (coordinates are read digit by digit), trained deterministically on
the dataset's own text and saved in the run directory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SPECIALS = ["<|pad|>", "<|endoftext|>"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``; pad id 0, eos id 1, exact decode round trip."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

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


def pad_token_id(tok: Any) -> int:
    """The id that pads batches: the tokenizer's pad token, else (Pythia has none) its eos.

    Padding is always masked out, so which id it is only has to agree between collation and
    generation; both take it from here.
    """
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
