"""Word-level tokenizer for the tiny backbone, built with ``tokenizers`` and wrapped as a transformers tokenizer,
so downstream code uses the ordinary transformers API whichever backbone is chosen."""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .vocab import all_words


def build_tokenizer(extra_words: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """``extra_words``: words of non-world text (real preference data) to give their own token. They come after
    the world's words, so world token ids never move."""
    words = all_words()
    known = set(words)
    words += [w for w in dict.fromkeys(extra_words) if w not in known]
    vocab = {w: i for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]"
    )
    tok.padding_side = "right"
    return tok
