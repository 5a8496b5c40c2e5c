"""Which token positions of a prompt belong to a class name (from the tokenizer's offsets).

Counting words instead breaks on names that split into several tokens ("hairdryer" is
"hair" + "dryer"), so positions come from character offsets: every token overlapping
the name's characters belongs to it, and its maps are averaged. BOS is never included.
"""

from __future__ import annotations

import re


def attention_word(name: str) -> str:
    """The words of a category name that should carry its attention: LVIS-style names
    keep the noun and drop the disambiguator ("bow_(weapon)" -> "bow"); underscores
    become spaces ("hair_dryer" -> "hair dryer")."""
    noun = re.sub(r"_?\([^)]*\)", "", name).replace("_", " ").strip()
    if not noun:
        raise ValueError(f"category name {name!r} has no noun outside its parentheses")
    return noun


def token_indices(tokenizer, prompt: str, phrase: str, start: int = 0) -> list[int]:
    """Positions in ``tokenizer(prompt).input_ids`` of the first whole-word occurrence of
    ``phrase`` at or after character ``start`` (case-insensitive; a plural "s"/"es" may
    follow the last word).

    Raises:
        ValueError: the phrase is not in the prompt, or lies beyond the 77-token window.
    """
    match = _find(prompt, phrase, start)
    encoding = tokenizer(prompt, return_offsets_mapping=True, truncation=True)
    positions = [
        i for i, (begin, end) in enumerate(encoding["offset_mapping"])
        if end > begin and begin < match.end() and end > match.start()
    ]
    if not positions:
        raise ValueError(f"class name {phrase!r} lies beyond the {tokenizer.model_max_length}-token window of {prompt!r}")
    return positions


def without_phrase(prompt: str, phrase: str) -> str:
    """``prompt`` with the first whole-word occurrence of ``phrase`` (as ``token_indices``
    finds it) cut out: what the prompt says without that class."""
    return replace_phrase(prompt, phrase, "")


def replace_phrase(prompt: str, phrase: str, replacement: str) -> str:
    """``prompt`` with the first whole-word occurrence of ``phrase`` (a plural ending
    included) replaced by ``replacement``: what the prompt would say of another class."""
    match = _find(prompt, phrase)
    return " ".join((prompt[: match.start()] + replacement + prompt[match.end() :]).split())


def _find(prompt: str, phrase: str, start: int = 0) -> re.Match:
    pattern = re.compile(rf"(?<![\w]){re.escape(phrase)}(?:e?s)?(?![\w])", flags=re.IGNORECASE)
    match = pattern.search(prompt, start)
    if match is None:
        raise ValueError(f"class name {phrase!r} does not occur in the prompt {prompt!r}")
    return match
