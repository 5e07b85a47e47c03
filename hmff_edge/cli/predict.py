"""`hmff-edge predict`: top-k labels for images with an exported model (TF-free)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hmff_edge.cli._app import app
from hmff_edge.cli._common import command, print_json
from hmff_edge.cli._options import Opt, json_flag
from hmff_edge.tables import text_table

_OPTIONS = (
    Opt("--top-k -k", int, 5, "Labels to show per image.", min=1),
    Opt("--threads", int, None, "Engine threads (default: all cores).", min=1),
    Opt("--batch-size", int, 16, "Images per inference call.", min=1),
    json_flag("Machine-readable output.", name="as_json"),
)


@command(app, "predict", _OPTIONS)
def predict(
    model: Annotated[Path, typer.Argument(help="Exported .tflite or .onnx file (with its metadata).")],
    images: Annotated[list[Path], typer.Argument(help="Image files, or folders of images.")],
    top_k: int, threads: int | None, batch_size: int, as_json: bool,
) -> None:
    """Classify IMAGE... with MODEL and print the top-k labels per image."""
    from hmff_edge.errors import DataError
    from hmff_edge.preprocess import list_images
    from hmff_edge.runtime import load

    files: list[str] = []
    for item in images:
        if item.is_dir():
            found = list_images(item)
            if not found:
                raise DataError(f"no images found in folder {str(item)!r}")
            files.extend(found)
        elif item.is_file():
            files.append(str(item))
        else:
            raise DataError(f"image {str(item)!r} does not exist")
    predictor = load(model, threads=threads)
    results = []
    chunks = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    progress = None
    if len(chunks) > 1 and not as_json:
        from tqdm import tqdm

        progress = tqdm(total=len(files), unit="img", leave=False)
    for chunk in chunks:
        for f, top in zip(chunk, predictor.classify(chunk, top_k=top_k)):
            results.append({"image": f, "top_k": top})
        if progress is not None:
            progress.update(len(chunk))
    if progress is not None:
        progress.close()
    if as_json:
        print_json({"model": str(model), "format": predictor.format, "results": results})
        return
    rows = [
        {"image": r["image"] if rank == 1 else "", "rank": rank, "label": t["label"],
         "probability": f"{t['probability']:.4f}"}
        for r in results for rank, t in enumerate(r["top_k"], 1)
    ]
    typer.echo(text_table(rows, [("image", "image"), ("rank", "rank"), ("label", "label"),
                                   ("probability", "probability")]))
