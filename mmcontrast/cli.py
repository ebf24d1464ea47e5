"""``mmcontrast`` command line: train | eval | zero-shot | push | demo | recipe-docs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from mmcontrast.typed_config import ConfigError


def _train(args: argparse.Namespace) -> int:
    from mmcontrast.recipe import load_recipe
    from mmcontrast.train import train_recipe

    recipe, raw = load_recipe(args.recipe, args.overrides)
    summary = train_recipe(recipe, raw)
    if summary["skipped_rows"]:
        print(f"skipped {summary['skipped_rows']} bad rows of data.train (data.skip_bad_rows=true)")
    print(json.dumps(summary, indent=1))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from mmcontrast.evaluation.retrieval import RetrievalEvaluator
    from mmcontrast.evaluation.sts import STSEvaluator
    from mmcontrast.modalities.text import TextEncoder

    encoder = TextEncoder.from_pretrained(args.model)

    def encode(texts):
        return encoder.encode(texts, args.batch_size, show_progress=True)

    if args.task == "sts":
        metrics = STSEvaluator.from_file(args.data, limit=args.limit)(encode)
    else:
        metrics = RetrievalEvaluator.from_pairs(args.data, columns=args.columns, limit=args.limit)(encode)
    print(json.dumps(metrics, indent=1))
    return 0


def _zero_shot(args: argparse.Namespace) -> int:
    from PIL import Image

    from mmcontrast.data.images import DecodedImages, load_image_rows
    from mmcontrast.evaluation.plots import plot_confusion_matrix
    from mmcontrast.evaluation.zero_shot import (
        image_text_retrieval,
        logit_scale,
        zero_shot_classifier,
        zero_shot_metrics,
    )
    from mmcontrast.recipes.clip import load_dual_encoder

    if not (args.data or args.images or args.retrieval):
        raise ValueError("give --data (labelled images to score), --images (files to classify) or --retrieval")
    encoder = load_dual_encoder(args.model)
    report: dict = {}
    if args.data or args.images:
        rows = load_image_rows(args.data, split=args.split) if args.data else None
        classes = args.classes or (rows.classes if rows else None)
        if not classes:
            raise ValueError("give the class names with --classes (the data has no class names)")
        classifier = zero_shot_classifier(encoder, classes, args.templates)
        if rows is not None:
            if rows.skipped:
                report["skipped_images"] = len(rows.skipped)
            images = [DecodedImages(rows.rows)[i]["image"] for i in range(len(rows.rows))]
            labels = [row["label"] for row in rows.rows]
            report["zero_shot"], predictions = zero_shot_metrics(encoder.encode_images(images), labels, classifier)
            if args.confusion_matrix:
                plot_confusion_matrix(labels, predictions.tolist(), classes, args.confusion_matrix)
                report["confusion_matrix"] = args.confusion_matrix
        if args.images:
            opened = []
            for path in args.images:
                with Image.open(path) as image:
                    opened.append(image.convert("RGB"))
            scale = logit_scale(encoder)  # the model's own temperature, as the pipeline uses
            scores = (scale * encoder.encode_images(opened) @ classifier.T).softmax(dim=-1)
            report["predictions"] = {
                path: classes[int(row.argmax())] + f" ({float(row.max()):.2f})"
                for path, row in zip(args.images, scores, strict=True)
            }
    if args.retrieval:
        paired = load_image_rows(args.retrieval, split=args.split)
        images = [DecodedImages(paired.rows)[i]["image"] for i in range(len(paired.rows))]
        report["retrieval"] = image_text_retrieval(
            encoder.encode_images(images), [row["caption"] for row in paired.rows], encoder
        )
    print(json.dumps(report, indent=1))
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
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mmcontrast.demo import run_demo

    run_demo(args.output_dir)
    return 0


def _recipe_docs(args: argparse.Namespace) -> int:
    from mmcontrast.recipe import recipe_reference

    print(recipe_reference(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmcontrast", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train from a recipe: mmcontrast train RECIPE.yaml [key=value ...]")
    train.add_argument("recipe", help="a recipes/*.yaml file")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 output_dir=runs/x")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("eval", help="evaluate a saved text model")
    evaluate.add_argument("task", choices=["sts", "retrieval"])
    evaluate.add_argument("--model", required=True, help="a sentence-transformers or transformers folder")
    evaluate.add_argument("--data", required=True, help="STS: scored pairs (STS-B TSV or table); retrieval: pairs")
    evaluate.add_argument("--columns", nargs=2, default=["anchor", "positive"], help="retrieval (query, doc)")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--limit", type=int, default=None, help="first N rows only")
    evaluate.set_defaults(func=_eval)

    zero_shot = commands.add_parser(
        "zero-shot", help="zero-shot image classification / image-text retrieval with a saved dual encoder"
    )
    zero_shot.add_argument(
        "--model", required=True, help="an exported CLIP folder (transformers, open_clip or mmcontrast format)"
    )
    zero_shot.add_argument("--classes", nargs="+", help="class names (default: the --data class names)")
    zero_shot.add_argument(
        "--templates", nargs="+", default=["a photo of a {}."], help="prompt templates, averaged per class"
    )
    zero_shot.add_argument("--data", help="labelled images: sklearn:digits or a folder with a sub-folder per class")
    zero_shot.add_argument("--split", default="test", help="split of sklearn:digits (train, test, all)")
    zero_shot.add_argument("--images", nargs="+", help="image files to classify")
    zero_shot.add_argument("--confusion-matrix", help="write the confusion matrix of --data to this PNG")
    zero_shot.add_argument("--retrieval", help="captioned images for image-text retrieval recall@1/5/10")
    zero_shot.set_defaults(func=_zero_shot)

    push = commands.add_parser(
        "push", help="upload a trained model folder to the Hugging Face Hub (token: `hf auth login` or HF_TOKEN)"
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

    demo = commands.add_parser("demo", help="the offline demo run by `make demo`")
    demo.add_argument("--output-dir", default="runs/demo")
    demo.set_defaults(func=_demo)
    docs = commands.add_parser("recipe-docs", help="print the recipe reference (docs/recipes.md) as markdown")
    docs.set_defaults(func=_recipe_docs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from mmcontrast.hub.push import PushError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError, PushError) as error:
        print(f"mmcontrast {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
