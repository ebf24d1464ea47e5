"""CPC on the spoken digits, end to end: train ``recipes/cpc_fsdd.yaml`` (timed), then probe the exported context
vectors against the MFCC and random-init baselines on the FSDD test takes (0-4).

Two protocols, each for the digit and the speaker (logistic regression on standardised features, and 20-NN):

- ``last``: the context vector of the clip's last frame (the CPC paper's protocol) against one MFCC frame: the
  clip's last (what ``eval probe --pooling last`` gives) and its middle frame (the stronger of the two on digits);
- ``mean``: features averaged over the clip against MFCC mean and standard deviation over time.

Writes the table to stdout and ``benchmarks/results/cpc_fsdd.json``, and the model's probe accuracies into its
model card (model-index entries, as ``mmcontrast eval probe --update-card``); exits 1 when training took longer than the
issue's 10 minutes or when CPC does not beat both baselines (every MFCC frame choice, random init) with the
``last`` protocol on digit and speaker.

    python benchmarks/cpc_fsdd.py                 # train (about 6 minutes here) + probes (about 4)
    python benchmarks/cpc_fsdd.py --skip-train    # probe an existing runs/cpc_fsdd/model
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"
TRAIN_BUDGET_SECONDS = 600
FSDD_NAME = re.compile(r"(?P<digit>\d)_(?P<speaker>[a-z]+)_(?P<take>\d+)\.wav")


def write_tables(recordings: Path, folder: Path) -> tuple[Path, Path]:
    """``train.csv`` (takes 5-49) and ``test.csv`` (takes 0-4) with ``file_name,digit,speaker`` columns."""
    folder.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for path in sorted(recordings.glob("*.wav")):
        match = FSDD_NAME.fullmatch(path.name)
        if match:
            split = "test" if int(match["take"]) < 5 else "train"
            lines[split].append(f"{path.resolve()},{match['digit']},{match['speaker']}")
    for split, rows in lines.items():
        (folder / f"{split}.csv").write_text("file_name,digit,speaker\n" + "\n".join(rows) + "\n")
    return folder / "train.csv", folder / "test.csv"


def middle_mfcc_accuracy(model: Path, train: Path, test: Path, label: str) -> float:
    """Linear-probe accuracy of the clip's middle MFCC frame (same MFCC settings as the ``eval probe`` baseline)."""
    import torch

    from mmcontrast.evaluation.features import load_encoder, load_probe_table, mfcc_transform
    from mmcontrast.evaluation.probe import linear_probe_accuracy

    rate = load_encoder(model).model.sample_rate
    transform = mfcc_transform(rate)
    window = transform.MelSpectrogram.spectrogram.n_fft
    tables = {
        split: load_probe_table(path, label, "audio", option=split, sample_rate=rate)
        for split, path in (("train", train), ("test", test))
    }
    classes = sorted(set(tables["train"].labels))
    features, labels = {}, {}
    for split, table in tables.items():
        frames = []
        for waveform in table.inputs:
            padded = torch.nn.functional.pad(waveform, (0, max(0, window - waveform.shape[-1])))
            coefficients = transform(padded.float())
            frames.append(coefficients[:, coefficients.shape[1] // 2])
        features[split] = torch.stack(frames)
        labels[split] = [classes.index(name) for name in table.labels]
    return linear_probe_accuracy(features["train"], labels["train"], features["test"], labels["test"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "cpc_fsdd.yaml"))
    parser.add_argument("--output-dir", default=str(ROOT / "runs" / "cpc_fsdd"))
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--skip-train", action="store_true", help="probe the model already in --output-dir")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "cpc_fsdd.json"))
    args = parser.parse_args()
    recordings, output = Path(args.data), Path(args.output_dir)
    if not recordings.is_dir():
        print(f"SKIP: the spoken digits are not at {recordings} (give --data)")
        return 0
    result: dict = {"recipe": args.recipe, "output_dir": str(output)}
    if not args.skip_train:
        command = [
            str(Path(sys.executable).with_name("mmcontrast")),
            "train",
            args.recipe,
            f"output_dir={output}",
            f"data.train={recordings}",
            "overwrite_output_dir=true",
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        result["train_seconds"] = round(time.perf_counter() - start, 1)
        summary = json.loads((output / "summary.json").read_text())
        history = json.loads((output / "training_log.json").read_text())
        result["steps"], result["loss_first"], result["loss_last"] = (
            summary["global_step"],
            history[0]["loss"],
            history[-1]["loss"],
        )
    from mmcontrast.evaluation.probe import probe_card_results, probe_encoder_folder
    from mmcontrast.hub.model_card import update_card_results

    model = output / "model"
    train, test = write_tables(recordings, output / "probe_tables")
    probes: dict[str, dict] = {}
    for label in ("digit", "speaker"):
        for pooling in ("last", "mean"):
            report = probe_encoder_folder(model, train, test, label, pooling=pooling, baselines=("random-init", "mfcc"))
            probes[f"{label}/{pooling}"] = report["results"]
            # the model's own accuracies into its model card, as model-index entries (`eval probe --update-card`)
            update_card_results(model, probe_card_results(report, "fsdd (takes 5-49 / 0-4)"), modality="audio")
            print(f"{label}/{pooling}: {json.dumps(report['results'])}", flush=True)
        probes[f"{label}/last"]["mfcc-middle-frame"] = {
            "linear_probe_top1": middle_mfcc_accuracy(model, train, test, label)
        }
    result["probes"] = probes

    def top1(key: str, features: str, metric: str = "linear_probe_top1") -> str:
        value = probes[key].get(features, {}).get(metric)
        return "" if value is None else f"{value:.3f}"

    print("\n| features | digit, last | digit, mean | speaker, last | speaker, mean |\n|---|---|---|---|---|")
    for name, features in (
        ("CPC (this run)", "model"),
        ("same encoder, random init", "random-init"),
        ("MFCC (last: the last frame)", "mfcc"),
        ("MFCC (last: the middle frame)", "mfcc-middle-frame"),
    ):
        cells = [f"{top1(key, features)} / {top1(key, features, 'knn_top1')}".rstrip(" /") for key in probes]
        print(f"| {name} | " + " | ".join(cells) + " |")
    failures = []
    if result.get("train_seconds", 0) > TRAIN_BUDGET_SECONDS:
        failures.append(f"training took {result['train_seconds']} s, over {TRAIN_BUDGET_SECONDS} s")
    for label in ("digit", "speaker"):
        scores = probes[f"{label}/last"]
        cpc = scores["model"]["linear_probe_top1"]
        for baseline in ("random-init", "mfcc", "mfcc-middle-frame"):
            if cpc <= scores[baseline]["linear_probe_top1"]:
                failures.append(
                    f"{label}, last: CPC {cpc:.3f} <= {baseline} {scores[baseline]['linear_probe_top1']:.3f}"
                )
    result["failures"] = failures
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=1) + "\n")
    print(f"\ntraining: {result.get('train_seconds', 'skipped')} s; results in {args.results}")
    for failure in failures:
        print(f"FAIL: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
