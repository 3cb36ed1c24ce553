"""The ``diagnosa`` command line.

Every command works on one data lake: ``--lake`` (or ``DIAGNOSA_LAKE``), by default the folder
``lake/`` inside the workspace (``--workspace``, ``DIAGNOSA_HOME``, default ``./.diagnosa``), which
persists across commands. ``s3://bucket/prefix`` selects the same layout on S3.
Bad input ends with exit status 2 and one line naming what is wrong.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from diagnosa.lake import DataLake, LakeError

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad input from the command line; printed as one line, exit status 2."""


def workspace(args: argparse.Namespace) -> Path:
    return Path(args.workspace or os.environ.get("DIAGNOSA_HOME") or ".diagnosa").resolve()


def open_lake(args: argparse.Namespace) -> DataLake:
    uri = args.lake or os.environ.get("DIAGNOSA_LAKE") or str(workspace(args) / "lake")
    lake = DataLake.from_uri(uri)
    lake.init_zones()
    return lake


def _int_in(low: int, high: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be between {low:,} and {high:,}, got {value:,}")
        return value
    return parse


def _fraction(what: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not 0.0 <= value < 1.0:
            raise argparse.ArgumentTypeError(f"{what} must be in [0, 1), got {value}")
        return value
    return parse


# ------------------------------------------------------------------------------------------------ data

def cmd_data_generate(args: argparse.Namespace) -> int:
    from diagnosa.data.card import render_card
    from diagnosa.data.cohort import CohortConfig, generate, write_raw
    from diagnosa.data.hpo import load_ontology
    from diagnosa.data.ingest import raw_keys
    from diagnosa.data.orphan import build_catalogue

    config = CohortConfig(patients=args.patients, seed=args.seed, orphan_fraction=args.orphan_fraction,
                          defect_rate=args.defect_rate)
    lake = open_lake(args)
    batch = args.batch or config.batch
    records_key, labs_key = raw_keys(batch)
    if lake.exists(records_key) and not args.card:
        print(f"raw batch {batch} already in {lake.uri}: nothing to do (raw data is write-once)")
        return 0
    ontology = load_ontology()
    orphans = build_catalogue(ontology=ontology)
    cohort = generate(config, orphans=orphans, ontology=ontology)
    summary = cohort.summary() | {"batch": batch}
    card = render_card(summary, orphans)
    write_raw(cohort, lake, batch)
    lake.put_bytes_once(f"raw/cohort_cards/{batch}.json",
                        (json.dumps(summary, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
    lake.put_bytes_once(f"raw/cohort_cards/{batch}.md", card.encode("utf-8"))
    if args.card:
        Path(args.card).write_text(card, encoding="utf-8")
    print(f"generated batch {batch}: {summary['patients']:,} patients, {summary['lab_panels']:,} lab panels, "
          f"{summary['orphan_patients']:,} orphan-disease patients over {summary['orphan_diseases_sampled']} diseases")
    for label, count in summary["per_class"].items():
        print(f"  {label}: {count:,}")
    print(f"  → {lake.url(records_key)}\n  → {lake.url(labs_key)}")
    return 0


def cmd_data_ingest(args: argparse.Namespace) -> int:
    from diagnosa.data.ingest import cohort_batches, ingest_csv, ingest_cohort, stage_cohort_files

    lake = open_lake(args)
    if args.config:
        if not args.path:
            raise UsageError("--config describes your own CSV: give its path too (diagnosa data ingest FILE.csv --config CONFIG.toml)")
        report = ingest_csv(lake, Path(args.path), Path(args.config))
    elif args.path:
        path = Path(args.path)
        if path.is_dir():
            records = sorted(path.glob("*.jsonl"))
            labs = sorted(path.glob("*.csv"))
            if len(records) != 1 or len(labs) != 1:
                raise UsageError(f"{path} must hold exactly one .jsonl (clinical records) and one .csv (lab results); "
                                 f"found {len(records)} and {len(labs)}")
            batch = stage_cohort_files(lake, records[0], labs[0], args.batch)
        elif path.suffix == ".csv":
            raise UsageError(f"{path} is a CSV: describe it with --config CONFIG.toml (see docs/data.md)")
        else:
            if not args.labs:
                raise UsageError(f"clinical records {path} need their lab results: add --labs LABS.csv")
            batch = stage_cohort_files(lake, path, Path(args.labs), args.batch)
        report = ingest_cohort(lake, batch)
    else:
        batches = cohort_batches(lake)
        if args.batch:
            batch = args.batch
        elif len(batches) == 1:
            batch = batches[0]
        elif not batches:
            raise UsageError(f"no raw batch in {lake.uri}: run `diagnosa data generate` or give a PATH")
        else:
            raise UsageError(f"several raw batches in {lake.uri} ({', '.join(batches)}): choose one with --batch")
        report = ingest_cohort(lake, batch)
    print(report.summary())
    return 0


# ------------------------------------------------------------------------------------------------ parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diagnosa", description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", help="workspace folder (default $DIAGNOSA_HOME or ./.diagnosa)")
    parser.add_argument("--lake", help="data lake: a folder or s3://bucket/prefix (default <workspace>/lake)")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="generate and ingest patient data").add_subparsers(dest="data_command", required=True)
    gen = data.add_parser("generate", help="write a synthetic cohort into the raw zone")
    gen.add_argument("--patients", type=_int_in(1_000, 1_000_000, "--patients"), default=20_000)
    gen.add_argument("--seed", type=_int_in(0, 2**32 - 1, "--seed"), default=7)
    gen.add_argument("--orphan-fraction", type=_fraction("--orphan-fraction"), default=0.02)
    gen.add_argument("--defect-rate", type=_fraction("--defect-rate"), default=0.001,
                     help="share of rows with an injected recording defect (exercises quarantine)")
    gen.add_argument("--batch", help="raw batch name (default cohort-n<patients>-s<seed>)")
    gen.add_argument("--card", help="also write the data card to this path (e.g. docs/data.md)")
    gen.set_defaults(func=cmd_data_generate)

    ing = data.add_parser("ingest", help="validate raw data into a versioned curated dataset")
    ing.add_argument("path", nargs="?", help="a records .jsonl (with --labs), a folder with one .jsonl and one .csv, "
                                             "or your own .csv (with --config); default: a raw batch already in the lake")
    ing.add_argument("--labs", help="lab results CSV that goes with a records .jsonl")
    ing.add_argument("--batch", help="raw batch to ingest, or the name to give a staged one")
    ing.add_argument("--config", help="TOML config describing your own CSV (id, target, labels, exclusions)")
    ing.set_defaults(func=cmd_data_ingest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from diagnosa.data.ingest import IngestError
    from diagnosa.data.schema import SchemaError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, IngestError, SchemaError, LakeError) as err:
        print(f"diagnosa: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
