"""Which family a model is, and where a prompt's words sit in the text axis its attention sees.

Torch-free: planning checks prompts (lengths, class words) from a model's configs and
tokenizers alone, before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from synthscene.models.tokens import token_indices

CLIP_LENGTH = 77
# T5 tokens the pipelines encode by default (max_sequence_length); a smaller model's T5
# tokenizer may say fewer (its model_max_length), and then that is used
SD3_T5_LENGTH = 256  # StableDiffusion3Pipeline's default
FLUX_T5_LENGTH = 512  # FluxPipeline's


def family_name(denoiser_class: str, config: dict) -> str:
    """"sd", "sdxl", "sd3" or "flux" for a denoiser class name and its config."""
    if denoiser_class == "UNet2DConditionModel":
        return "sdxl" if config.get("addition_embed_type") == "text_time" else "sd"
    if denoiser_class == "SD3Transformer2DModel":
        return "sd3"
    if denoiser_class == "FluxTransformer2DModel":
        return "flux"
    raise ValueError(f"unknown model family: denoiser {denoiser_class} (synthscene knows UNet2DConditionModel for "
                     "SD 1.x / 2.x / SDXL, SD3Transformer2DModel for SD3 and FluxTransformer2DModel for FLUX)")


def t5_length(tokenizer, default: int) -> int:
    """T5 tokens a pipeline should encode: its default, or fewer when the tokenizer says so."""
    return min(default, int(getattr(tokenizer, "model_max_length", default) or default))


# ---- where words sit in the captured text axis -----------------------------------------------


@dataclass(frozen=True)
class TextPart:
    """One encoder's run of tokens in the text axis the denoiser attends to."""

    encoder: str  # as a user knows it: "CLIP", "CLIP-L / CLIP-G", "T5"
    tokenizer: object  # None: zeros in the encoder's place (SD3 loaded without its T5); no words there
    offset: int  # where its first token sits in the text axis
    length: int  # tokens it contributes (its padded length)
    read: bool = True  # False: its words are not read (``TextLayout.reading``); it still bounds prompts

    @property
    def kind(self) -> str:
        """"clip" or "t5": the kind of encoder, as a spec names it (``word_encoders``)."""
        return "t5" if self.encoder == "T5" else "clip"

    @property
    def has_words(self) -> bool:
        return self.read and self.tokenizer is not None


WORD_ENCODERS = ("all", "clip", "t5")


@dataclass(frozen=True)
class TextLayout:
    """The text axis of a family's attention: SD / SDXL: CLIP's 77 tokens; SD3: 77 CLIP tokens
    then T5's; FLUX: T5's alone (its CLIP gives only the pooled vector, still checked for length)."""

    parts: tuple[TextPart, ...]
    checked_only: tuple[TextPart, ...] = ()  # encoders whose tokens are not in the axis

    @property
    def length(self) -> int:
        return sum(p.length for p in self.parts)

    def check(self, prompt: str, what: str = "prompt") -> None:
        """Refuse a prompt some encoder of the family would truncate, saying which and where."""
        for part in self.parts + self.checked_only:
            if part.tokenizer is None:
                continue
            ids = part.tokenizer(prompt, verbose=False).input_ids
            if len(ids) > part.length:
                kept = part.tokenizer.decode(ids[: part.length - 1], skip_special_tokens=True)
                raise ValueError(f"{what} is longer than {part.length} tokens for {part.encoder} ({len(ids)}): the "
                                 f"{part.encoder} encoder truncates it after {kept[-40:]!r} ({prompt[:80]!r}...)")

    def reading(self, encoders: str, what: str = "word_encoders") -> TextLayout:
        """This layout with the words read from every encoder's tokens ("all") or only from the
        "clip" or the "t5" part (a model may localise words in one encoder's tokens only). The
        axis is unchanged: positions keep their place in it, and every encoder still bounds
        the prompt's length. ``what``: the setting, as the error names it."""
        if encoders not in WORD_ENCODERS:
            raise ValueError(f"{what} {encoders!r}: expected one of {', '.join(WORD_ENCODERS)}")
        if encoders == "all":
            return self
        if not any(p.kind == encoders and p.tokenizer is not None for p in self.parts):
            present = [k for k in WORD_ENCODERS[1:] if any(p.kind == k and p.tokenizer is not None
                                                           for p in self.parts)]
            missing = (f"this model's {encoders.upper()} tokens are zeros (it was loaded without that encoder)"
                       if any(p.kind == encoders for p in self.parts)
                       else f"this model's attention sees no {encoders.upper()} tokens")
            raise ValueError(f"{what} {encoders!r}: {missing}; use "
                             + " or ".join(repr(k) for k in ("all", *present)))
        return TextLayout(tuple(replace(p, read=p.kind == encoders) for p in self.parts), self.checked_only)

    def positions(self, prompt: str, phrase: str, start: int = 0) -> list[int]:
        """Positions in the text axis of ``phrase``'s first whole-word occurrence at or after
        character ``start``: in every encoder's part that is read, so maps average over them."""
        return [part.offset + i for part in self.parts if part.has_words
                for i in token_indices(part.tokenizer, prompt, phrase, start)]

    def object_tokens(self, prompt: str, phrases: list[str], class_words_only: bool = False) -> list[int]:
        """Every position from the first class word on, in every part read (the words, end-of-text
        and padding: where a prompt's objects are, see ``label.attention_maps.objectness_map``);
        with ``class_words_only`` the class words' own positions alone."""
        tokens = []
        for part in self.parts:
            if not part.has_words:
                continue
            per_phrase = [token_indices(part.tokenizer, prompt, phrase) for phrase in phrases]
            if class_words_only:
                tokens += sorted({part.offset + i for indices in per_phrase for i in indices})
            else:
                tokens += range(part.offset + min(indices[0] for indices in per_phrase), part.offset + part.length)
        return tokens


def text_layout(family: str, tokenizers: dict) -> TextLayout:
    """The family's ``TextLayout`` from its tokenizers ({"tokenizer": ..., "tokenizer_2": ..., "tokenizer_3": ...})."""
    if family in ("sd", "sdxl"):
        return TextLayout((TextPart("CLIP", tokenizers["tokenizer"], 0, CLIP_LENGTH),))
    if family == "sd3":
        clip = TextPart("CLIP-L / CLIP-G", tokenizers["tokenizer"], 0, CLIP_LENGTH)
        t5 = tokenizers.get("tokenizer_3")  # SD3 runs without its T5: the pipeline puts zeros there
        return TextLayout((clip, TextPart("T5", t5, CLIP_LENGTH, t5_length(t5, SD3_T5_LENGTH))))
    if family == "flux":
        t5 = tokenizers["tokenizer_2"]
        return TextLayout((TextPart("T5", t5, 0, t5_length(t5, FLUX_T5_LENGTH)),),
                          checked_only=(TextPart("CLIP", tokenizers["tokenizer"], 0, CLIP_LENGTH),))
    raise ValueError(f"unknown model family {family!r}")
