"""The ``synthscene`` command line: one subcommand per stage.

Every subcommand checks its inputs first and turns the library's errors into one clear
message and exit code 2, with no traceback and no partial output.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Labelled training data for scene understanding from diffusion models.")


# options the trainers of one run folder share (train-grounding, train-parts, train-controlnet)
ResumeRun = Annotated[bool, typer.Option(help="Continue the run in --out where it stopped.")]
TorchDevice = Annotated[str, typer.Option(help="Torch device, e.g. cuda.")]
TrainSteps = Annotated[int | None, typer.Option(help="Training steps.")]
RunSeed = Annotated[int | None, typer.Option(help="Run seed (batches, noise, initial weights).")]


def _trainer_config(config_class, given: dict, base: dict | None = None):
    """A trainer's settings: ``base`` (e.g. a config file's), overridden by the options the
    user gave (None: not given, so the setting's default or ``base`` stands)."""
    return config_class.model_validate({**(base or {}), **{k: v for k, v in given.items() if v is not None}})


def _friendly_errors(func):
    """Report expected failures (bad input, missing files) as one line, exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        # OSError: a missing file, no permission, a full disk; FloatingPointError: a diverged loss
        except (ValueError, OSError, FloatingPointError) as err:
            typer.secho(f"error: {_one_line(err)}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None

    return wrapper


def _one_line(err: Exception) -> str:
    from pydantic import ValidationError

    from synthscene.spec import validation_error_line

    if isinstance(err, ValidationError):
        return f"{err.title}: {validation_error_line(err)}"
    if isinstance(err, OSError) and err.filename and str(err.filename) not in str(err):
        return f"{err.filename}: {err.strerror or err}"
    return " ".join(str(err).split()) or type(err).__name__


@app.command()
@_friendly_errors
def world(
    out: Annotated[Path, typer.Option(help="Output folder (must not exist or be empty).")],
    n_train: Annotated[int, typer.Option(help="Training images.")] = 1000,
    n_val: Annotated[int, typer.Option(help="Validation images.")] = 200,
    seed: Annotated[int, typer.Option(help="World seed; the same seed gives the same dataset.")] = 0,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 32,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    cityscapes: Annotated[bool, typer.Option(help="Also write both splits in the Cityscapes layout "
                                                  "(cityscapes/leftImg8bit, cityscapes/gtFine).")] = False,
):
    """Write a shapes-world dataset with exact labels (COCO, VOC-style PNGs, captions)."""
    from synthscene.world.build import write_world

    write_world(out, n_train, n_val, seed=seed, size=size, overwrite=overwrite, cityscapes=cityscapes)
    typer.echo(f"wrote {n_train} train + {n_val} val images to {out}")


@app.command("train-generator")
@_friendly_errors
def train_generator_command(
    data: Annotated[str, typer.Option(help="Folder with metadata.jsonl, a .jsonl, or a COCO captions .json.")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints/, loss.jsonl, model/.")],
    architecture: Annotated[str, typer.Option(help="From-scratch architecture: shapes, shapes-mmdit (SD3), tiny or tiny-mmdit.")] = "shapes",
    init: Annotated[str | None, typer.Option(help="Fine-tune this pipeline (hub id or folder) instead.")] = None,
    image_root: Annotated[str | None, typer.Option(help="Root of relative image paths (COCO captions).")] = None,
    classes_from_annotations: Annotated[bool, typer.Option(
        help="--data is a COCO instances file: train on square crops around its boxes, captioned "
             "'a photograph of A and B' by the classes in each crop.")] = False,
    classes: Annotated[str | None, typer.Option(help="With --classes-from-annotations: crop only around these "
                                                     "classes, comma-separated (e.g. the base classes).")] = None,
    steps: Annotated[int, typer.Option(help="Denoiser training steps.")] = 1000,
    vae_steps: Annotated[int, typer.Option(help="VAE steps (from scratch only).")] = 400,
    batch_size: int = 32,
    learning_rate: float = 3e-4,
    caption_dropout: Annotated[float, typer.Option(help="Share of empty captions, for guidance.")] = 0.1,
    snr_gamma: Annotated[float | None, typer.Option(help="Min-SNR-gamma loss weighting; 0 disables it.")] = 5.0,
    ema: Annotated[bool, typer.Option(help="Keep an EMA of the weights and save it.")] = True,
    checkpoint_every: int = 500,
    max_minutes: Annotated[float | None, typer.Option(help="Stop and save after this many minutes.")] = None,
    seed: int = 0,
    resume: Annotated[bool, typer.Option(help="Continue from the latest checkpoint in --out.")] = False,
    device: Annotated[str, typer.Option(help="Torch device to train on, e.g. cuda.")] = "cpu",
):
    """Train (or fine-tune) a Stable Diffusion-compatible pipeline on image-caption pairs."""
    from synthscene.train.generator import GeneratorTrainingConfig, train_generator

    config = GeneratorTrainingConfig(
        data=data, out=str(out), architecture=architecture, init=init, image_root=image_root,
        classes_from_annotations=classes_from_annotations, classes=tuple(_names(classes)) if classes else None,
        steps=steps,
        vae_steps=vae_steps, batch_size=batch_size, learning_rate=learning_rate,
        caption_dropout=caption_dropout, snr_gamma=snr_gamma or None, ema=ema, checkpoint_every=checkpoint_every,
        max_minutes=max_minutes, seed=seed, device=device,
    )
    model_dir = train_generator(config, resume=resume)
    typer.echo(f"saved pipeline to {model_dir}")


@app.command()
@_friendly_errors
def generate(
    out: Annotated[Path, typer.Option(help="Output folder (must not exist or be empty, unless --resume).")],
    spec: Annotated[Path | None, typer.Option(help="A dataset spec (YAML): generate labelled samples.")] = None,
    resume: Annotated[bool, typer.Option(help="With --spec: continue a run, skipping finished shards.")] = False,
    backend: Annotated[str, typer.Option(help="With --spec: local (this process) or ray (Ray Data actors).")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray: the cluster to join (default: start a local one).")]
    = None,
    workers: Annotated[int, typer.Option(help="Ray: number of actors, each with its own model.")] = 1,
    gpus_per_worker: Annotated[float, typer.Option(help="Ray: GPUs each actor asks for.")] = 0.0,
    shard_index: Annotated[int, typer.Option(help="With --num-shards K: make only shards n with n % K == this "
                                                  "(Slurm array jobs).")] = 0,
    num_shards: Annotated[int, typer.Option(help="Split the run's shards between K processes.")] = 1,
    threads: Annotated[int | None, typer.Option(help="Compute threads per worker: torch, OpenCV, BLAS (default: "
                                                     "theirs; on Ray 1 per actor CPU). Same threads, same bytes.")]
    = None,
    prompt: Annotated[list[str] | None, typer.Option(help="Without --spec: a prompt; repeat for several.")] = None,
    prompts_file: Annotated[Path | None, typer.Option(help="Without --spec: one prompt per line.")] = None,
    model: Annotated[str, typer.Option(help="'embedded' (the shapes model, SD 1.x-architecture), 'embedded-mmdit' "
                                            "(its SD3-architecture sibling), a local pipeline folder, or a hub id.")
                     ] = "embedded",
    images_per_prompt: int = 4,
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 25,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale (<= 1: off).")] = 7.5,
    seed: Annotated[int, typer.Option(help="Run seed; each image's seed derives from it and its index.")] = 0,
    batch_size: int = 8,
    overwrite: bool = False,
    device: Annotated[str, typer.Option(help="Torch device for the model, e.g. cuda.")] = "cpu",
):
    """Generate labelled samples from a spec, or plain images from prompts."""
    if spec is not None:
        from synthscene.engine import Execution, run_spec
        from synthscene.spec import load_spec

        dataset_spec = load_spec(spec)
        execution = Execution(backend=backend, device=device, shard_index=shard_index, num_shards=num_shards,
                              workers=workers, gpus_per_worker=gpus_per_worker, ray_address=ray_address,
                              threads=threads)
        summary = run_spec(dataset_spec, out, resume=resume, execution=execution)
        if summary.finished:
            typer.echo(f"wrote {dataset_spec.method} run of {dataset_spec.num_samples} samples to {out}")
        else:
            typer.echo(f"made shards {summary.made} of {summary.shards} in {out}; the others are left to other "
                       "jobs (or --resume); the dataset card is written when the last shard is")
        return
    from synthscene.generate import generate_images, read_prompts

    prompts = read_prompts(prompt or [], prompts_file)
    generate_images(prompts, out, model=model, images_per_prompt=images_per_prompt, steps=steps,
                    guidance=guidance, seed=seed, batch_size=batch_size, overwrite=overwrite, device=device)
    typer.echo(f"wrote {len(prompts) * images_per_prompt} images to {out}")


@app.command()
@_friendly_errors
def export(
    run: Annotated[Path, typer.Option("--in", help="A run folder written by generate --spec.")],
    format: Annotated[str, typer.Option(help="coco, lvis, voc, cityscapes, yolo or hf (Hugging Face datasets).")],
    out: Annotated[Path, typer.Option(help="Output folder (must not exist or be empty).")],
    negatives: Annotated[str, typer.Option(help="LVIS: 'none', or 'unnamed' to declare classes the prompt "
                                                "did not name absent (neg_category_ids).")] = "none",
    overwrite: bool = False,
    allow_partial: Annotated[bool, typer.Option(help="Export an unfinished run's finished shards (export.json "
                                                     "records how many).")] = False,
    yolo_task: Annotated[str, typer.Option(help="YOLO: detect (boxes), segment (polygons) or auto (polygons when "
                                                "the run has masks).")] = "auto",
):
    """Export a run's samples as COCO / LVIS instances (RLE), a VOC-style segmentation set, the
    Cityscapes layout, a YOLO dataset or a Hugging Face dataset (parquet)."""
    from synthscene.formats.export import export_run

    export_run(run, format, out, overwrite=overwrite, negatives=negatives, allow_partial=allow_partial,
               yolo_task=yolo_task)
    typer.echo(f"wrote {format} export of {run} to {out}")


@app.command()
@_friendly_errors
def train(
    task: Annotated[str, typer.Option(help="detection (COCO sources) or semantic (VOC folders: their "
                                           "ImageSets/Segmentation/train.txt, or a list file; world splits).")],
    model: Annotated[str, typer.Option(help="e.g. maskrcnn_mobilenet_v3_large_fpn, lraspp_mobilenet_v3_large.")],
    data: Annotated[list[str], typer.Option(help="A source, PATH or PATH:WEIGHT; repeat to mix sources.")],
    out: Annotated[Path, typer.Option(help="Run folder (must not exist or be empty, unless --resume).")],
    steps: int = 1000,
    batch_size: int = 8,
    learning_rate: float = 0.02,
    warmup_steps: Annotated[int, typer.Option(help="Linear learning-rate warm-up, then cosine decay.")] = 100,
    image_size: Annotated[int, typer.Option(help="Detectors: resized min side; segmenters: input side.")] = 128,
    checkpoint_every: int = 200,
    seed: int = 0,
    init: Annotated[str | None, typer.Option(help="Local weights to start from (safetensors or .pt).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the latest checkpoint in --out.")] = False,
    image_root: Annotated[list[str] | None, typer.Option(
        help="Detection: image folder of a COCO source. With one --data, repeat it for several folders tried in "
             "order; with several, give one per --data in order (join folders with ':', '' for the default).")] = None,
    classes: Annotated[str | None, typer.Option(help="Detection: train on these categories only, comma-separated "
                                                     "(e.g. the base classes of a grounding teacher).")] = None,
    device: Annotated[str, typer.Option(help="Torch device to train on, e.g. cuda.")] = "cpu",
    workers: Annotated[int, typer.Option(help="DataLoader processes decoding batches ahead (0: none); the "
                                              "batches are the same with any number.")] = 0,
):
    """Train a torchvision detector or segmenter on one or more datasets, mixed by weight."""
    from synthscene.train.data import Source, assign_image_roots
    from synthscene.train.downstream import DownstreamConfig, train_downstream

    roots = assign_image_roots(len(data), image_root)
    sources = tuple(Source.parse(d, r) for d, r in zip(data, roots))
    config = DownstreamConfig(task=task, model=model, sources=sources, steps=steps,
                              batch_size=batch_size, learning_rate=learning_rate, warmup_steps=warmup_steps,
                              image_size=image_size, checkpoint_every=checkpoint_every, seed=seed, init=init,
                              classes=tuple(_names(classes)) if classes else None)
    train_downstream(config, out, resume=resume, device=device, workers=workers)
    typer.echo(f"saved {out}/model.safetensors")


@app.command("train-grounding")
@_friendly_errors
def train_grounding_command(
    teacher: Annotated[str, typer.Option(help="A 'synthscene train --task detection' run that knows the base classes.")],
    base: Annotated[str, typer.Option(help="Base classes, comma-separated (the teacher knows them).")],
    out: Annotated[Path, typer.Option(help="Run folder (must not exist or be empty, unless --resume).")],
    novel: Annotated[str, typer.Option(help="Novel classes, comma-separated (the teacher never saw them).")] = "",
    model: Annotated[str, typer.Option(help="The generator (an SD 1.x / 2.x UNet): 'embedded', a pipeline folder "
                                            "or a hub id.")] = "embedded",
    config: Annotated[Path | None, typer.Option(help="YAML with further settings (see GroundingTrainConfig); "
                                                      "the options above override it.")] = None,
    images_per_base_class: Annotated[int | None, typer.Option(help="Generated images per base class.")] = None,
    images_per_novel_class: Annotated[int | None, typer.Option(help="Generated images per novel class.")] = None,
    steps: Annotated[int | None, typer.Option(help="Head training steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per training step.")] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed (prompts, images, batches).")] = None,
    resume: ResumeRun = False,
    images_from: Annotated[Path | None, typer.Option(help="Start from the images of this earlier run (same "
                                                          "generation settings): retrain without generating.")] = None,
    device: TorchDevice = "cpu",
):
    """Train a grounding head (InstaGen): boxes for base and novel classes from the generator's features."""
    from synthscene.grounding.train import GroundingTrainConfig, train_grounding
    from synthscene.spec import load_yaml

    values = {}
    if config is not None:
        values = load_yaml(config, "config file") or {}
        if not isinstance(values, dict):
            raise ValueError(f"{config}: expected a mapping of settings")
    given = {"teacher": teacher, "model": model, "base_classes": _names(base), "novel_classes": _names(novel),
             "images_per_base_class": images_per_base_class, "images_per_novel_class": images_per_novel_class,
             "steps": steps, "batch_size": batch_size, "seed": seed}
    run = train_grounding(_trainer_config(GroundingTrainConfig, given, values), out, resume=resume, device=device,
                          images_from=images_from)
    typer.echo(f"saved {run}/head.safetensors")


@app.command("train-parts")
@_friendly_errors
def train_parts_command(
    out: Annotated[Path, typer.Option(help="Run folder (must not exist or be empty, unless --resume).")],
    data: Annotated[str, typer.Option(help="A part-annotated dataset: COCO instances, part maps in parts/ beside "
                                           "images/, the part list in world.json or parts.json.")] = "runs/shapes-world",
    max_images: Annotated[int | None, typer.Option(help="Read only the first N train images.")] = None,
    supports: Annotated[int | None, typer.Option(help="Support shapes per query (k).")] = None,
    steps: TrainSteps = None,
    batch_size: Annotated[int | None, typer.Option(help="Query shapes per step.")] = None,
    seed: RunSeed = None,
    resume: ResumeRun = False,
    device: TorchDevice = "cpu",
):
    """Train the part network (iPOSE): an instance's parts from its shape and similar annotated shapes."""
    from synthscene.train.parts import PartsTrainConfig, train_parts

    given = {"data": data, "max_images": max_images, "supports": supports, "steps": steps,
             "batch_size": batch_size, "seed": seed}
    run = train_parts(_trainer_config(PartsTrainConfig, given), out, resume=resume, device=device)
    typer.echo(f"saved {run}/parts.safetensors")


@app.command("train-controlnet")
@_friendly_errors
def train_controlnet_command(
    out: Annotated[Path, typer.Option(help="Run folder (must not exist or be empty, unless --resume).")],
    data: Annotated[str, typer.Option(help="Layouts: a dataset folder (annotations/instances_SPLIT.json, part maps "
                                           "when it lists parts), a COCO instances .json or a Cityscapes folder.")
                    ] = "runs/shapes-world",
    split: Annotated[str, typer.Option(help="The dataset folder's split.")] = "train",
    model: Annotated[str, typer.Option(help="The frozen pipeline: 'embedded', a folder or a hub id.")] = "embedded",
    max_images: Annotated[int | None, typer.Option(help="Use only the first N images.")] = None,
    steps: TrainSteps = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="AdamW learning rate.")] = None,
    seed: RunSeed = None,
    resume: ResumeRun = False,
    max_minutes: Annotated[float | None, typer.Option(help="Checkpoint and stop after this many minutes "
                                                           "(continue with --resume).")] = None,
    device: TorchDevice = "cpu",
):
    """Train a ControlNet that draws a layout (classes, instance boundaries, parts) with a frozen pipeline."""
    from synthscene.train.controlnet import ControlNetTrainConfig, train_controlnet

    given = {"data": data, "split": split, "model": model, "max_images": max_images, "steps": steps,
             "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed}
    saved = train_controlnet(_trainer_config(ControlNetTrainConfig, given), out, resume=resume, device=device,
                             max_minutes=max_minutes)
    typer.echo(f"saved {saved}" if saved.name == "controlnet" else
               f"stopped after {max_minutes} min; checkpoints in {saved}: continue with --resume")


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


@app.command()
@_friendly_errors
def experiment(
    out: Annotated[Path, typer.Option(help="Output folder (must not exist or be empty).")],
    profile: Annotated[str, typer.Option(help="Data-sparse: quick (this CPU, < 1 hour), full (GPU) or smoke "
                                              "(seconds); steps scaled by images, 3 seeds, auto weight and filtered sets: "
                                              "sparse or sparse-smoke. Open-vocabulary: open-vocab or open-vocab-smoke. "
                                              "Restyle (InstSynth): restyle or restyle-smoke. Layout (iPOSE): layout "
                                              "or layout-smoke.")] = "quick",
    synthetic: Annotated[list[str] | None, typer.Option(help="Use these generate --spec runs instead of making new "
                                                              "ones; repeat for several.")] = None,
    synthetic_weight: Annotated[str, typer.Option(help="Profile sparse: the mixed settings to train: fixed (1:1), "
                                                       "auto (every image equally likely, so the synthetic share "
                                                       "falls as real data grows) or both.")] = "both",
    task: Annotated[list[str] | None, typer.Option(help="Profile sparse: train only this downstream task "
                                                        "(semantic or detection); repeat for both (the default).")] = None,
    jobs: Annotated[int | None, typer.Option(help="Profile sparse: cells trained at once, each in its own process "
                                                  "with a share of the CPU threads (default: the profile's, 2 "
                                                  "for sparse).")] = None,
):
    """The shapes-world experiments: data-sparse (real fractions x {real, synthetic, both}),
    open-vocabulary (novel classes from grounding-labelled synthetic data), restyle (real
    10 % vs real 10 % + its restyled copies) or layout (real 10 % vs real 10 % + layouts of
    its instances, drawn)."""
    from synthscene.experiment import run_experiment
    from synthscene.experiment_derived import DERIVED_PROFILES, run_derived_experiment
    from synthscene.experiment_open_vocab import OPEN_VOCAB_PROFILES, run_open_vocab
    from synthscene.experiment_sparse import SPARSE_PROFILES, TASKS, run_sparse_experiment

    if synthetic and (profile in OPEN_VOCAB_PROFILES or profile in DERIVED_PROFILES):
        raise ValueError(f"--synthetic applies to the data-sparse profiles; {profile} makes its own set")
    if synthetic_weight != "both" and profile not in SPARSE_PROFILES:
        raise ValueError(f"--synthetic-weight applies to the sparse profiles, not {profile}")
    if task and profile not in SPARSE_PROFILES:
        raise ValueError(f"--task applies to the sparse profiles, not {profile}")
    if jobs is not None and profile not in SPARSE_PROFILES:
        raise ValueError(f"--jobs applies to the sparse profiles, not {profile}")
    if profile in SPARSE_PROFILES:
        run_sparse_experiment(profile, out, synthetic, synthetic_weight, tuple(task) if task else TASKS, jobs)
    elif profile in OPEN_VOCAB_PROFILES:
        run_open_vocab(profile, out)
    elif profile in DERIVED_PROFILES:
        run_derived_experiment(profile, out)
    else:
        run_experiment(profile, out, synthetic)
    typer.echo(f"wrote {out}/results.json, results.md and results.png")


@app.command("eval")
@_friendly_errors
def evaluate(
    run: Annotated[Path | None, typer.Option("--run", help="A finished train run; scored on --data.")] = None,
    data: Annotated[Path | None, typer.Option(help="With --run: a COCO / LVIS file, a world split, or a VOC folder (its "
                                                            "ImageSets/Segmentation/val.txt) or list file.")] = None,
    gt: Annotated[Path | None, typer.Option(help="Ground-truth COCO / LVIS instances JSON.")] = None,
    detections: Annotated[Path | None, typer.Option(help="Detections: a COCO results JSON list.")] = None,
    iou_type: Annotated[str, typer.Option(help="bbox or segm.")] = "bbox",
    backend: Annotated[str, typer.Option(help="auto (faster-coco-eval), faster or pycocotools.")] = "auto",
    gt_masks: Annotated[Path | None, typer.Option(help="Semantic: folder of ground-truth palette PNGs.")] = None,
    pred_masks: Annotated[Path | None, typer.Option(help="Semantic: folder of predicted PNGs, same names.")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Semantic: classes including background.")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the scores to this JSON file.")] = None,
    image_root: Annotated[list[str] | None, typer.Option(
        help="With --run on a COCO file: its image folder; repeat for several, tried in order.")] = None,
    device: Annotated[str, typer.Option(help="With --run: the torch device to predict on, e.g. cuda.")] = "cpu",
):
    """Score detections (box / mask AP, per class, LVIS AP_r/c/f) or semantic masks (mIoU, 255 ignored)."""
    import json

    if image_root and (run is None or data is None):
        raise ValueError("--image-root goes with --run and --data")
    if run is not None and data is not None:
        from synthscene.train.downstream import evaluate_trained

        scores = evaluate_trained(run, data, backend, image_root, device=device)
    elif gt is not None and detections is not None:
        from synthscene.evaluation.detection import evaluate_detections

        if not detections.is_file():
            raise FileNotFoundError(f"detections file {detections} does not exist")
        scores = evaluate_detections(gt, json.loads(detections.read_text()), iou_type, backend)
    elif gt_masks is not None and pred_masks is not None and num_classes:
        from synthscene.evaluation.semantic import evaluate_semantic_folders

        scores = evaluate_semantic_folders(gt_masks, pred_masks, num_classes)
    else:
        raise ValueError("give --run and --data, --gt and --detections, or --gt-masks, --pred-masks and --num-classes")
    if out is not None:
        from synthscene.io import write_json

        write_json(out, scores, indent=2)
    typer.echo(json.dumps(scores))


