"""Transfer target: cat vs dog (CIFAR-10, 1,000 training images each, 32 px) fine-tuned from
a run trained on the other 8 classes, against the same budget from random weights.

    python bench/train_transfer.py                        # defaults below
    python bench/train_transfer.py --pre-limit 40000 --pre-epochs 20 --epochs 20
    python bench/train_transfer.py --source runs/x --tag _x   # reuse a trained 8-class run

Steps: symlink folders for the 8-class set and the 2-class set (CIFAR-10's own test split,
500 + 500 test images), train the 8-class source run once, then for each seed train the
cat/dog run from random weights and with ``--init-from`` the source (new 2-class head,
``--freeze-epochs`` head-only epochs first). Writes bench/results/train_transfer.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from _train_bench import DEFAULT_CIFAR10, REPO, summary, train, write_record

from hmff_edge.tables import markdown_table

PAIR = ("cat", "dog")


def link_subset(src: Path, dst: Path, classes: list[str], per_class: int | None) -> Path:
    """``dst/{train,test}/CLASS/*`` symlinks to the first ``per_class`` training images."""
    for part in ("train", "test"):
        for c in classes:
            d = dst / part / c
            d.mkdir(parents=True, exist_ok=True)
            files = sorted((src / part / c).iterdir())
            if part == "train" and per_class:
                files = files[:per_class]
            for f in files:
                link = d / f.name
                if not link.exists():
                    os.symlink(f, link)
    return dst


def describe_run(run: Path) -> dict:
    """What the record needs of an existing source run (the shape ``train`` returns)."""
    cfg = json.loads((run / "config.json").read_text())
    hist = (run / "history.csv").read_text().strip().splitlines()
    return {"command": f"(existing run {run}: {len(hist) - 1} epochs, see its config.json)",
            "metrics": json.loads((run / "metrics.json").read_text()),
            "data": cfg["counts"], "wall_seconds": None, "epochs": len(hist) - 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_CIFAR10)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench-transfer")
    ap.add_argument("--model", default="hmff-mobilenet-32ch")
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--pre-limit", type=int, default=16000, help="8-class training images")
    ap.add_argument("--pre-epochs", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=10, help="cat/dog epochs (both arms)")
    ap.add_argument("--freeze-epochs", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--source", type=Path, help="an existing 8-class run to start from "
                    "(skips training one; --pre-* are then ignored)")
    ap.add_argument("--tag", default="", help="suffix of the record's name")
    a = ap.parse_args()
    others = sorted(c.name for c in (a.data / "train").iterdir() if c.name not in PAIR)
    pre_data = link_subset(a.data, a.work / "data-8class", others, None)
    pair_data = link_subset(a.data, a.work / "data-catdog", list(PAIR), 1000)
    common = ["--model", a.model, "--img-size", str(a.img_size)]
    if a.source:
        source = describe_run(a.source)
    else:
        source = train([*common, "--data", str(pre_data), "--epochs", str(a.pre_epochs),
                        "--train-limit", str(a.pre_limit)], a.work / "source-8class")
    source_dir = a.source or a.work / "source-8class"
    runs = {"random": [], "init_from": []}
    for seed in a.seeds:
        base = [*common, "--data", str(pair_data), "--epochs", str(a.epochs), "--seed", str(seed)]
        runs["random"].append(train(base, a.work / f"catdog-random-s{seed}"))
        runs["init_from"].append(train(
            [*base, "--init-from", str(source_dir), "--freeze-epochs",
             str(a.freeze_epochs)], a.work / f"catdog-init-s{seed}"))
    acc = {k: [r["metrics"]["accuracy"] for r in v] for k, v in runs.items()}
    stats = {k: summary(v) for k, v in acc.items()}
    gain = (stats["init_from"]["mean"] - stats["random"]["mean"]) * 100
    record = {
        "command": "python bench/train_transfer.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items()
            if k not in ("data", "work", "seeds", "source", "tag")
            and not (a.source and k.startswith("pre_")))
            + " --seeds " + " ".join(map(str, a.seeds))
            + (f" --source {a.source} --tag {a.tag}" if a.source else ""),
        "source_run": {"command": source["command"], "test_accuracy": source["metrics"]["accuracy"],
                       "train_images": source["data"]["train"], "wall_seconds": source["wall_seconds"]},
        "runs": {k: [{"seed": s, "command": r["command"], "test_accuracy": r["metrics"]["accuracy"],
                      "best_epoch": r["best_epoch"], "wall_seconds": r["wall_seconds"],
                      "train_images": r["data"]["train"], "test_images": r["data"]["test"]}
                     for s, r in zip(a.seeds, v, strict=True)] for k, v in runs.items()},
        "test_accuracy": stats, "gain_points": gain, "target_points": 5.0,
        "target_met": gain >= 5.0,
    }
    table = markdown_table(
        [{"start": k, "seeds": ", ".join(f"{x:.4f}" for x in acc[k]),
          "mean": f"{stats[k]['mean']:.4f}", "spread": f"{stats[k]['max'] - stats[k]['min']:.4f}"}
         for k in ("random", "init_from")],
        [("start", "start"), ("seeds", "test accuracy per seed"), ("mean", "mean"),
         ("spread", "spread (max-min)")])
    md = (f"# Transfer: cat vs dog from an 8-class CIFAR-10 run\n\n`{record['command']}`\n\n"
          "{HEAD}"
          f"Source: {a.model} at {a.img_size} px trained on {source['data']['train']} images of "
          f"the 8 other classes for {source.get('epochs', a.pre_epochs)} epochs (8-class test accuracy "
          f"{source['metrics']['accuracy']:.4f}). Cat/dog: {runs['random'][0]['data']['train']} "
          f"training + {runs['random'][0]['data']['val']} validation images, "
          f"{runs['random'][0]['data']['test']} test images, {a.epochs} epochs per arm "
          f"(fine-tuning: first {a.freeze_epochs} head only).\n\n"
          f"{table}\n\nGain: {gain:+.1f} points (target: at least +5): "
          f"{'met' if gain >= 5 else 'not met'}.\n")
    print(md)
    write_record(f"train_transfer{a.tag}", record, md)


if __name__ == "__main__":
    main()
