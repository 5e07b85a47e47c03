"""Recipe comparison on bench/reproduce_cifar10.sh's setting: label smoothing + EMA + cosine
with warm-up against the paper's recipe, equal epochs, 2 seeds each (no target: the
difference and its spread are the finding).

    python bench/train_recipe.py                              # reduced: 8,000 images
    python bench/train_recipe.py --train-limit 25000          # the script's full setting

reproduce_cifar10.sh's setting: hmff-mobilenet-32ch at 32 px, 8 epochs, batch 64, Adam 1e-3,
real CIFAR-10 (10% of the training folder for validation, the data's test split).
``--train-limit`` defaults below the script's 25,000 so that four runs fit a shared CPU;
the record says which was used. Writes bench/results/train_recipe.{json,md}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _train_bench import DEFAULT_CIFAR10, REPO, summary, train, write_record

from hmff_edge.tables import markdown_table

ARMS = {
    "paper": [],
    "smooth+ema+cosine": ["--label-smoothing", "0.1", "--ema", "--schedule", "cosine",
                          "--warmup-epochs", "1"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_CIFAR10)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench-recipe")
    ap.add_argument("--model", default="hmff-mobilenet-32ch")
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--train-limit", type=int, default=8000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    a = ap.parse_args()
    base = ["--model", a.model, "--data", str(a.data), "--img-size", str(a.img_size),
            "--epochs", str(a.epochs), "--train-limit", str(a.train_limit)]
    runs: dict[str, list[dict]] = {k: [] for k in ARMS}
    for seed in a.seeds:  # interleaved, so that machine load drifts hit both arms alike
        for arm, extra in ARMS.items():
            runs[arm].append(train([*base, "--seed", str(seed), *extra],
                                   a.work / f"{arm.replace('+', '-')}-s{seed}"))
    acc = {k: [r["metrics"]["accuracy"] for r in v] for k, v in runs.items()}
    stats = {k: summary(v) for k, v in acc.items()}
    diffs = [b - p for p, b in zip(acc["paper"], acc["smooth+ema+cosine"], strict=True)]
    record = {
        "command": f"python bench/train_recipe.py --model {a.model} --img-size {a.img_size} "
                   f"--epochs {a.epochs} --train-limit {a.train_limit} --seeds "
                   + " ".join(map(str, a.seeds)),
        "setting": "bench/reproduce_cifar10.sh (32 px, 8 epochs, batch 64, Adam 1e-3) with "
                   f"--train-limit {a.train_limit} instead of 25000",
        "arms": {k: " ".join(v) or "(defaults)" for k, v in ARMS.items()},
        "runs": {k: [{"seed": s, "command": r["command"], "test_accuracy": r["metrics"]["accuracy"],
                      "best_epoch": r["best_epoch"], "best_val_accuracy": r["best_val_accuracy"],
                      "wall_seconds": r["wall_seconds"], "train_images": r["data"]["train"],
                      "test_images": r["data"]["test"]}
                     for s, r in zip(a.seeds, v, strict=True)] for k, v in runs.items()},
        "test_accuracy": stats,
        "difference_points_per_seed": [d * 100 for d in diffs],
        "difference_points_mean": summary(diffs)["mean"] * 100,
    }
    table = markdown_table(
        [{"arm": k, "options": f"`{record['arms'][k]}`",
          "seeds": ", ".join(f"{x:.4f}" for x in acc[k]), "mean": f"{stats[k]['mean']:.4f}",
          "spread": f"{stats[k]['max'] - stats[k]['min']:.4f}"} for k in ARMS],
        [("arm", "arm"), ("options", "options"), ("seeds", "test accuracy per seed"),
         ("mean", "mean"), ("spread", "spread (max-min)")])
    md = (f"# Recipe: label smoothing + EMA + cosine/warm-up vs the paper's recipe\n\n"
          f"`{record['command']}`\n\n{{HEAD}}Setting: {record['setting']}; "
          f"{runs['paper'][0]['data']['train']} training images, "
          f"{runs['paper'][0]['data']['test']} test images.\n\n"
          f"{table}\n\nDifference (new - paper) per seed: "
          + ", ".join(f"{d * 100:+.1f}" for d in diffs)
          + f" points; mean {record['difference_points_mean']:+.1f}.\n")
    print(md)
    write_record("train_recipe", record, md)


if __name__ == "__main__":
    main()
