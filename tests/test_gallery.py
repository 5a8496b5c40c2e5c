import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from synthscene.records import Instances, Sample
from synthscene.report.gallery import _card, overlay, write_gallery

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_prompts_and_names_are_escaped():
    sample = Sample(index=0, seed=1, caption='<script>alert("x")</script>', image=np.zeros((4, 4, 3), np.uint8),
                    instances=Instances.empty(4, 4), semantic=np.zeros((4, 4), np.uint8))
    card = _card("0000001", sample, ["<b>ball</b>"])
    assert "<script>" not in card and "&lt;script&gt;" in card


def test_overlay_colours_only_labelled_pixels():
    image = np.full((2, 2, 3), 100, np.uint8)
    semantic = np.array([[0, 1], [255, 0]], np.uint8)
    out = overlay(image, semantic)
    assert (out[0, 0] == 100).all() and (out[1, 1] == 100).all()
    assert not (out[0, 1] == 100).all() and not (out[1, 0] == 100).all()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test installs it when run as root)")
@pytest.mark.slow
def test_gallery_renders_in_headless_chromium(tiny_run, tmp_path):
    page = write_gallery(tiny_run, tmp_path / "gallery")
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,700",
                    f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.array(Image.open(shot).convert("RGB")).astype(int)
    # the page background is #fafafa; the images and the class-colour overlays must show
    not_background = np.abs(pixels - 250).sum(axis=2) > 30
    assert not_background.mean() > 0.05
    ball_colour = np.array([128, 0, 0])  # VOC colour of class 1, blended into overlays
    redness = (pixels[..., 0] - pixels[..., 1] > 40) & (pixels[..., 0] - pixels[..., 2] > 40)
    assert redness.sum() > 20, f"no {ball_colour} overlay pixels found"


def test_each_instance_shows_its_check_scores_escaped():
    instances = Instances.from_boxes([[0, 0, 2, 2], [1, 1, 3, 3]], [0, 1], [0.9, 0.3],
                                     {"class_margin": np.array([0.25, np.nan], np.float32)})
    sample = Sample(0, 1, "two", np.zeros((4, 4, 3), np.uint8), instances)
    card = _card("0000000", sample, ["<i>ball</i>", "leaf"])
    assert "<th>class_margin</th>" in card and "<td>0.25</td>" in card and "&ndash;" in card  # NaN: not computed
    assert card.count('data-score="') == 4 and 'data-class="1" data-score="0.3000"' in card
    assert "<i>ball</i>" not in card and "&lt;i&gt;ball&lt;/i&gt;" in card


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test installs it when run as root)")
@pytest.mark.slow
def test_gallery_filters_by_class_and_score_in_headless_chromium(tiny_run, tmp_path):
    from synthscene.store import open_run

    page = write_gallery(tiny_run, tmp_path / "gallery")
    samples = list(open_run(tiny_run).samples())
    scores = np.concatenate([s.instances.score for s in samples])
    classes = np.concatenate([s.instances.class_id for s in samples])
    cls = int(np.bincount(classes).argmax())
    low = round(float(np.median(scores[classes == cls])), 2)
    expected = sum(bool(((s.instances.class_id == cls) & (s.instances.score >= low)).any()) for s in samples)
    assert 0 < expected
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          f"{page.as_uri()}#class={cls}&min_score={low}"],
                         check=True, capture_output=True, timeout=120, text=True).stdout
    assert f'<span id="shown">{expected}</span>' in dom
    hidden = dom.count('class="sample" style="display: none;"')
    assert hidden == len(samples) - expected