@app.command()
@_friendly_errors
def merge(
    real: Annotated[Path, typer.Option(help="The real COCO or LVIS instances JSON (or a YOLO data.yaml).")],
    synthetic: Annotated[Path, typer.Option(help="A synthetic instances JSON of the same format (export).")],
    out: Annotated[Path, typer.Option(help="The merged JSON file to write.")],
    add_categories: Annotated[bool, typer.Option(help="Append synthetic categories the real file lacks.")] = False,
    real_images: Annotated[Path | None, typer.Option(help="Image folder of the real file: check sizes.")] = None,
    synthetic_images: Annotated[Path | None, typer.Option(help="Image folder of the synthetic file. With both "
                                                                "folders, file names become relative to their "
                                                                "common parent.")] = None,
    overwrite: bool = False,
):
    """Append synthetic images and annotations to a real COCO / LVIS file (ids offset past the
    real maxima, categories matched by name or synonym, counts updated)."""
    from synthscene.formats.merge import merge_files

    report = merge_files(real, synthetic, out, add_categories=add_categories, real_images=real_images,
                         synthetic_images=synthetic_images, overwrite=overwrite)
    typer.echo(f"wrote {out}: {report['real_images']} real + {report['synthetic_images']} synthetic images")
    if report["image_root"] is not None:
        root = report["image_root"]
        typer.echo(f"its file names are relative to {root} (train it with --image-root {root})")


