"""MosaicFusion: layout, joint diffusion (batched = sequential), per-region instances, bad input."""

import numpy as np
import pytest
import torch

from synthscene.methods.mosaic import generate_mosaic, plan, plan_layout, region_prompt
from synthscene.models.info import pipeline_info
from synthscene.models.load import load_pipeline
from synthscene.spec import MosaicSpec, SpecError, load_spec, validate_spec
from synthscene.store import from_record, open_run
from tests.helpers import make_run as generate_mosaics


def read_records(out):
    return list(open_run(out).records())


def load_sample(shard, record):
    return from_record(record, shard)


@pytest.fixture(scope="module")
def tiny_pipe(tiny_pipeline_dir):
    return load_pipeline(str(tiny_pipeline_dir))


@pytest.fixture(scope="module")
def tiny_info(tiny_pipe):
    return pipeline_info(tiny_pipe)


@pytest.mark.parametrize("grid", [(1, 1), (1, 2), (2, 2), (3, 3)])
def test_layout_covers_the_canvas_and_windows_contain_cells(tiny_info, grid):
    layout = plan_layout(MosaicSpec(grid=grid), tiny_info, np.random.default_rng(1))
    weights = layout.weights()
    assert weights.shape == (grid[0] * grid[1], *layout.canvas)
    assert torch.allclose(weights.sum(0), torch.ones(layout.canvas), atol=1e-5)
    for (y0, y1, x0, x1), (wy, wx) in zip(layout.cells, layout.windows):
        assert weights[:, y0:y1, x0:x1].sum() > 0
        assert wy <= y0 and y1 <= wy + layout.window[0] and wx <= x0 and x1 <= wx + layout.window[1]
    owners = layout.owners()
    assert owners.shape == layout.canvas and set(np.unique(owners)) == set(range(grid[0] * grid[1]))
    # MosaicFusion's default overlap scaled to 16 px regions: 2 px; the canvas rounds up to 8 px
    assert all(side % 8 == 0 for side in layout.canvas)


def test_split_points_are_jittered_and_reproducible(tiny_info):
    layouts = [plan_layout(MosaicSpec(), tiny_info, np.random.default_rng(s)) for s in (0, 0, 1, 2)]
    assert layouts[0] == layouts[1]
    assert len({layout.cells for layout in layouts}) >= 2
    fixed = plan_layout(MosaicSpec(jitter=(1.0, 1.0)), tiny_info, np.random.default_rng(5))
    assert fixed.cells[0][1] - fixed.cells[0][0] == fixed.cells[2][1] - fixed.cells[2][0]


@pytest.mark.parametrize("grid, region, jitter", [((2, 2), 24, (0.75, 1.25)), ((3, 2), 40, (0.5, 1.5)),
                                                  ((1, 3), 30, (0.9, 1.1)), ((4, 4), 24, (0.75, 1.25))])
