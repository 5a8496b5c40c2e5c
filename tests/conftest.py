import json

import pytest

from synthscene.world.build import write_world
from tests.helpers import BASE, NOVEL


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A 32 px shapes world with 60 train and 20 val images."""
    return write_world(tmp_path_factory.mktemp("world") / "w", n_train=60, n_val=20, seed=3, progress=False)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A 16 px world for the tiny generator architecture."""
    return write_world(tmp_path_factory.mktemp("world16") / "w", n_train=48, n_val=4, seed=5, size=16, progress=False)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A randomly initialised tiny Stable Diffusion pipeline saved with save_pretrained."""
    import torch
    from diffusers import StableDiffusionPipeline

    from synthscene.models.configs import ARCHITECTURES, build_components, sampling_scheduler

    torch.manual_seed(0)
    parts = build_components(ARCHITECTURES["tiny"])
    pipe = StableDiffusionPipeline(
        vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"], unet=parts["unet"],
        scheduler=sampling_scheduler(parts["scheduler"]), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    path = tmp_path_factory.mktemp("tiny_pipe") / "pipe"
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_pipeline_dir, tmp_path_factory):
    """A text2labels run of 6 samples on the tiny random pipeline."""
    from synthscene.spec import validate_spec
    from tests.helpers import make_run

    spec = validate_spec({
        "name": "tiny", "model": str(tiny_pipeline_dir), "num_samples": 6, "seed": 1, "shard_size": 4,
        "classes": [{"name": "ball"}, {"name": "leaf"}, {"name": "box"}],
        "sampler": {"steps": 2, "guidance": 3.0},
        # a random model's class words explain nothing, so the not-drawn check would leave the
        # format tests no instances; it is tested on the embedded model
        "text2labels": {"cross_resolutions": [8], "self_resolution": 8, "min_instance_area": 1,
                        "min_class_gain": None},
    })
    return make_run(spec, tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs) for every Ray test of the session; its address lets
    subprocess drivers join it."""
    ray = pytest.importorskip("ray", reason="the Ray backend's tests need ray[data] (pip install 'synthscene[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def teacher(small_world, tmp_path_factory):
    """A detector trained for a few steps on the world's base-class annotations only."""
    from synthscene.formats.coco import keep_categories
    from synthscene.train.data import Source
    from synthscene.train.downstream import DownstreamConfig, train_downstream

    root = tmp_path_factory.mktemp("teacher")
    truth = json.loads((small_world / "annotations" / "instances_train.json").read_text())
    base_only = root / "instances_train_base.json"
    base_only.write_text(json.dumps(keep_categories(truth, BASE)))
    config = DownstreamConfig(task="detection", model="fasterrcnn_mobilenet_v3_large_fpn",
                              sources=[Source(str(base_only), image_roots=(str(small_world),))], steps=2,
                              batch_size=2, image_size=32, warmup_steps=1, checkpoint_every=2)
    return train_downstream(config, root / "teacher", progress=False)


@pytest.fixture(scope="session")
def grounding_head(tiny_pipeline_dir, teacher, tmp_path_factory):
    """A train-grounding run (a few steps) on the tiny pipeline."""
    from synthscene.grounding.train import GroundingTrainConfig, train_grounding

    config = GroundingTrainConfig(
        model=str(tiny_pipeline_dir), teacher=str(teacher), base_classes=BASE, novel_classes=NOVEL,
        images_per_base_class=1, images_per_novel_class=1, steps_per_image=2, guidance=3.0, teacher_threshold=0.0,
        novel_threshold=0.0, steps=2, batch_size=2, warmup_steps=1, head={"width": 16, "queries": 4, "layers": 1,
                                                                          "heads": 2})
    return train_grounding(config, tmp_path_factory.mktemp("grounding") / "head", progress=False)
