"""Attention capture as diffusers attention processors that wrap the existing ones.

The wrapped processor runs unchanged (SDPA, or whatever ``dispatch_attention_fn`` backend is
active, stays in use and images are bit-identical with and without capture). Forward hooks on
the layer's projections keep references to the q and k it computed, so probabilities are
rebuilt from the same tensors without projecting twice; this is done only for the layers,
resolutions and steps the store keeps, and only for the conditional half of the batch.

Which layers exist and what kind they are comes from the denoiser's table
(``synthscene.models.adapters.attention_layers``): UNet self- and cross-attention, and the
joint attention of SD3 / FLUX, where image and text tokens share one softmax. There the
image -> text probabilities are the text block of that softmax renormalised per head (the same
as a softmax over the text keys alone), and image -> image the image block, after the layer's
own q / k normalisation and, in FLUX, its rotary position embedding.
"""

from __future__ import annotations

import contextlib

import torch

from synthscene.capture.store import AttentionStore
from synthscene.models.adapters import AttentionLayer, attention_layers


class CaptureProcessor:
    """Runs ``original`` and adds this UNet layer's attention probabilities to ``store``."""

    def __init__(self, original, store: AttentionStore, is_cross: bool):
        self.original = original
        self.store = store
        self.is_cross = is_cross
        self.kept: dict[str, torch.Tensor] = {}

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        self.kept = {}
        out = self.original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                            attention_mask=attention_mask, temb=temb, **kwargs)
        if "to_q" in self.kept and "to_k" in self.kept:
            self._record(attn)
        self.kept = {}  # drop the references: they pin activations
        return out

    def _record(self, attn) -> None:
        store = self.store
        hw = store.layer_hw(self.kept["to_q"].shape[1])
        wanted = store.wants_cross(hw) if self.is_cross else store.wants_self(hw)
        if not wanted:
            return
        query, key = conditional(store, self.kept["to_q"]), conditional(store, self.kept["to_k"])
        if self.is_cross and store.class_embeddings is not None:
            # class-prompt cross-attention: the class names' keys through this layer's own
            # projection; they are read only, the image never attends to them
            states = store.class_embeddings.to(query.dtype)
            if attn.norm_cross:
                states = attn.norm_encoder_hidden_states(states)
            key = attn.to_k(states)
        # through the layer's q / k norm when it has one (SD3.5's image-only attention)
        query = _heads(query, attn.heads, getattr(attn, "norm_q", None))
        key = _heads(key, attn.heads, getattr(attn, "norm_k", None))
        probs = head_mean_softmax(query, key, attn.scale)
        store.add_cross(hw, probs) if self.is_cross else store.add_self(probs)


class JointCaptureProcessor:
    """Runs ``original`` on a joint-attention layer (SD3, FLUX) and adds its image -> text (and,
    when kept, image -> image) probabilities to ``store``, rebuilt from the projections the layer
    computed, normalised and rotated as the layer does it."""

    def __init__(self, original, store: AttentionStore, layer: AttentionLayer):
        self.original = original
        self.store = store
        self.layer = layer
        self.kept: dict[str, torch.Tensor] = {}

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None,
                 **kwargs):
        self.kept = {}
        if image_rotary_emb is not None:  # FLUX; SD3's processors take no position embedding
            kwargs["image_rotary_emb"] = image_rotary_emb
        out = self.original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                            attention_mask=attention_mask, **kwargs)
        if "to_q" in self.kept and "to_k" in self.kept:
            self._record(attn, image_rotary_emb)
        self.kept = {}
        return out

    def _record(self, attn, rotary) -> None:
        store, kept = self.store, self.kept
        text = store.text_tokens if self.layer.kind == "single" else 0
        hw = store.layer_hw(kept["to_q"].shape[1] - text)
        want_cross, want_self = store.wants_cross(hw), store.wants_self(hw)
        if not (want_cross or want_self):
            return
        heads = attn.heads
        # slice before the norms and RoPE (both act per token): only what is needed is computed
        query = _heads(conditional(store, kept["to_q"])[:, text:], heads, attn.norm_q)
        keys = conditional(store, kept["to_k"])
        key = _heads(keys[:, text:], heads, attn.norm_k) if want_self else None
        if self.layer.kind == "single":  # one [text, image] sequence through shared projections
            text_key = _heads(keys[:, :text], heads, attn.norm_k) if want_cross else None
        elif want_cross and "add_k_proj" in kept:
            text_key = _heads(conditional(store, kept["add_k_proj"]), heads, getattr(attn, "norm_added_k", None))
            text = text_key.shape[1]
        else:
            text_key = None
        if rotary is not None:  # FLUX: positions cover [text, image]
            from diffusers.models.embeddings import apply_rotary_emb

            cos, sin = rotary
            text = text or store.text_tokens
            query = apply_rotary_emb(query, (cos[text:], sin[text:]), sequence_dim=1)
            if key is not None:
                key = apply_rotary_emb(key, (cos[text:], sin[text:]), sequence_dim=1)
            if text_key is not None:
                text_key = apply_rotary_emb(text_key, (cos[:text], sin[:text]), sequence_dim=1)
        scale = getattr(attn, "scale", None) or query.shape[-1] ** -0.5
        if text_key is not None:
            store.add_cross(hw, head_mean_softmax(query, text_key, scale))
        if key is not None:
            store.add_self(head_mean_softmax(query, key, scale))