@app.command("filter")
@_friendly_errors
def filter_command(
    run: Annotated[Path, typer.Option("--in", help="A finished run (or an earlier view).")],
    out: Annotated[Path, typer.Option(help="The view's folder (must not exist or be empty).")],
    where: Annotated[str | None, typer.Option(help="Keep the instances satisfying this, e.g. \"score >= 0.5 and "
                                                   "category in ('ball', 'hat')\"; fields: category, score, area and "
                                                   "the labeller's per-instance scores.")] = None,
    samples_where: Annotated[str | None, typer.Option(help="Then keep the samples satisfying this; fields: count, "
                                                           "removed, uncertain, index, seed.")] = None,
    copy_images: Annotated[bool, typer.Option(help="Copy the images (default: the view reads them from --in).")]
    = False,
    overwrite: bool = False,
):
    """Write a view of a run that keeps the instances and samples passing conditions on their scores."""
    from synthscene.filter import filter_run

    if where is None and samples_where is None:
        raise ValueError("give --where and/or --samples-where")
    view = filter_run(run, out, where, samples_where, copy_images=copy_images, overwrite=overwrite, progress=True)
    typer.echo(f"wrote {out}: {view['instances_kept']} of {view['instances']} instances in {view['samples_kept']} "
               f"of {view['samples']} samples")


@app.command()
@_friendly_errors
def gallery(
    run: Annotated[Path, typer.Option("--in", help="A run folder written by generate --spec.")],
    out: Annotated[Path | None, typer.Option(help="Gallery folder (default: RUN/gallery).")] = None,
    limit: Annotated[int | None, typer.Option(help="Show at most this many samples.")] = None,
    allow_partial: Annotated[bool, typer.Option(help="Show an unfinished run's finished shards.")] = False,
):
    """Write a static HTML gallery of a run: image, mask overlay, boxes, prompt, scores."""
    from synthscene.report.gallery import write_gallery

    page = write_gallery(run, out, limit=limit, allow_partial=allow_partial)
    typer.echo(f"wrote {page}")


if __name__ == "__main__":
    app()
