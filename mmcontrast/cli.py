"""The mmcontrast command line: train | eval | zero-shot | mine-negatives | recipes | push | demo | recipe-docs.

With --json, standard output holds exactly one JSON document, the command's result; every other line goes to
standard error (see docs/cli.md)."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mmcontrast import __version__

if TYPE_CHECKING:
    from mmcontrast.data.images import ImageRows


def _train(args: argparse.Namespace) -> int:
    from mmcontrast.recipe import load_recipe
    from mmcontrast.run_recipe import train_recipe
    from mmcontrast.typed_config import to_dict

    recipe = load_recipe(args.recipe, args.overrides)
    args.named |= _recipe_values(to_dict(recipe))  # an error quoting one of them is prefixed with its key
    summary = train_recipe(recipe)
    if summary["skipped_rows"]:
        print(f"skipped {summary['skipped_rows']} bad rows of data.train (data.skip_bad_rows=true)")
    _emit(args, summary)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from mmcontrast.evaluation.retrieval import RetrievalEvaluator
    from mmcontrast.evaluation.sts import STSEvaluator
    from mmcontrast.hub.folders import check_model_folder
    from mmcontrast.modalities.text import TextEncoder

    if args.task == "probe":
        return _eval_probe(args)
    if args.task == "video":
        return _eval_video(args)
    probe_only = [name for name in _PROBE_OPTIONS if getattr(args, name.lstrip("-").replace("-", "_")) is not None]
    if probe_only:
        raise ValueError(f"{probe_only[0]} belongs to mmcontrast eval probe, not eval {args.task}")
    if args.data is None:
        raise ValueError(f"eval {args.task} needs --data FILE")
    check_model_folder(args.model, "text")
    if args.task == "sts":
        evaluator = STSEvaluator.from_file(args.data, limit=args.limit, name="--data")
    else:
        evaluator = RetrievalEvaluator.from_pairs(
            args.data, columns=args.columns, limit=args.limit, name="--data", columns_name="--columns QUERY DOC"
        )
    encoder = TextEncoder.from_pretrained(args.model)
    metrics = evaluator(lambda texts: encoder.encode(texts, args.batch_size, show_progress=True))
    _emit(args, metrics)
    return 0


_PROBE_OPTIONS = (
    "--train",
    "--test",
    "--label",
    "--pooling",
    "--output",
    "--confusion-matrix",
    "--baselines",
    "--frames",
    "--audio-root",
    "--test-fraction",
    "--update-card",
    "--dataset-name",
)


def _eval_probe(args: argparse.Namespace) -> int:
    """``mmcontrast eval probe``: linear-probe and kNN accuracy of any encoder folder, with baselines; per utterance,
    image or text on labelled tables, or per 10 ms frame (``--frames``, ``--audio-root``)."""
    if args.data is not None:
        raise ValueError("eval probe takes --train and --test tables (or --frames and --audio-root), not --data")
    report = _frame_probe(args) if args.frames is not None or args.audio_root is not None else _table_probe(args)
    if args.update_card:
        from mmcontrast.evaluation.probe import probe_card_results
        from mmcontrast.hub.model_card import update_card_results

        card = update_card_results(
            args.model, probe_card_results(report, args.dataset_name), modality=report["modality"]
        )
        report["model_card"] = str(card)
        print(f"updated the model card {card}", file=sys.stderr)
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=1) + "\n")
    _emit(args, report)
    return 0


def _eval_video(args: argparse.Namespace) -> int:
    """``mmcontrast eval video``: alignment error, Kendall's tau and clip retrieval between views of every video, for
    the model, the same encoder at random init and raw pixels."""
    from mmcontrast.data.moving_digits import moving_digits
    from mmcontrast.data.video import load_video_rows
    from mmcontrast.evaluation.video_views import compare_on_views, plot_views, summary_table
    from mmcontrast.modalities.video import load_video_encoder
    from mmcontrast.views.video import consistent_augment, views_from_rows

    if args.data is None:
        raise ValueError("eval video needs --data: a folder or table of videos, or moving_digits")
    encoder = load_video_encoder(args.model)
    if args.data == "moving_digits":
        # new test-digit videos filmed by the cameras of seed 0 (those the recipes train with by default)
        rows = moving_digits(
            args.limit or 64, num_views=args.views, seed=1000 + args.seed, digits_subset="test", camera_seed=0
        )
        print(f"--data moving_digits: {len(rows)} generated videos (synthetic), {args.views} cameras", file=sys.stderr)
    else:
        found, _ = load_video_rows(args.data)
        _report_skipped(found.skipped, "--data", kind="video")
        rows = found.rows[: args.limit] if args.limit else found.rows
    augment = consistent_augment(args.size, crop_scale=(0.6, 1.0), flip=False, color_jitter=0.4, grayscale=0.2)
    videos, _ = views_from_rows(
        rows,
        num_views=args.views,
        augment=augment,
        fps=args.fps,
        size=args.size,
        max_frames=args.max_frames,
        seed=args.seed,
    )
    report: dict[str, Any] = {
        "videos": len(videos),
        "views": args.views,
        **compare_on_views(encoder, videos, seed=args.seed),
    }
    print(summary_table({k: report[k] for k in ("model", "random_init", "pixels")}), file=sys.stderr)
    if args.plots:
        report["plots"] = [str(path) for path in plot_views(encoder, videos, args.plots)]
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=1) + "\n")
    _emit(args, report)
    return 0


def _table_probe(args: argparse.Namespace) -> dict[str, Any]:
    """``eval probe --train TABLE --test TABLE --label COLUMN``: one example per row (utterance, image, text)."""
    from mmcontrast.evaluation.probe import probe_encoder_folder

    missing = [name for name in ("--train", "--test", "--label") if getattr(args, name[2:]) is None]
    if missing:
        raise ValueError(
            f"eval probe needs {', '.join(missing)} (labelled tables of file_name and label), or --frames and "
            "--audio-root for a frame-level probe"
        )
    if args.test_fraction is not None:
        raise ValueError("--test-fraction belongs to a frame-level probe (--frames); tables give --train and --test")
    report = probe_encoder_folder(
        args.model,
        args.train,
        args.test,
        args.label,
        pooling=args.pooling or "mean",
        baselines=args.baselines or (),
        batch_size=args.batch_size,
        k=args.k,
        seed=args.seed,
        confusion_matrix=args.confusion_matrix,
    )
    for split, skipped in report["skipped"].items():
        _report_skipped([tuple(item) for item in skipped], f"--{split}", kind="file")
    for name, scores in report["results"].items():
        print(
            f"{name}: linear probe {scores['linear_probe_top1']:.3f}, {scores['knn_k']}-NN {scores['knn_top1']:.3f} "
            f"({report['label']}, {report['test_rows']} test rows)",
            file=sys.stderr,
        )
    return report


def _frame_probe(args: argparse.Namespace) -> dict[str, Any]:
    """``eval probe --frames LABELS.txt --audio-root FOLDER``: one example per 10 ms frame (CPC phone probes)."""
    from mmcontrast.evaluation.frame_probe import FRAME_TOLERANCE, probe_frames

    missing = [name for name in ("--frames", "--audio-root") if getattr(args, name[2:].replace("-", "_")) is None]
    if missing:
        raise ValueError(
            f"a frame-level probe needs both --frames LABELS.txt and --audio-root FOLDER; give {missing[0]}"
        )
    if args.pooling is not None:
        raise ValueError("--pooling is for utterance probes; a frame-level probe (--frames) scores every frame")
    report = probe_frames(
        args.model,
        args.frames,
        args.audio_root,
        train=args.train,
        test=args.test,
        test_fraction=0.2 if args.test_fraction is None else args.test_fraction,
        baselines=args.baselines or (),
        label=args.label or "phone",
        k=args.k,
        seed=args.seed,
        confusion_matrix=args.confusion_matrix,
    )
    _report_skipped([tuple(item) for item in report["skipped"]], "--audio-root", kind="file")
    counts = report["utterances"]
    if counts["with_audio"] < counts["labelled"]:
        print(
            f"--frames: {counts['labelled'] - counts['with_audio']} of {counts['labelled']} labelled utterances have "
            f"no audio under --audio-root (e.g. {report['missing_audio'][0]}); probing the {counts['with_audio']} "
            "that have",
            file=sys.stderr,
        )
    for item in report["mismatched"]:
        counts_text = ", ".join(f"{name} {value}" for name, value in item.items() if name != "sequence")
        print(
            f"--frames: '{item['sequence']}': frame counts differ by more than {FRAME_TOLERANCE} ({counts_text}); "
            "truncated to the shortest: check the labels' frame rate and the audio",
            file=sys.stderr,
        )
    print(f"split: {report['split']['description']}", file=sys.stderr)
    for name, scores in report["results"].items():
        print(
            f"{name}: linear probe {scores['linear_probe_top1']:.3f}, {scores['knn_k']}-NN {scores['knn_top1']:.3f}, "
            f"majority class {scores['majority_top1']:.3f} ({report['label']}, {report['test_frames']} test frames)",
            file=sys.stderr,
        )
    return report


def _report_skipped(skipped: list[tuple[str, str]], option: str, shown: int = 10, kind: str = "image") -> None:
    """Name the unreadable files (images by default) an option's data lost, on standard error (standard output is
    the JSON)."""
    for path, reason in skipped[:shown]:
        print(f"{option}: skipped unreadable {kind} {path} ({reason})", file=sys.stderr)
    if len(skipped) > shown:
        print(f"{option}: skipped {len(skipped) - shown} more unreadable {kind}s", file=sys.stderr)


def _open_image(path: str):
    """An ``--images`` file as an 8-bit RGB image; an unreadable file is an error that names it."""
    from PIL import Image

    from mmcontrast.modalities.image import to_rgb

    if not Path(path).exists():
        raise FileNotFoundError(f"--images: file '{path}' does not exist")
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"--images: '{path}' is not a readable image ({type(error).__name__}: {error})") from None


def _image_rows(option: str, source: str, split: str, *, labelled: bool) -> ImageRows:
    """The labelled (``--data``) or captioned (``--retrieval``) images of an option; unreadable files are named
    on standard error and counted in the report."""
    from mmcontrast.data.images import load_image_rows

    rows = load_image_rows(source, split=split)
    if labelled and not rows.classes:
        raise ValueError(
            f"{option} '{source}' has no class labels: give sklearn:digits or a folder with one sub-folder per class "
            "(captioned images go to --retrieval)"
        )
    if not labelled and any("caption" not in row for row in rows.rows):
        raise ValueError(
            f"{option} '{source}' has no captions: give a folder with metadata.csv / metadata.jsonl, or a csv / "
            "json / jsonl table, of file_name and text (labelled images go to --data)"
        )
    if not rows.rows:
        raise ValueError(f"{option} '{source}': no readable images ({len(rows.skipped)} unreadable)")
    _report_skipped(rows.skipped, option)
    return rows


def _zero_shot(args: argparse.Namespace) -> int:
    from mmcontrast.data.images import DecodedImages
    from mmcontrast.evaluation.plots import plot_confusion_matrix
    from mmcontrast.evaluation.zero_shot import (
        classes_by_name,
        image_text_retrieval,
        logit_scale,
        zero_shot_classifier,
        zero_shot_metrics,
    )
    from mmcontrast.hub.dual_encoders import load_dual_encoder
    from mmcontrast.hub.folders import folder_kind
    from mmcontrast.recipe import RECIPES  # noqa: F401  (registers the builders of mmcontrast-format folders)

    if Path(args.model).is_dir() and folder_kind(args.model).kind == "audio-text":
        return _zero_shot_audio(args)
    if Path(args.model).is_dir() and folder_kind(args.model).kind == "video-text":
        raise ValueError(
            f"--model '{args.model}' is a video-text model: zero-shot on videos runs in its recipe (eval:) or from "
            "Python (load_mmcontrast_clip(folder).encode('video', clips) / .encode('text', prompts)), not here"
        )
    if args.audio or args.pattern:
        option = "--audio" if args.audio else "--pattern"
        raise ValueError(f"{option} is for an audio-text (CLAP) model; --model '{args.model}' is not one")
    args.templates = args.templates or ["a photo of a {}."]
    if not (args.data or args.images or args.retrieval):
        raise ValueError("give --data (labelled images to score), --images (files to classify) or --retrieval")
    if args.confusion_matrix and not args.data:
        raise ValueError("--confusion-matrix needs --data (the labelled images it is computed on)")
    if args.classes and not (args.data or args.images):
        raise ValueError("--classes names the classes of --data or --images; --retrieval uses captions")
    rows = _image_rows("--data", args.data, args.split, labelled=True) if args.data else None
    images = [_open_image(path) for path in args.images or []]
    paired = _image_rows("--retrieval", args.retrieval, args.split, labelled=False) if args.retrieval else None
    classes, class_rows = list(args.classes or []), []
    if rows is not None:  # the data's labels are matched to the class names by name, never by position
        data_name = f"--data '{args.data}'"
        classes, class_rows = classes_by_name(args.classes, rows.classes, classes_name="--classes", data_name=data_name)
    if args.images and not classes:
        raise ValueError("--images without --data needs the class names: give --classes NAME ...")
    encoder = load_dual_encoder(args.model)
    report: dict[str, Any] = {}
    if classes:
        classifier = zero_shot_classifier(encoder, classes, args.templates)
        if rows is not None:
            if rows.skipped:
                report["skipped_images"] = len(rows.skipped)
            data_images = [DecodedImages(rows.rows)[i]["image"] for i in range(len(rows.rows))]
            labels = [class_rows[row["label"]] for row in rows.rows]
            report["zero_shot"], predictions = zero_shot_metrics(encoder.encode_images(data_images), labels, classifier)
            if args.confusion_matrix:
                plot_confusion_matrix(labels, predictions.tolist(), classes, args.confusion_matrix)
                report["confusion_matrix"] = args.confusion_matrix
        if images:
            scale = logit_scale(encoder)  # the model's own temperature, as the pipeline uses
            scores = (scale * encoder.encode_images(images) @ classifier.T).softmax(dim=-1)
            report["predictions"] = {
                path: classes[int(row.argmax())] + f" ({float(row.max()):.2f})"
                for path, row in zip(args.images, scores, strict=True)
            }
    if paired is not None:
        if paired.skipped:
            report["retrieval_skipped_images"] = len(paired.skipped)
        paired_images = [DecodedImages(paired.rows)[i]["image"] for i in range(len(paired.rows))]
        report["retrieval"] = image_text_retrieval(
            encoder.encode_images(paired_images), [row["caption"] for row in paired.rows], encoder
        )
    _emit(args, report)
    return 0


def _audio_rows(source: str, split: str, pattern: str | None, sample_rate: int) -> Any:
    """The labelled clips of ``--data`` at ``sample_rate``; with takes in the file names (FSDD), ``--split test``
    keeps takes 0-4, ``train`` the others, ``all`` every clip. Unreadable files are named on standard error."""
    from mmcontrast.data.audio import load_audio_rows, split_by_take
    from mmcontrast.recipes.clap import PATTERNS

    regex = PATTERNS.get(pattern, pattern) if pattern else None
    rows = load_audio_rows(source, pattern=regex, sample_rate=sample_rate)
    if not rows.classes:
        raise ValueError(
            f"--data '{source}' has no class labels: give a folder with one sub-folder per class, a metadata.csv with "
            "a label column, or files named by --pattern with a (?P<label>...) group (--pattern fsdd)"
        )
    if split not in ("test", "train", "all"):
        raise ValueError(f"--split must be test, train or all for audio --data, got '{split}'")
    if split != "all" and rows.rows and all("take" in row for row in rows.rows):
        train, test = split_by_take(rows)
        rows = test if split == "test" else train
    if not rows.rows:
        raise ValueError(f"--data '{source}': no clips in --split {split}")
    _report_skipped(rows.skipped, "--data", kind="audio file")
    return rows


def _zero_shot_audio(args: argparse.Namespace) -> int:
    """`mmcontrast zero-shot` with an audio-text (CLAP) model: --data labelled clips, --audio files to classify."""
    from mmcontrast.data.audio import DecodedAudio, load_audio
    from mmcontrast.evaluation.plots import plot_confusion_matrix
    from mmcontrast.evaluation.zero_shot import (
        AUDIO_TEMPLATES,
        classes_by_name,
        logit_scale,
        zero_shot_classifier,
        zero_shot_metrics,
    )
    from mmcontrast.hub.dual_encoders import load_audio_text_encoder

    if args.images or args.retrieval:
        option = "--images" if args.images else "--retrieval"
        raise ValueError(f"{option} is for an image-text model; --model '{args.model}' is an audio-text (CLAP) model")
    if not (args.data or args.audio):
        raise ValueError("give --data (labelled clips to score) or --audio (files to classify)")
    if args.confusion_matrix and not args.data:
        raise ValueError("--confusion-matrix needs --data (the labelled clips it is computed on)")
    encoder = load_audio_text_encoder(args.model)
    rate = encoder.sample_rate
    rows = _audio_rows(args.data, args.split, args.pattern, rate) if args.data else None
    classes, class_rows = list(args.classes or []), []
    if rows is not None:  # the data's labels are matched to the class names by name, never by position
        data_name = f"--data '{args.data}'"
        classes, class_rows = classes_by_name(args.classes, rows.classes, classes_name="--classes", data_name=data_name)
    if args.audio and not classes:
        raise ValueError("--audio without --data needs the class names: give --classes NAME ...")
    clips = []
    for path in args.audio or []:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--audio: file '{path}' does not exist")
        try:
            clips.append(load_audio(path, rate)[0])
        except ValueError as error:
            raise ValueError(f"--audio: '{path}' is not readable audio ({error})") from None
    templates = args.templates or [AUDIO_TEMPLATES[0]]
    classifier = zero_shot_classifier(encoder, classes, templates)
    report: dict[str, Any] = {}
    if rows is not None:
        if rows.skipped:
            report["skipped_audio"] = len(rows.skipped)
        decoded = DecodedAudio(rows)
        waveforms = [decoded[i]["audio"] for i in range(len(decoded))]
        labels = [class_rows[row["label"]] for row in rows.rows]
        report["zero_shot"], predictions = zero_shot_metrics(encoder.encode_audio(waveforms), labels, classifier)
        report["clips"] = len(labels)
        if args.confusion_matrix:
            plot_confusion_matrix(labels, predictions.tolist(), classes, args.confusion_matrix)
            report["confusion_matrix"] = args.confusion_matrix
    if clips:
        scores = (logit_scale(encoder) * encoder.encode_audio(clips) @ classifier.T).softmax(dim=-1)
        report["predictions"] = {
            path: classes[int(row.argmax())] + f" ({float(row.max()):.2f})"
            for path, row in zip(args.audio, scores, strict=True)
        }
    _emit(args, report)
    return 0


def _push(args: argparse.Namespace) -> int:
    from mmcontrast.hub.push import push_model

    url = push_model(
        args.model_dir,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        create_pr=args.create_pr,
        commit_message=args.commit_message,
        overwrite=args.overwrite,
    )
    print(f"pushed {args.model_dir}: {url}")
    if args.json:
        _emit(args, {"model_dir": args.model_dir, "url": str(url)})
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mmcontrast.demo import run_demo

    summary = run_demo(args.output_dir)
    if args.json:
        _emit(args, summary)
    return 0


def _recipe_docs(args: argparse.Namespace) -> int:
    from mmcontrast.recipe import recipe_reference

    if args.json:
        raise ValueError("--json does not apply to recipe-docs: its output is the markdown of docs/recipes.md")
    print(recipe_reference(), end="")
    return 0


def _recipes_list(args: argparse.Namespace) -> int:
    """``mmcontrast recipes list``: the shipped recipes, one a line, with what data they need from elsewhere."""
    from mmcontrast.recipe_files import recipes_folder, shipped_recipes

    recipes = shipped_recipes()
    if args.json:
        _emit(args, [{"name": r.name, "description": r.description, "data": r.data} for r in recipes])
        return 0
    width = max(len(recipe.name) for recipe in recipes)
    for recipe in recipes:
        needs = f" [needs: {', '.join(recipe.data)}]" if recipe.data else ""
        print(f"{recipe.name:<{width}}  {recipe.description}{needs}")
    print(
        f"\n{len(recipes)} recipes in {recipes_folder()}; mmcontrast recipes copy NAME [DEST] writes one to edit. "
        "'needs' lists the data a recipe reads from outside the package: ../ paths are relative to where you run "
        "mmcontrast train (a clone of the repository next to its shared data), or set data.train=... yourself.",
        file=sys.stderr,
    )
    return 0


def _recipes_copy(args: argparse.Namespace) -> int:
    """``mmcontrast recipes copy NAME [DEST]``: write a shipped recipe to a file to edit and train from."""
    from mmcontrast.recipe_files import copy_recipe, find_recipe

    recipe = find_recipe(args.name)
    path = copy_recipe(recipe.name, args.destination, force=args.force)
    print(f"wrote {path}" + (f" (it reads {', '.join(recipe.data)}: set them to your data)" if recipe.data else ""))
    if args.json:
        _emit(args, {"recipe": recipe.name, "path": str(path), "data": recipe.data})
    return 0


def _mine_negatives(args: argparse.Namespace) -> int:
    """``mmcontrast mine-negatives``: hard negatives for (anchor, positive) pairs from a corpus, with a text model."""
    from mmcontrast.evaluation.hard_negatives import mine_hard_negatives, save_table
    from mmcontrast.evaluation.sources import evaluation_table
    from mmcontrast.hub.folders import check_model_folder
    from mmcontrast.modalities.text import TextEncoder

    anchor, positive = args.columns
    table = evaluation_table(
        args.data,
        name="--data",
        columns=args.columns,
        columns_hint="Set --columns ANCHOR POSITIVE to the anchor and positive columns of your data.",
        limit=args.limit,
    )
    corpus = None
    if args.corpus is not None:
        corpus = evaluation_table(
            args.corpus,
            name="--corpus",
            columns=[args.corpus_column],
            columns_hint="Set --corpus-column to the text column of the corpus.",
        )[args.corpus_column]
    check_model_folder(args.model, "text")
    encoder = TextEncoder.from_pretrained(args.model)
    mined = mine_hard_negatives(
        table[anchor],
        table[positive],
        lambda texts: encoder.encode(texts, args.batch_size, show_progress=True, desc="embed"),
        corpus=corpus,
        num_negatives=args.num_negatives,
        range_min=args.range_min,
        range_max=args.range_max,
        max_score=args.max_score,
        margin=args.margin,
        sampling=args.sampling,
        seed=args.seed,
    )
    path = save_table(mined.rows(args.output_format, args.columns), args.output)
    summary = {"output": str(path), **mined.summary(args.output_format)}
    negative_mean = summary["mean_negative_score"]
    print(
        f"{summary['rows_in']} rows in ({summary['pairs']} distinct pairs, {summary['anchors']} anchors), corpus of "
        f"{summary['corpus']} texts -> {summary['rows_out']} {args.output_format} rows in {path}; mean cosine "
        f"similarity to the anchor: positives {summary['mean_positive_score']:.4f}, negatives "
        + ("none mined" if negative_mean is None else f"{negative_mean:.4f}")
        + f"; removed {summary['removed_by_margin']} candidates by --margin, {summary['removed_by_max_score']} by "
        f"--max-score; {summary['anchors_short_of_negatives']} anchors have fewer than {args.num_negatives} negatives",
        file=sys.stderr,
    )
    _emit(args, summary)
    return 0


def _emit(args: argparse.Namespace, result: Any) -> None:
    """Print a command's result as JSON on the real standard output (with --json, the only thing printed there)."""
    print(json.dumps(result, indent=1), file=args.stdout)


