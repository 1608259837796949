"""A run's tokenizer: where it comes from, and the small BPE trained when there is none.

Real runs use the backbone's own tokenizer from a local directory (:func:`run_tokenizer`).
The tiny presets train their LM from scratch on the built-in dataset, so they need a
tokenizer that exists offline, decodes exactly back to the text (the label-mask check relies
on it) and keeps sequences short: byte-level BPE with digits split one by one (coordinates are
read digit by digit), trained deterministically on the dataset's own text and saved in the run
directory, so training, its held-out generation and ``vlab vlm eval`` all read the same one.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedTokenizerFast

from vlab.errors import ConfigError

if TYPE_CHECKING:
    from vlab.models.vlm.config import VLMRunConfig

SPECIALS = ["<|pad|>", "<|endoftext|>"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


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


def pad_token_id(tok: Any) -> int:
    """The id that pads batches: the tokenizer's pad token, else (Pythia has none) its eos.

    Padding is always masked out, so which id it is only has to agree between collation and
    generation; both take it from here.
    """
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def run_tokenizer(cfg: VLMRunConfig, out: Path) -> Any:
    """The LM tokenizer: ``data.tokenizer``, else the pretrained LM's own directory, else (a
    from-scratch LM) a BPE trained on the dataset's own text, saved under ``OUT/tokenizer`` so
    generation and later stages read the same one."""
    from transformers import AutoTokenizer

    from vlab.models.vlm.data.run_data import tokenizer_texts

    source = cfg.data.tokenizer or cfg.model.lm.pretrained
    if source is not None:
        field = "data.tokenizer" if cfg.data.tokenizer else "model.lm.pretrained"
        # transformers 5 builds an empty tokenizer from a model directory without one
        if not any((Path(source) / f).is_file() for f in TOKENIZER_FILES):
            raise ConfigError(
                field,
                f"{source} holds no tokenizer ({', '.join(TOKENIZER_FILES)}); set data.tokenizer",
            )
        try:
            return AutoTokenizer.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ConfigError(field, f"no tokenizer loads from {source}: {e}") from e
    saved = Path(out) / "tokenizer"
    if (saved / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(saved))
    texts = list(tokenizer_texts(cfg.data, n=600))
    layout = cfg.model.sequence.layout
    texts.extend(m for m in (layout.start, layout.row_break, layout.end, layout.text_sep) if m)
    tok = train_bpe_tokenizer(texts, vocab_size=cfg.model.lm.overrides.get("vocab_size", 384))
    tok.save_pretrained(str(saved))
    return tok
