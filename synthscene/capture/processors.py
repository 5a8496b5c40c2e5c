"""Attention capture as diffusers attention processors that wrap the existing ones.

The wrapped processor runs unchanged (SDPA stays in use and images are bit-identical
with and without capture). Forward hooks on the layer's ``to_q`` / ``to_k`` keep references
to the projections it computed, so probabilities are rebuilt from the same q and k
without projecting twice; this is done only for the layers, resolutions and steps the
store keeps, and only for the conditional half of the batch.
"""

from __future__ import annotations

import contextlib

import torch

from synthscene.capture.store import AttentionStore


class CaptureProcessor:
    """Runs ``original`` and adds this layer's attention probabilities to ``store``."""

    def __init__(self, original, store: AttentionStore, is_cross: bool):
        self.original = original
        self.store = store
        self.is_cross = is_cross
        self.query: torch.Tensor | None = None
        self.key: torch.Tensor | None = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        self.query = self.key = None
        out = self.original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                            attention_mask=attention_mask, temb=temb, **kwargs)
        if self.query is not None and self.key is not None:
            self._record(attn)
        self.query = self.key = None  # drop the references: they pin activations
        return out

    def _record(self, attn) -> None:
        store = self.store
        hw = store.layer_hw(self.query.shape[1])
        wanted = store.wants_cross(hw) if self.is_cross else store.wants_self(hw)
        if not wanted:
            return
        query, key = self.query, self.key
        if store.guidance:  # [uncond, cond]: keep the conditional half
            query = query[query.shape[0] // 2 :]
            key = key[key.shape[0] // 2 :]
        if self.is_cross and store.class_embeddings is not None:
            # class-prompt cross-attention: the class names' keys through this layer's own
            # projection; they are read only, the image never attends to them
            states = store.class_embeddings.to(query.dtype)
            if attn.norm_cross:
                states = attn.norm_encoder_hidden_states(states)
            key = attn.to_k(states)
        probs = attention_probabilities(query, key, attn.heads, attn.scale)
        store.add_cross(hw, probs) if self.is_cross else store.add_self(probs)


def attention_probabilities(query: torch.Tensor, key: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """Head-averaged softmax(q k^T * scale).

    Args:
        query: [B, N, heads * d]; key: [B, T, heads * d].
    Returns:
        float32 [B, N, T]; each row sums to 1.
    """
    batch, tokens, inner = query.shape
    d = inner // heads
    q = query.reshape(batch, tokens, heads, d).transpose(1, 2).float()
    k = key.reshape(batch, key.shape[1], heads, d).transpose(1, 2).float()
    probs = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)
    return probs.mean(dim=1)


@contextlib.contextmanager
def capture_attention(unet, store: AttentionStore):
    """Install capture processors on every attention layer of ``unet``; restore the
    original processors and remove every hook on exit, even after an error."""
    originals = dict(unet.attn_processors)
    handles = []
    wrapped = {}
    for name, processor in originals.items():
        attn = unet.get_submodule(name.removesuffix(".processor"))
        capture = CaptureProcessor(processor, store, is_cross=bool(attn.is_cross_attention))
        handles.append(attn.to_q.register_forward_hook(_keep_output(capture, "query")))
        handles.append(attn.to_k.register_forward_hook(_keep_output(capture, "key")))
        wrapped[name] = capture
    handles.append(unet.register_forward_pre_hook(_advance_step(store), with_kwargs=True))
    unet.set_attn_processor(wrapped)
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()
        unet.set_attn_processor(originals)


def _keep_output(capture: CaptureProcessor, attribute: str):
    def hook(module, inputs, output):
        if getattr(capture, attribute) is None:  # the first call is the layer's own projection
            setattr(capture, attribute, output)

    return hook


def _advance_step(store: AttentionStore):
    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        store.latent_hw = tuple(sample.shape[-2:])
        store.step += 1

    return hook


def encode_for_store(pipe, texts: list[str]) -> torch.Tensor:
    """Text-encoder states of ``texts`` (e.g. class prompts), as the pipeline encodes prompts."""
    ids = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids.to(pipe.text_encoder.device)
    with torch.no_grad():
        return pipe.text_encoder(ids)[0]