def _non_negative_int(text: str) -> int:
    """An argparse type: an integer of at least 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


_DEBUG_HELP = "on an error, print the Python traceback too"
_JSON_HELP = "print only the result, as one JSON document, on standard output; every other message on standard error"


def build_parser() -> argparse.ArgumentParser:
    """The ``mmcontrast`` argument parser; ``--debug`` and ``--json`` are accepted before or after the subcommand."""
    parser = argparse.ArgumentParser(prog="mmcontrast", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    parser.add_argument("--json", action="store_true", help=_JSON_HELP)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=_JSON_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_command(name: str, **options: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], description=options.get("help"), **options)

    train = add_command("train", help="train from a recipe: mmcontrast train RECIPE.yaml [key=value ...]")
    train.add_argument("recipe", help="a recipes/*.yaml file")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 output_dir=runs/x")
    train.set_defaults(func=_train)

    evaluate = add_command(
        "eval", help="evaluate a saved model: text STS / retrieval, or a linear probe + kNN of any encoder"
    )
    evaluate.add_argument("task", choices=["sts", "retrieval", "probe", "video"])
    evaluate.add_argument(
        "--model",
        required=True,
        help="sts, retrieval: a text model folder; probe: any audio, image, text or video encoder; video: a video "
        "encoder",
    )
    evaluate.add_argument(
        "--data",
        help="STS: scored pairs (STS-B TSV or table); retrieval: pairs; video: a folder or table of videos, or "
        "moving_digits (generated)",
    )
    evaluate.add_argument("--columns", nargs=2, default=["anchor", "positive"], help="retrieval (query, doc)")
    evaluate.add_argument("--batch-size", type=_positive_int, default=64)
    evaluate.add_argument("--limit", type=_positive_int, default=None, help="first N rows only")
    evaluate.add_argument(
        "--train",
        help="probe: the table the probes are fit on (file_name + label columns); with --frames, an optional list of "
        "training sequences (one name a line)",
    )
    evaluate.add_argument(
        "--test", help="probe: the table they are scored on; with --frames, an optional list of test sequences"
    )
    evaluate.add_argument(
        "--label", help="probe: the label column of both tables; with --frames, the labels' name (default phone)"
    )
    evaluate.add_argument(
        "--frames",
        help="probe, audio: frame labels in CPC_audio's format ('SEQ_NAME label label ...', one per 10 ms frame): "
        "a frame-level probe",
    )
    evaluate.add_argument(
        "--audio-root", help="probe, with --frames: the folder searched (recursively) for SEQ_NAME.flac / .wav"
    )
    evaluate.add_argument(
        "--test-fraction",
        type=float,
        help="probe, with --frames and no --train / --test lists: utterances held out (default 0.2; two utterances: "
        "each scored by a probe fit on the other)",
    )
    evaluate.add_argument(
        "--update-card",
        action="store_true",
        default=None,
        help="probe: write the model's accuracies into the folder's README.md model card (model-index entries)",
    )
    evaluate.add_argument(
        "--dataset-name", help="probe, with --update-card: the dataset named in the card (default: the table names)"
    )
    evaluate.add_argument("--pooling", choices=["mean", "last"], help="probe, audio: frames pooled (default mean)")
    evaluate.add_argument("--output", help="probe, video: write the metrics JSON here")
    evaluate.add_argument("--confusion-matrix", help="probe: write the linear probe's confusion matrix PNG here")
    evaluate.add_argument(
        "--baselines", nargs="+", choices=["random-init", "mfcc"], help="probe: baselines on the same rows"
    )
    evaluate.add_argument("--k", type=_positive_int, default=20, help="probe: neighbours of the kNN probe")
    evaluate.add_argument("--seed", type=int, default=0, help="probe, video: seed of the random-init baseline")
    evaluate.add_argument(
        "--views",
        type=_positive_int,
        default=2,
        help="video: views per video (a table's synchronised views by its sync column, else augmented copies)",
    )
    evaluate.add_argument("--fps", type=float, default=4.0, help="video: frames per second decoded")
    evaluate.add_argument("--size", type=_positive_int, default=64, help="video: shorter side of decoded frames")
    evaluate.add_argument("--max-frames", type=_positive_int, default=64, help="video: frames per view at most")
    evaluate.add_argument("--plots", help="video: a folder for the alignment matrix and embedding trajectories")
    evaluate.set_defaults(func=_eval)

    zero_shot = add_command(
        "zero-shot",
        help="zero-shot image / audio classification, image-text retrieval with a saved dual encoder (CLIP, CLAP)",
    )
    zero_shot.add_argument(
        "--model",
        required=True,
        help="an exported CLIP or CLAP folder (transformers, open_clip or mmcontrast format)",
    )
    zero_shot.add_argument("--classes", nargs="+", help="class names (default: the --data class names)")
    zero_shot.add_argument(
        "--templates",
        nargs="+",
        help="prompt templates, averaged per class (default: 'a photo of a {}.'; audio: 'This is a sound of {}.')",
    )
    zero_shot.add_argument(
        "--data",
        help="labelled images (sklearn:digits or a folder with a sub-folder per class) or, for a CLAP model, "
        "labelled clips (class sub-folders, a metadata.csv table, or files named by --pattern)",
    )
    zero_shot.add_argument(
        "--split",
        default="test",
        help="split of sklearn:digits, or of audio --data with takes in the names (test: takes 0-4; train, all)",
    )
    zero_shot.add_argument(
        "--pattern", help="audio --data: a regular expression over file names with (?P<label>...) etc., or 'fsdd'"
    )
    zero_shot.add_argument("--images", nargs="+", help="image files to classify")
    zero_shot.add_argument("--audio", nargs="+", help="audio files to classify (with a CLAP model)")
    zero_shot.add_argument("--confusion-matrix", help="write the confusion matrix of --data to this PNG")
    zero_shot.add_argument("--retrieval", help="captioned images for image-text retrieval recall@1/5/10")
    zero_shot.set_defaults(func=_zero_shot)

    push = add_command(
        "push", help="upload a trained model folder to the Hugging Face Hub (token: hf auth login, or HF_TOKEN)"
    )
    push.add_argument("model_dir", help="the model folder of a run (OUTPUT_DIR/model), with its README.md card")
    push.add_argument("--repo-id", required=True, help="USER/NAME or ORG/NAME of the model repo (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repo private (an existing one keeps its own)")
    push.add_argument("--revision", help="push to this branch (created from main when missing)")
    push.add_argument("--create-pr", action="store_true", help="open a pull request against main instead")
    push.add_argument("--commit-message", help="message of the commit")
    push.add_argument(
        "--overwrite", action="store_true", help="replace a repo that holds files the folder does not have"
    )
    push.set_defaults(func=_push)

    demo = add_command("demo", help="the offline demo (what make demo runs): train a small CLIP on digits")
    demo.add_argument("--output-dir", default="runs/demo")
    demo.set_defaults(func=_demo)
    docs = add_command("recipe-docs", help="print the recipe reference (docs/recipes.md) as markdown")
    docs.set_defaults(func=_recipe_docs)
    _add_recipes_command(
        add_command("recipes", help="list the recipe files shipped with mmcontrast, or copy one"), common
    )
    _add_mine_negatives_command(
        add_command("mine-negatives", help="mine hard negatives for (anchor, positive) pairs with a text model")
    )
    return parser


def _add_recipes_command(recipes: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    actions = recipes.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", parents=[common], help="name, description and outside data of every shipped recipe"
    )
    listing.set_defaults(func=_recipes_list)
    copy = actions.add_parser("copy", parents=[common], help="write a shipped recipe to a file to edit")
    copy.add_argument("name", help="the recipe, as recipes list names it (e.g. sbert_pairs)")
    copy.add_argument("destination", nargs="?", default=".", help="a folder (default: here) or a file name")
    copy.add_argument("--force", action="store_true", help="overwrite an existing file")
    copy.set_defaults(func=_recipes_copy)


def _add_mine_negatives_command(mine: argparse.ArgumentParser) -> None:
    mine.add_argument(
        "--model", required=True, help="a text model folder (sentence-transformers or transformers, a run's model)"
    )
    mine.add_argument("--data", required=True, help="a table (csv, tsv, json, jsonl, parquet) of anchor, positive")
    mine.add_argument(
        "--columns",
        nargs=2,
        default=["anchor", "positive"],
        metavar=("ANCHOR", "POSITIVE"),
        help="the anchor and positive columns of --data (default anchor positive)",
    )
    mine.add_argument("--corpus", help="a table of candidate texts (default: the positives of --data)")
    mine.add_argument("--corpus-column", default="text", help="the text column of --corpus (default text)")
    mine.add_argument("--output", required=True, help="the file written: .jsonl, .json, .csv or .parquet")
    mine.add_argument(
        "--output-format",
        choices=["triplet", "n-tuple"],
        default="triplet",
        help="triplet: a row per negative; n-tuple: a row per pair with negative_1 ... negative_N",
    )
    mine.add_argument("--num-negatives", type=_positive_int, default=3, help="negatives per anchor (default 3)")
    mine.add_argument(
        "--range-min", type=_non_negative_int, default=0, help="skip the most similar candidates: ranks below this"
    )
    mine.add_argument("--range-max", type=_positive_int, help="consider ranks below this only (default: all)")
    mine.add_argument("--max-score", type=float, help="drop candidates with a cosine similarity above this")
    mine.add_argument(
        "--margin", type=float, help="drop candidates scoring above the anchor's lowest positive score minus this"
    )
    mine.add_argument("--sampling", choices=["top", "random"], default="top", help="the best candidates, or random")
    mine.add_argument("--seed", type=int, default=0, help="seed of --sampling random")
    mine.add_argument("--batch-size", type=_positive_int, default=64, help="texts per encoder call")
    mine.add_argument("--limit", type=_positive_int, help="the first N rows of --data only")
    mine.set_defaults(func=_mine_negatives)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions caused by what the user gave: a file, a folder, a value, a table, a model name, the network,
    a run folder or checkpoint, settings that make training diverge. A new error type of mmcontrast that reports
    a bad input subclasses ``ValueError`` or ``OSError``, or is listed here."""
    from datasets.exceptions import DatasetsError
    from safetensors import SafetensorError

    from mmcontrast.engine.checkpoints import CheckpointError
    from mmcontrast.engine.run_folder import RunFolderError
    from mmcontrast.engine.trainer import TrainingDivergedError
    from mmcontrast.hub.push import PushError
    from mmcontrast.methods.base import NonFiniteError

    return (
        OSError,
        ValueError,
        yaml.YAMLError,
        DatasetsError,
        SafetensorError,
        PushError,
        CheckpointError,
        RunFolderError,
        TrainingDivergedError,
        NonFiniteError,
    )


