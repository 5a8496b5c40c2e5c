"""Outputs appear whole or not at all."""

import pytest

from synthscene.io import OutputExistsError, atomic_output_dir, refuse_nonempty_output, write_json, write_text


def test_a_failed_output_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_output_dir(out) as tmp:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("crash")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with atomic_output_dir(out) as tmp:
        (tmp / "whole.txt").write_text("x")
    assert [p.name for p in out.iterdir()] == ["whole.txt"]
    with pytest.raises(OutputExistsError, match="--overwrite"):
        with atomic_output_dir(out):
            pass


def test_refuse_nonempty_output_says_what_to_do(tmp_path):
    refuse_nonempty_output(tmp_path / "missing")
    refuse_nonempty_output(tmp_path)  # empty
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputExistsError, match="use --resume"):
        refuse_nonempty_output(tmp_path, "use --resume")


def test_atomic_files_replace_whole_and_leave_no_temporary(tmp_path):
    write_text(tmp_path / "a.txt", "one")
    write_json(tmp_path / "a.json", {"b": 1, "a": 2}, sort_keys=True)
    write_text(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two" and (tmp_path / "a.json").read_text() == '{"a": 2, "b": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.txt"]
    with pytest.raises(FileNotFoundError):
        write_text(tmp_path / "no" / "such" / "dir.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.txt"]