def test_the_widest_window_bound_holds_for_every_jitter(tiny_info, grid, region, jitter):
    """SD3's limit is checked once from ``_widest_cell``, before any sample's split points are drawn."""
    from dataclasses import replace

    from synthscene.methods.mosaic import _widest_cell

    params = MosaicSpec(grid=grid, region_size=(region, region), jitter=jitter)
    info = replace(tiny_info, vae_factor=1)
    windows = [plan_layout(params, info, np.random.default_rng(seed)).window for seed in range(300)]
    layout = plan_layout(params, info, np.random.default_rng(0))
    half = [round(region * f) // 2 for f in (48 / 512, 64 / 512)]
    step = info.latent_multiple  # windows round up to what the denoiser divides by
    bound = [min(side, -(-_widest_cell(side, n, jitter, h) // step) * step)
             for side, n, h in zip(layout.canvas, grid, half)]
    assert max(w[0] for w in windows) <= bound[0] and max(w[1] for w in windows) <= bound[1]
    # and not loose: 300 draws come within rounding and 5 % of it (both extremes at once are rare)
    assert all(b - max(w[i] for w in windows) <= 2 + 0.05 * b for i, b in enumerate(bound))
    with pytest.raises(ValueError, match="position embedding covers"):
        plan_layout(params, replace(info, max_latent_size=max(bound) - 1), np.random.default_rng(0))
    assert plan_layout(params, replace(info, max_latent_size=max(bound)), np.random.default_rng(0))


def test_batched_and_sequential_make_the_same_image(tiny_pipe, tiny_info):
    layout = plan_layout(MosaicSpec(), tiny_info, np.random.default_rng(0))
    prompts = ["a photo of a ball", "a photo of a leaf", "a photo of a box", "a photo of a star"]
    images = [generate_mosaic(tiny_pipe, prompts, layout, 3, 3.0, torch.Generator().manual_seed(4), batched).image
              for batched in (True, False)]
    assert images[0].shape == (*layout.canvas, 3)
    assert np.abs(images[0].astype(int) - images[1].astype(int)).max() <= 1
    other = generate_mosaic(tiny_pipe, prompts[::-1], layout, 3, 3.0, torch.Generator().manual_seed(4)).image
    assert not np.array_equal(other, images[0])  # each region follows its own prompt


def test_region_prompts_and_planning():
    assert region_prompt("a photo of a single {name}, {definition}", "ball", "") == "a photo of a single ball"
    assert region_prompt("a photo of a single {name}, {definition}", "ball", "a toy") == \
        "a photo of a single ball, a toy"
    spec = validate_spec({
        "name": "m", "num_samples": 20, "method": "mosaic",
        "classes": [{"name": "ball", "frequency": "r"}, {"name": "leaf", "frequency": "f"}, {"name": "box"}],
        "mosaic": {"regions": 4, "categories": ["ball", "leaf"]},
    })
    tasks = plan(spec)
    assert all(len(t.region_prompts) == 4 and t.class_ids[0] == 0 for t in tasks)  # first region: rare
    assert {c for t in tasks for c in t.class_ids} == {0, 1}  # only the chosen categories


@pytest.mark.slow
def test_mosaic_run_on_the_embedded_model(tmp_path):
    spec = load_spec("examples/shapes-mosaic.yaml").model_copy(update={"num_samples": 2, "shard_size": 1})
    out = generate_mosaics(spec, tmp_path / "run", progress=False)
    records = list(read_records(out))
    assert len(records) == 2
    kept_any = False
    for shard, record in records:
        sample = load_sample(shard, record)
        cells = record["extra"]["layout"]["cells"]
        assert len(cells) == len(record["extra"]["region_prompts"]) == len(record["extra"]["regions_kept"]) == 4
        masks = sample.instances.masks
        assert masks.sum(0).max() <= 1  # no pixel in two instances
        kept_classes = {c for c, kept in zip(record["class_ids"], record["extra"]["regions_kept"]) if kept}
        assert set(sample.instances.class_id.tolist()) == kept_classes
        assert len(sample.instances) >= sum(record["extra"]["regions_kept"])
        for k in range(len(sample.instances)):
            assert np.all(sample.semantic[masks[k]] == sample.instances.class_id[k] + 1)
        kept_any |= any(record["extra"]["regions_kept"])
        if not all(record["extra"]["regions_kept"]):
            assert (sample.semantic == 255).any()
    assert kept_any


@pytest.mark.slow
def test_strict_mode_keeps_only_whole_images(tmp_path):
    spec = load_spec("examples/shapes-mosaic.yaml")
    spec = spec.model_copy(update={"num_samples": 2, "mosaic": spec.mosaic.model_copy(update={"strict": True})})
    out = generate_mosaics(spec, tmp_path / "run", progress=False)
    for shard, record in read_records(out):
        assert all(record["extra"]["regions_kept"])
        assert len(load_sample(shard, record).instances) == 4  # exactly one per region


def test_bad_mosaic_input(tiny_info, tmp_path):
    with pytest.raises(ValueError, match="do not tile"):
        MosaicSpec(regions=3)
    with pytest.raises(ValueError, match="multiple of 8"):
        plan_layout(MosaicSpec(canvas=(36, 32)), tiny_info, np.random.default_rng(0))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: m\nnum_samples: 1\nmethod: mosaic\nclasses: [{name: ball}]\n"
                   "mosaic: {categories: [unicorn]}\n")
    with pytest.raises(SpecError, match="unicorn"):
        load_spec(bad)


@pytest.fixture(scope="module")
def tiny_sam_dir(tmp_path_factory):
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor
    from transformers.models.sam.configuration_sam import (
        SamMaskDecoderConfig,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    torch.manual_seed(0)
    config = SamConfig(
        vision_config=SamVisionConfig(hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
                                      image_size=64, patch_size=16, mlp_dim=64, global_attn_indexes=[1],
                                      window_size=2, num_pos_feats=8).to_dict(),
        prompt_encoder_config=SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=16,
                                                     mask_input_channels=4).to_dict(),
        mask_decoder_config=SamMaskDecoderConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                 mlp_dim=32, iou_head_hidden_dim=16).to_dict(),
    )
    path = tmp_path_factory.mktemp("sam") / "tiny-sam"
    SamModel(config).save_pretrained(path)
    SamProcessor(SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})).save_pretrained(path)
    return path