def conditional(store: AttentionStore, tensor: torch.Tensor) -> torch.Tensor:
    """The conditional half of a guided batch ([uncond, cond], as every diffusers pipeline)."""
    return tensor[tensor.shape[0] // 2 :] if store.guidance else tensor


def _heads(projection: torch.Tensor, heads: int, norm) -> torch.Tensor:
    """[B, S, heads * d] -> [B, S, heads, d], through the layer's q / k norm when it has one."""
    split = projection.unflatten(-1, (heads, projection.shape[-1] // heads))
    return norm(split) if norm is not None else split


def head_mean_softmax(query: torch.Tensor, key: torch.Tensor, scale: float) -> torch.Tensor:
    """Head-averaged softmax(q k^T * scale) of q [B, N, heads, d] and k [B, T, heads, d]:
    float32 [B, N, T]; each row sums to 1.

    On a CPU one head at a time: its [N, T] block stays in cache (4x faster than one
    [heads, N, T] tensor at SD3's 4096 x 333); on a GPU all heads in one batched product.
    The scale is folded into q."""
    query = query.float() * scale
    key = key.float()
    if query.device.type != "cpu":
        return torch.softmax(query.transpose(1, 2) @ key.permute(0, 2, 3, 1), dim=-1).mean(dim=1)
    heads = query.shape[2]
    total = torch.zeros(query.shape[0], query.shape[1], key.shape[1], device=query.device)
    for head in range(heads):
        total += torch.softmax(query[:, :, head] @ key[:, :, head].transpose(-1, -2), dim=-1)
    return total / heads


def attention_probabilities(query: torch.Tensor, key: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """Head-averaged softmax(q k^T * scale).

    Args:
        query: [B, N, heads * d]; key: [B, T, heads * d].
    Returns:
        float32 [B, N, T]; each row sums to 1.
    """
    return head_mean_softmax(_heads(query, heads, None), _heads(key, heads, None), scale)


# the projections whose outputs a processor keeps, per layer kind
_KEPT = {"self": ("to_q", "to_k"), "cross": ("to_q", "to_k"), "joint": ("to_q", "to_k", "add_k_proj"),
         "single": ("to_q", "to_k")}


@contextlib.contextmanager
def capture_attention(denoiser, store: AttentionStore):
    """Install capture processors on every attention layer of ``denoiser`` (a UNet, SD3's or
    FLUX's transformer); restore the original processors and remove every hook on exit, even
    after an error."""
    layers = attention_layers(denoiser)
    for layer in layers:
        if getattr(layer.module, "fused_projections", False):
            raise ValueError(f"attention layer {layer.name} has fused q / k / v projections; capture reads the "
                             "separate ones: call unfuse_qkv_projections() on the denoiser first")
    originals = dict(denoiser.attn_processors)
    # a transformer's layers all see the one token grid: there is no resolution to choose
    store.every_resolution = any(layer.kind in ("joint", "single") for layer in layers)
    handles = []
    wrapped = {}
    for layer in layers:
        processor = originals[layer.name]
        if layer.kind in ("joint", "single"):
            capture = JointCaptureProcessor(processor, store, layer)
        else:
            capture = CaptureProcessor(processor, store, is_cross=layer.kind == "cross")
        for projection in _KEPT[layer.kind]:
            handles.append(getattr(layer.module, projection).register_forward_hook(_keep_output(capture, projection)))
        wrapped[layer.name] = capture
    handles.append(denoiser.register_forward_pre_hook(_advance_step(store), with_kwargs=True))
    denoiser.set_attn_processor(wrapped)
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()
        denoiser.set_attn_processor(originals)


def _keep_output(capture, projection: str):
    def hook(module, inputs, output):
        capture.kept.setdefault(projection, output)  # the first call is the layer's own projection

    return hook


def _advance_step(store: AttentionStore):
    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        ids = kwargs.get("img_ids")
        if ids is not None:  # FLUX: packed tokens; the grid is in their position ids
            store.latent_hw = (int(ids[:, 1].max()) + 1, int(ids[:, 2].max()) + 1)
        else:
            store.latent_hw = tuple(sample.shape[-2:])
        states = kwargs.get("encoder_hidden_states")
        store.text_tokens = 0 if states is None else int(states.shape[1])
        store.step += 1

    return hook


def encode_for_store(pipe, texts: list[str]) -> torch.Tensor:
    """Text-encoder states of ``texts`` (e.g. class prompts), as the pipeline encodes prompts."""
    from synthscene.models.families import family_of

    with torch.no_grad():
        return family_of(pipe).encode_texts(texts).states
