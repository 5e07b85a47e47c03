"""Run one conversion in a fresh child process.

``TFLiteConverter.convert()`` leaks memory on every call (TF 2.20/2.21), and a converter
crash (or the kernel's OOM killer) must not take the command down with it. Each job runs in
a new ``python -m hmff_edge.convert._child`` process (a subprocess rather than
multiprocessing, so that a library user's unguarded script is never re-imported). The job,
a :class:`~hmff_edge.convert.spec.ConversionSpec`, goes in as a JSON file and reaches the
child function as the same dataclass; the child writes a JSON result file; errors come back
as the same :class:`HmffEdgeError` class with the child's message.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

from hmff_edge import errors
from hmff_edge.convert.spec import ConversionSpec
from hmff_edge.errors import ArtifactError, HmffEdgeError

CHILD_TIMEOUT_S = 3600  # a conversion that hangs this long is a bug, not a slow machine


def run_in_child(module: str, function: str, spec: ConversionSpec, *, what: str,
                 timeout: float = CHILD_TIMEOUT_S) -> dict:
    """Call ``module.function(spec)`` in a child Python and return its dict result."""
    with tempfile.TemporaryDirectory(prefix="hmff-child-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec.to_dict()))
        env = dict(os.environ)
        # The child must import hmff_edge exactly as this process does (cwd checkouts too).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env.setdefault("KERAS_BACKEND", "tensorflow")
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "hmff_edge.convert._child", module, function,
                 str(spec_path), str(result_path)],
                env=env, capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise ArtifactError(f"{what}: the conversion process ran over {timeout:.0f} s "
                                "and was stopped") from None
        if result_path.is_file():
            result = json.loads(result_path.read_text())
        else:
            tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
            if proc.returncode < 0:
                sig = signal.Signals(-proc.returncode).name
                cause = f"killed by {sig}" + (" (out of memory?)" if sig == "SIGKILL" else "")
            else:
                cause = f"exited with status {proc.returncode}"
            raise ArtifactError(f"{what}: the conversion process {cause}:\n{tail}")
    if "error" in result:
        cls = getattr(errors, result.get("error_class", ""), None)
        if not (isinstance(cls, type) and issubclass(cls, HmffEdgeError)):
            cls = ArtifactError
        raise cls(f"{what}: {result['error']}")
    return result


def _main(argv: list[str]) -> int:
    module, function, spec_path, result_path = argv
    try:  # a spec the child cannot read comes back as an error result, like any other
        spec = ConversionSpec.from_dict(json.loads(Path(spec_path).read_text()))
        fn = getattr(importlib.import_module(module), function)
        result = fn(spec)
    except HmffEdgeError as exc:
        result = {"error": str(exc), "error_class": type(exc).__name__}
    except Exception as exc:  # converter errors: keep the gist of the message
        lines = [s for s in str(exc).strip().splitlines() if s.strip()]
        short = " | ".join(lines[-6:])[:2000]
        tb = traceback.format_exc(limit=4)[-1500:]
        result = {"error": f"{type(exc).__name__}: {short}\n{tb}", "error_class": "ArtifactError"}
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
