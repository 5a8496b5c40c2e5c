import pytest

from synthscene.models.tokenizer import build_clip_tokenizer
from synthscene.models.tokens import attention_word, replace_phrase, token_indices, without_phrase


@pytest.fixture(scope="module")
def tokenizer():
    return build_clip_tokenizer()


@pytest.mark.parametrize("name, word", [("bow_(weapon)", "bow"), ("hair_dryer", "hair dryer"), ("ball", "ball"),
                                        ("bat_(animal)", "bat")])
def test_attention_word(name, word):
    assert attention_word(name) == word


def test_attention_word_refuses_bare_qualifier():
    with pytest.raises(ValueError, match="no noun"):
        attention_word("(weapon)")


@pytest.mark.parametrize("prompt, phrase, tokens", [
    ("a photo of a ball", "ball", ["ball</w>"]),
    ("a photo of two balls and a leaf", "ball", ["balls</w>"]),
    ("a Hairdryer on a table", "hairdryer", ["hair", "dryer</w>"]),
    ("a photo of a hair dryer", "hair dryer", ["hair</w>", "dryer</w>"]),
    ("a football and a ball", "ball", ["ball</w>"]),  # whole words only
])
def test_token_indices(tokenizer, prompt, phrase, tokens):
    ids = tokenizer(prompt).input_ids
    positions = token_indices(tokenizer, prompt, phrase)
    assert 0 not in positions  # never BOS
    assert tokenizer.convert_ids_to_tokens([ids[i] for i in positions]) == tokens


def test_missing_name_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="does not occur"):
        token_indices(tokenizer, "a photo of a leaf", "ball")


def test_name_past_77_tokens_is_an_error(tokenizer):
    prompt = "a " * 90 + "ball"
    with pytest.raises(ValueError, match="beyond the 77-token window"):
        token_indices(tokenizer, prompt, "ball")


def test_replace_and_cut_a_class_phrase():
    prompt = "a photo of two hair dryers and a cup"
    assert replace_phrase(prompt, "hair dryer", "box") == "a photo of two box and a cup"
    assert without_phrase(prompt, "cup") == "a photo of two hair dryers and a"
    assert replace_phrase("a Cup on a cupboard", "cup", "ring") == "a ring on a cupboard"  # whole words only
    with pytest.raises(ValueError, match="does not occur"):
        replace_phrase(prompt, "giraffe", "box")
