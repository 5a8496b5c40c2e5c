"""An offline CLIP BPE tokenizer, built from the merges file that ``open_clip`` ships.

CLIP's vocabulary is: the 256 byte symbols, the same with an end-of-word marker, one
token per merge in rank order, then <|startoftext|> and <|endoftext|>. Keeping only the
first ``num_merges`` merges therefore keeps every covered word's token id equal to real
CLIP's (a word whose merges all rank below ``num_merges`` tokenises identically); only the
two special tokens move to the end of the shorter vocabulary.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

from transformers import CLIPTokenizer

FULL_CLIP_MERGES = 48894  # 49408 ids = 512 byte symbols + 48894 merges + 2 special tokens
MODEL_MAX_LENGTH = 77


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible byte -> printable character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def clip_merges_file() -> Path:
    """The CLIP merges file shipped inside the ``open_clip`` package."""
    try:
        import open_clip
    except ImportError as err:  # pragma: no cover - open_clip is a declared dependency
        raise ImportError("building the CLIP tokenizer needs the open_clip_torch package") from err
    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"open_clip's merges file is missing: {path}")
    return path


def build_clip_tokenizer(num_merges: int = FULL_CLIP_MERGES, merges_path: str | Path | None = None) -> CLIPTokenizer:
    """A ``transformers.CLIPTokenizer`` with the first ``num_merges`` CLIP merges.

    Args:
        num_merges: 1..48894; the vocabulary has ``num_merges + 514`` entries.
        merges_path: a CLIP ``bpe_simple_vocab_16e6.txt.gz``; default: open_clip's copy.
    """
    if not 1 <= num_merges <= FULL_CLIP_MERGES:
        raise ValueError(f"num_merges must be in [1, {FULL_CLIP_MERGES}], got {num_merges}")
    with gzip.open(merges_path or clip_merges_file(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1 : 1 + num_merges]  # line 0 is a version header
    byte_symbols = list(_bytes_to_unicode().values())
    tokens = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=MODEL_MAX_LENGTH)
    return tokenizer


# T5's special ids: pad 0, end-of-sequence 1, unknown 2 (as in every T5 / FLUX / SD3 checkpoint)
T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")


def build_t5_tokenizer(words: list[str], model_max_length: int = 256):
    """A small T5-style tokenizer (SentencePiece unigram, "▁" word boundaries, case-sensitive as
    T5's) built offline with ``tokenizers``: one piece per word of ``words`` and single
    characters (letters of both cases, digits, punctuation) as fallback, so any text still
    tokenises and a word outside ``words`` is spelt letter by letter. No normalizer: T5's
    tokenizer class does not keep one through save_pretrained / from_pretrained, and a model
    must read prompts after loading as it did in training. The hub's T5 tokenizers cannot be
    fetched here; the pipelines' code paths (offsets, padding, truncation, save / load) are
    the same."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    lower = "abcdefghijklmnopqrstuvwxyz"
    characters = lower + lower.upper() + "0123456789.,;:!?'\"()-_/&"
    pieces = [(token, 0.0) for token in T5_SPECIAL_TOKENS]
    pieces += [("▁" + w, -1.0) for w in dict.fromkeys(words)]
    pieces += [("▁", -4.0)] + [(c, -6.0) for c in characters]
    backend = Tokenizer(models.Unigram(pieces, unk_id=2))
    # as transformers' T5 tokenizer rebuilds it on loading: words split on whitespace, then "▁"
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           extra_ids=0, model_max_length=model_max_length)
