"""Per-sample seeds and named streams."""

import pytest

from synthscene.plan import Stream, sample_seed, shard_ranges, stream_rng, stream_seed


def test_seeds_depend_only_on_run_seed_and_index():
    assert sample_seed(0, 5) == sample_seed(0, 5)
    assert len({sample_seed(0, i) for i in range(1000)}) == 1000
    assert sample_seed(1, 5) != sample_seed(0, 5)
    assert 0 <= sample_seed(7, 3) < 2**63
    with pytest.raises(ValueError, match=">= 0"):
        sample_seed(-1, 0)


def test_streams_are_independent_and_keep_their_numbers():
    seed = sample_seed(0, 0)
    # the numbers are part of every dataset made so far: a changed number changes the data
    assert stream_seed(seed, Stream.LAYOUT) == sample_seed(seed, 2)
    assert stream_seed(seed, Stream.CLASSIFIER_NOISE) == sample_seed(seed, 1)
    assert len({seed, stream_seed(seed, Stream.LAYOUT), stream_seed(seed, Stream.CLASSIFIER_NOISE)}) == 3
    assert stream_rng(seed, Stream.LAYOUT).random() == stream_rng(seed, Stream.LAYOUT).random()


def test_shard_ranges_cover_every_task_once():
    assert [list(r) for r in shard_ranges(5, 2)] == [[0, 1], [2, 3], [4]]
    assert shard_ranges(0, 4) == []
