"""Run ``fit`` from a JSON TrainConfig and SIGKILL the process right after the checkpoint of
epoch N is complete: ``python tests/_fit_kill.py CONFIG_JSON N``. Exercises ``--resume``
with a real kill at a known point, through fit's ``on_epoch_end`` hook."""

import json
import os
import signal
import sys

from hmff_edge.train import TrainConfig, fit


def main() -> None:
    cfg = TrainConfig(**json.loads(sys.argv[1]))
    kill_after = int(sys.argv[2])

    def hook(epochs_done: int) -> None:
        if epochs_done == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    fit(cfg, progress=False, echo=lambda s: None, on_epoch_end=hook)


if __name__ == "__main__":
    main()
