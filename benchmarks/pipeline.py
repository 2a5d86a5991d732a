"""Benchmark: `dvc repro` of the whole pipeline (ingest -> ... -> register) from a fresh clone.

Usage: python benchmarks/pipeline.py [--repo .] [--output benchmarks/results/pipeline.json]

Clones the committed HEAD into a temporary folder, runs `dvc repro` twice and reports
wall-clock seconds for the cold run (every stage executes) and the warm run (a no-op).
Set RECOPS_DATA_MIRROR to a local copy of the dataset to leave the network out of it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recops.benchmark import machine_info, write_result


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
    return elapsed, res.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--output", type=Path, default=Path("benchmarks/results/pipeline.json"))
    args = ap.parse_args()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "recops"
        subprocess.run(["git", "clone", "-q", str(args.repo), str(clone)], check=True)
        cold, out = timed(["dvc", "repro"], clone, env)
        stages = [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]
        warm, out2 = timed(["dvc", "repro"], clone, env)
        features = json.loads((clone / "reports/features.json").read_text())
    result = {
        "benchmark": "dvc repro from a fresh clone",
        "stages": stages,
        "cold_seconds": round(cold, 2),
        "noop_seconds": round(warm, 2),
        "noop_ran_a_stage": "Running stage" in out2,
        "periods": features["periods"],
        "interactions": features["rows"],
        **machine_info(),
    }
    write_result(result, args.output)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
