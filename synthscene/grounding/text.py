"""Class-name embeddings from the pipeline's own frozen text encoder.

A class is the mean of its name's token states inside "a photograph of a {name}" (InstaGen's
template): the head scores queries against these, so any name the tokenizer can spell is a
class, seen in training or not.
"""

from __future__ import annotations

import torch

from synthscene.models.tokens import attention_word, token_indices

TEMPLATE = "a photograph of a {name}"


@torch.no_grad()
def class_embeddings(pipe, names: list[str], template: str = TEMPLATE) -> torch.Tensor:
    """float [K, D]: one embedding per class name (LVIS-style names use their noun)."""
    words = [attention_word(n) for n in names]
    prompts = [template.format(name=w) for w in words]
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids.to(pipe.text_encoder.device)
    states = pipe.text_encoder(ids)[0].float().cpu()
    return torch.stack([states[k, token_indices(pipe.tokenizer, p, w)].mean(0)
                        for k, (p, w) in enumerate(zip(prompts, words))])
