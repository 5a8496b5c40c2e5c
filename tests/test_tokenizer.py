import pytest
from open_clip.tokenizer import SimpleTokenizer
from transformers import CLIPTokenizer

from synthscene.models.tokenizer import FULL_CLIP_MERGES, build_clip_tokenizer
from synthscene.world import CLASSES

# Token ids of real CLIP (openai/clip-vit-large-patch14, SD 1.x's tokenizer).
KNOWN_CLIP_IDS = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "a dog": [49406, 320, 1929, 49407],
}
WORLD_WORDS = ["a", "an", "photo", "picture", "of", "two", "three", "four", "and", "empty", "scene"] + [
    w for c in CLASSES for w in (c.name, c.plural, c.colour)
]


@pytest.fixture(scope="module")
def full():
    return build_clip_tokenizer()


@pytest.fixture(scope="module")
def shapes():
    return build_clip_tokenizer(10_000)


@pytest.mark.parametrize("text, ids", KNOWN_CLIP_IDS.items())
def test_full_tokenizer_matches_known_clip_ids(full, text, ids):
    assert full(text).input_ids == ids
    assert len(full) == 49408 and full.model_max_length == 77


def test_truncated_tokenizer_keeps_clip_ids_of_world_words(full, shapes):
    reference = SimpleTokenizer()  # open_clip's own implementation of CLIP's BPE
    for word in WORLD_WORDS:
        expected = reference.encode(word)
        assert len(expected) == 1, f"{word!r} should be one CLIP token"
        assert shapes(word, add_special_tokens=False).input_ids == expected == full(word, add_special_tokens=False).input_ids
    assert len(shapes) == 10_000 + 514
    assert shapes.bos_token_id == len(shapes) - 2 and shapes.eos_token_id == len(shapes) - 1


def test_save_and_load_round_trip(shapes, tmp_path):
    shapes.save_pretrained(tmp_path)
    loaded = CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "a picture of two purple stars and an orange ring"
    assert loaded(text).input_ids == shapes(text).input_ids
    assert loaded.model_max_length == 77


@pytest.mark.parametrize("num_merges", [0, FULL_CLIP_MERGES + 1])
def test_bad_merge_count(num_merges):
    with pytest.raises(ValueError, match="num_merges"):
        build_clip_tokenizer(num_merges)


def test_t5_tokenizer_reads_prompts_alike_before_and_after_save(tmp_path):
    """A model must read prompts after loading as in training: same ids and offsets, cased or not."""
    from transformers import AutoTokenizer

    from synthscene.models.tokenizer import build_t5_tokenizer

    built = build_t5_tokenizer(["a", "photo", "of", "red", "ball", "leaves"], 24)
    built.save_pretrained(tmp_path / "t5")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "t5", local_files_only=True)
    for prompt in ["a photo of a red ball", "A Photo of a Red ball, two leaves; 3!", "zebra  x"]:
        a, b = built(prompt, return_offsets_mapping=True), loaded(prompt, return_offsets_mapping=True)
        assert a.input_ids == b.input_ids and a["offset_mapping"] == b["offset_mapping"], prompt
        assert built.unk_token_id not in a.input_ids  # every character has a piece
    assert loaded.model_max_length == 24