def test_sam_refiner_loads_a_saved_model_and_returns_masks(tiny_sam_dir, tmp_path):
    from synthscene.label.sam import SamRefiner

    assert (tiny_sam_dir / "model.safetensors").is_file()
    refiner = SamRefiner(str(tiny_sam_dir))
    image = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    masks = np.zeros((2, 40, 48), bool)
    masks[0, 5:15, 5:20] = True
    masks[1, 20:35, 30:45] = True
    refined = refiner(image, masks)
    assert refined.shape == masks.shape and refined.dtype == bool
    with pytest.raises(FileNotFoundError, match="SAM"):
        SamRefiner(str(tmp_path / "missing"))


@pytest.mark.slow
def test_mosaic_run_with_sam_refinement(tiny_pipeline_dir, tiny_sam_dir, tmp_path):
    spec = validate_spec({
        "name": "m", "model": str(tiny_pipeline_dir), "num_samples": 1, "method": "mosaic",
        "classes": [{"name": "ball"}, {"name": "leaf"}], "sampler": {"steps": 2, "guidance": 3.0},
        "mosaic": {"regions": 2, "prompt_template": "a photo of a {name}", "sam_model": str(tiny_sam_dir)},
    })
    out = generate_mosaics(spec, tmp_path / "run", progress=False)
    (shard, record), = read_records(out)
    sample = load_sample(shard, record)
    assert sample.image.shape[:2] == tuple(record["extra"]["layout"]["canvas"])  # the tiny VAE keeps the size
    assert len(sample.instances) == 0 or sample.instances.masks.sum(0).max() <= 1


def test_the_layout_is_planned_into_the_manifest_and_used_from_it(tiny_pipeline_dir, tmp_path):
    import json

    spec = validate_spec({
        "name": "m", "model": str(tiny_pipeline_dir), "num_samples": 2, "shard_size": 1, "method": "mosaic",
        "classes": [{"name": "ball"}, {"name": "leaf"}], "sampler": {"steps": 2, "guidance": 3.0},
        "mosaic": {"regions": 2, "prompt_template": "a photo of a {name}"},
    })
    tasks = plan(spec)
    assert tasks == plan(spec) and tasks[0].layout != tasks[1].layout  # each sample's own layout stream
    out = tmp_path / "run"
    generate_mosaics(spec, out, num_shards=2, shard_index=0)  # plans everything, makes shard 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["layout"] for r in rows] == [json.loads(json.dumps(t.layout.to_json())) for t in tasks]
    # the worker draws nothing: a layout edited in the manifest is the one the sample gets
    edited = rows[0]["layout"]  # a valid layout of the same canvas, not sample 1's own
    rows[1]["layout"] = edited
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    generate_mosaics(spec, out, resume=True)
    (sample,) = [s for s in open_run(out).samples() if s.index == 1]
    assert sample.extra["layout"] == json.loads(json.dumps(edited))


@pytest.mark.slow
def test_sigkill_then_resume_matches_a_straight_run(tiny_pipeline_dir, tmp_path):
    import subprocess
    import sys

    import yaml

    from tests.helpers import shard_digest, sigkill_when

    spec = validate_spec({
        "name": "m", "model": str(tiny_pipeline_dir), "num_samples": 8, "shard_size": 1, "method": "mosaic",
        "classes": [{"name": "ball"}, {"name": "leaf"}], "sampler": {"steps": 2, "guidance": 3.0},
        "mosaic": {"regions": 2, "prompt_template": "a photo of a {name}"},
    })
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    straight = generate_mosaics(spec, tmp_path / "straight")
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "synthscene.cli", "generate", "--spec", str(spec_file), "--out", str(killed)]
    sigkill_when(command, lambda: (killed / "shards" / "shard-00001").exists())
    assert not (killed / "shards" / "shard-00007").exists()  # killed mid-run
    subprocess.run(command + ["--resume"], check=True, capture_output=True)
    assert shard_digest(killed) == shard_digest(straight)