def _recipe_values(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Every text value of a recipe by its dotted key (``model.name_or_path``)."""
    values: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            values.update(_recipe_values(value, f"{prefix}{key}."))
        elif isinstance(value, str) and value:
            values[f"{prefix}{key}"] = value
    return values


def _option_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """The text values given to the subcommand, by their option (``--model``) or positional name (``RECIPE``)."""
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    values = {}
    for action in commands.choices[args.command]._actions:
        value = getattr(args, action.dest, None)
        if isinstance(value, str):
            values[action.option_strings[0] if action.option_strings else action.dest.upper()] = value
    return values


def _named(message: str, named: dict[str, str]) -> str:
    """Prefix the option or recipe key whose value the message quotes, unless the message names it already.

    Loaders name the file or model they failed on ('runs/x/model'), not the key that gave it; the user needs
    the key. A value given by several keys is left unattributed.
    """
    quoted = set(re.findall(r"'([^']+)'", message))
    keys = [key for key, value in named.items() if value in quoted or str(Path(value)) in quoted]
    if len(keys) != 1 or re.search(rf"(?<![\w.-]){re.escape(keys[0])}(?![\w-])", message, re.IGNORECASE):
        return message
    return f"{keys[0]}: {message}"


def _message(error: BaseException) -> str:
    """The error's message on one line; a file-system error names its file, a wrapper error its cause."""
    from datasets.exceptions import DatasetsError

    if isinstance(error, OSError) and error.filename and error.strerror:
        text = f"'{error.filename}': {error.strerror}"
    elif isinstance(error, DatasetsError) and error.__cause__ is not None:
        text = f"{error}: {_message(error.__cause__)}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an error is one line on standard error (exit 2, or 1 when unexpected): see docs/cli.md.

    With ``--json`` everything the command prints goes to standard error while it runs, and its result alone, as
    JSON, to standard output."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.named = _option_values(parser, args)
    args.stdout = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            return args.func(args)
    except KeyboardInterrupt:
        print(f"mmcontrast {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            traceback.print_exc()
        message = _named(_message(error), args.named)
        expected = isinstance(error, _user_errors())
        if not expected:
            message = f"{type(error).__name__}: {message}"
            message += " (an unexpected error" + ("" if args.debug else "; rerun with --debug for the traceback") + ")"
        print(f"mmcontrast {args.command}: error: {message}", file=sys.stderr)
        return 2 if expected else 1


if __name__ == "__main__":
    sys.exit(main())
