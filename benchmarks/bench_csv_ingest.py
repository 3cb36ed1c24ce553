"""Benchmark: bring-your-own-data ingestion (``diagnosa data ingest FILE.csv --config FILE.toml``) by table shape.

For each ``--shapes`` entry ROWSxCOLUMNS, writes a CSV of that many rows and number columns (plus an id and a label
of three classes; about 1 cell in 50 is ``NA``, a missing-value marker) and its config, then ingests it in a fresh
process through the library call the CLI makes (``ingest_csv``), ``--repeats`` times, each into an empty lake.
Prints a Markdown table: the median time of the ingest call (imports excluded) and the process's peak RSS.

Wide tables (a gene-expression panel: tens of rows, thousands of columns) and long ones (many patients, few
columns) stress different costs: per column, and per cell. To compare two versions side by side, run it twice
in one sitting, once with ``PYTHONPATH`` set to a checkout of the other version (``git worktree add``).
Run by hand; never timed in tests.
Usage: python benchmarks/bench_csv_ingest.py [--shapes 30x2000,30x20000,300000x20] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LABELS = ("a", "b", "c")


def write_table(folder: Path, rows: int, columns: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    csv, config = folder / "table.csv", folder / "table.toml"
    names = [f"g{i}" for i in range(columns)]
    with csv.open("w") as out:
        out.write(",".join(["id", "label", *names]) + "\n")
        for start in range(0, rows, 10_000):
            block = rng.normal(size=(min(10_000, rows - start), columns)).round(3).astype(str)
            block[rng.random(block.shape) < 0.02] = "NA"
            out.writelines(f"p{start + i},{LABELS[(start + i) % 3]},{','.join(line)}\n" for i, line in enumerate(block))
    config.write_text(f'name = "bench"\nid_column = "id"\ntarget = "label"\nlabels = {json.dumps(list(LABELS))}\n'
                      'ordinal = false\n')
    return csv, config


def measure(csv: Path, config: Path, lake: Path) -> dict:
    """One ingest in this process (the child): seconds of the call, peak RSS."""
    from diagnosa.data.ingest import ingest_csv
    from diagnosa.lake import DataLake

    start = time.perf_counter()
    report = ingest_csv(DataLake.from_uri(str(lake)), csv, config)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": report.rows,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="30x2000,30x20000,300000x20", help="ROWSxCOLUMNS, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--measure", nargs=3, metavar=("CSV", "CONFIG", "LAKE"), help=argparse.SUPPRESS)  # the child
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*map(Path, args.measure))))
        return
    started = time.perf_counter()
    import diagnosa

    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; code: {Path(diagnosa.__file__).parent.parent}")
    print("| rows × columns | ingest s (median) | peak MiB | runs |")
    print("|---|---:|---:|---:|")
    for shape in args.shapes.split(","):
        try:
            rows, columns = (int(x) for x in shape.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--shapes: {shape!r} is not ROWSxCOLUMNS (e.g. 30x2000)") from None
        if rows < 9 or columns < 1:
            raise SystemExit(f"--shapes: {shape!r} needs at least 9 rows (3 per class) and 1 column")
        with tempfile.TemporaryDirectory() as folder:
            csv, config = write_table(Path(folder), rows, columns)
            runs = []
            for number in range(args.repeats):
                out = subprocess.run([sys.executable, __file__, "--measure", str(csv), str(config),
                                      str(Path(folder) / f"lake{number}")], capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"ingest of {shape} failed:\n{out.stderr[-2000:]}")
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"| {rows:,} × {columns:,} | {statistics.median(r['seconds'] for r in runs):.1f} | "
              f"{max(r['peak_mib'] for r in runs):,.0f} | {len(runs)} |", flush=True)
    print(f"benchmark took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
