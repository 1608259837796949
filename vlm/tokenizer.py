"""A run's tokenizer: the backbone's own from a local directory, else a small BPE trained on
the run's data and saved in the run directory (:func:`run_tokenizer`), so training, its
held-out generation and ``vlab vlm eval`` all read the same one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedTokenizerFast

from vlab.errors import ConfigError
from vlab.models.vlm.tokenizer import TOKENIZER_FILES, train_bpe_tokenizer

if TYPE_CHECKING:
    from vlab.vlm.config import VLMRunConfig


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
