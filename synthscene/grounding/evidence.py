"""Where each of an image's named classes is, asked of the generator itself.

The head tells an image's named classes apart by how its queries resemble their text
embeddings, a map learnt on the base classes only: it places a never-seen class poorly
(session 26: in prompts naming two classes, a third of the objects found got the wrong
class). The generator has seen every class. Its denoising error under each named class (the
diffusion classifier that text2labels' 'ours' recipe uses, ``synthscene.label.classify``) is
lower where that class explains the pixels, for a novel class as for a base one. The head
reads those errors, relative to the image's other named classes, as one more class term.
"""

from __future__ import annotations

import torch

from synthscene.plan import Stream, sample_generator, stream_seed

# text2labels' defaults for the embedded model (examples/shapes-text2labels.yaml): high noise
# levels, where the denoiser must take an object's look from the text rather than the image
TIMESTEPS = (850, 950)
REPEATS = 3


@torch.no_grad()
def class_evidence(pipe, latents: torch.Tensor, words: list[list[str]], seeds: list[int],
                   timesteps: tuple[int, ...] = TIMESTEPS, repeats: int = REPEATS) -> torch.Tensor:
    """float [B, K, h, w] (K: the most classes an image names; padding 0): per image and named
    class, how much better that class explains each latent pixel than the image's named classes
    on average, in units of the image's spread. An image naming one class gets zeros (there is
    nothing to tell apart).

    Args:
        latents: [B, c, h, w] (nearly) clean latents: the last denoising step's input.
        words: per image, the words of its named classes, in the prompt's order.
        seeds: per image, its sample seed (the classifier's noise is drawn from it, so an
            image's evidence does not depend on its batch).
    """
    from synthscene.label.classify import denoising_errors
    from synthscene.models.families import family_of

    family = family_of(pipe)
    evidence = torch.zeros(len(words), max(len(w) for w in words), *latents.shape[-2:])
    for b, (named, seed) in enumerate(zip(words, seeds)):
        if len(named) < 2:
            continue
        generator = sample_generator(stream_seed(seed, Stream.CLASSIFIER_NOISE))
        errors = denoising_errors(family, latents[b], family.encode_texts(named), timesteps, repeats, generator)
        relative = errors.mean(0, keepdim=True) - errors
        evidence[b, : len(named)] = relative / relative.std().clamp_min(1e-8)
    return evidence
