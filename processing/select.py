"""Champion selection (a SageMaker processing job): the best candidate by its validation metrics, or their vote.

One trained candidate is picked by its validation metrics, or the candidates are combined when their weighted
mean does better on rows none of them saw.

Selection reads only what training measured on the validation channel (metadata.json's ``validation``)
and the out-of-fold probabilities behind it (``oof.npz``): the test set stays untouched until the
champion's single, final evaluation, so it cannot leak into the choice. The rule favours macro recall
(every class counts the same, so a rare class is not drowned out) and, on a tie, the model whose worst
class is found more often. When every candidate brought its out-of-fold probabilities on the same rows,
an ensemble of them (a weighted mean of their probabilities, ``processing/ensemble.py``) replaces that champion if,
cross-fitted on those rows, it beats picking one candidate by more than the noise of the comparison.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from diagnosa.files import atomic_path, job_reason, write_job_failure, write_text_atomic
from diagnosa.logs import configure_logging
from diagnosa.model import (  # the limits a model.tar.gz is held to live there (checked_members)
    DATA_METADATA,
    METADATA_FILE,
    MODEL_FILE,
    OOF_FILE,
    DiagnosaModel,
    MetadataError,
    ModelArchiveRefused,
    ModelLoadError,
    checked_members,
    identity_version,
    member_name,
    open_model_tarball,
    parse_metadata,
    read_metadata,
    read_oof,
    unpack_model,
)
from processing import ensemble
from processing.calibration import calibration_numbers
from processing.decisions import MAX_PRECISION_LOSS, calibrate_and_decide
from processing.entry import job_parser, stops_on_sigterm

logger = logging.getLogger(__name__)

TIE_TOLERANCE = 1e-9
RULE = (f"highest validation macro recall; ties (|difference| < {TIE_TOLERANCE:g}) broken by the higher "
        "worst-class recall, then by candidate name (ascending)")
MODEL_TARBALL = "model.tar.gz"
ENSEMBLE_NAME = "ensemble"
# The pipeline's Ensemble parameter: "auto" ships the vote when it wins (processing/ensemble.py), "never" always the
# single champion (a vote scores every member: where one model's serving time matters more than the vote's gain).
ENSEMBLE_MODES = ("auto", "never")


def _metric(candidate: dict[str, Any], *path: str) -> float:
    name = candidate.get("name")
    value: Any = candidate
    for key in ("validation", *path):
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"candidate {name!r} has no validation metric {'.'.join(path)}")
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"candidate {name!r}: validation {'.'.join(path)} must be a finite number, got {value!r}")
    if not 0 <= value <= 1:  # a recall: 1.5 ranked first and was shipped
        raise ValueError(f"candidate {name!r}: validation {'.'.join(path)} must be a recall in [0, 1], got {value!r}")
    return float(value)


def _better(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when ``a`` ranks above ``b`` under RULE."""
    if abs(a["macro_recall"] - b["macro_recall"]) >= TIE_TOLERANCE:
        return a["macro_recall"] > b["macro_recall"]
    wa, wb = a["worst_class_recall"]["recall"], b["worst_class_recall"]["recall"]
    if abs(wa - wb) >= TIE_TOLERANCE:
        return wa > wb
    return a["name"] < b["name"]


SELECTION = "selection/selection.json"  # under the step's output (a run's artifacts/runs/<id>/ in the lake)


def selection_families(selection: Any) -> tuple[str, ...] | None:
    """The candidate families a selection.json chose among (its ``candidates``' ``family``), None when it does not say
    (not a selection this module writes)."""
    candidates = selection.get("candidates") if isinstance(selection, dict) else None
    if not isinstance(candidates, dict) or not candidates:
        return None
    families = [c.get("family") if isinstance(c, dict) else None for c in candidates.values()]
    return tuple(map(str, families)) if all(isinstance(f, str) for f in families) else None


def select_champion(candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """Rank candidates by RULE; returns {"champion", "rule", "ranking"}. Pure: no I/O."""
    if not candidates:
        raise ValueError("no candidates to select from")
    rows, seen = [], set()
    for candidate in candidates:
        name = candidate.get("name") if isinstance(candidate, dict) else None
        if not isinstance(name, str) or not name:
            raise ValueError(f"candidate without a name: {candidate!r}")
        if name in seen:
            raise ValueError(f"candidate name {name!r} appears twice")
        seen.add(name)
        if not isinstance(candidate.get("validation"), dict):
            raise ValueError(f"candidate {name!r} has no validation metrics")
        worst = candidate["validation"].get("worst_class_recall")
        rows.append({"name": name, "macro_recall": _metric(candidate, "macro_recall"),
                     "worst_class_recall": {"label": worst.get("label") if isinstance(worst, dict) else None,
                                            "recall": _metric(candidate, "worst_class_recall", "recall")}})
    # Repeated pick-the-best rather than sort(): a tolerance makes "tied" non-transitive, and this keeps
    # the champion exactly the candidate the rule picks.
    ranking: list[dict[str, Any]] = []
    while rows:
        best = rows[0]
        for row in rows[1:]:
            if _better(row, best):
                best = row
        ranking.append(best)
        rows.remove(best)
    return {"champion": ranking[0]["name"], "rule": RULE, "ranking": ranking}


# ------------------------------------------------------------------------------------------------
# The processing container


def _read_tarball(name: str, tarball: Path, wanted: str) -> bytes | None:
    """``wanted`` (a file at the tarball's root) of candidate ``name``'s model.tar.gz, None when it has none, after
    checking every member as unpacking would meet it (diagnosa.model.checked_members: a path or link leading out of
    the folder, a device or FIFO, a name twice, more than MAX_MEMBERS members or MAX_UNPACKED_BYTES in all, a read
    file over its limit) and that the model files are there (MODEL_FILE, METADATA_FILE). Nothing is extracted; a
    refusal is a ValueError that leads with the candidate."""
    where = f"candidate {name!r}: {MODEL_TARBALL}"
    files: dict[str, tarfile.TarInfo] = {}
    data = None
    try:
        with open_model_tarball(tarball) as tar:
            # One header at a time: a refused header stops the read before its data is decompressed.
            for member in checked_members(tar, where, reader="Select"):
                if member.isfile():
                    files[member_name(member)] = member
                    if member_name(member) == wanted:
                        stream = tar.extractfile(member)
                        assert stream is not None  # None only for what is not a regular file
                        data = stream.read()
    except ModelArchiveRefused as err:  # a plain ValueError: no "candidate" prefix added again for a ModelLoadError
        raise ValueError(str(err)) from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{where} is not a readable gzip tar ({tarball}): {err}") from None
    for required in (MODEL_FILE, METADATA_FILE):
        if required not in files:
            raise ValueError(f"{where} has no {required} at its root ({tarball})")
    return data


def _metadata(name: str, raw: bytes, source: Path) -> dict[str, Any]:
    try:
        return parse_metadata(raw, source)
    except MetadataError as err:
        raise ValueError(f"candidate {name!r}: {err}") from None


def _utf8(name: str, meta: dict[str, Any], source: Path) -> None:
    """Text selection.json carries must be UTF-8: a lone surrogate ("\\ud800", valid JSON) failed its write after the
    champion was written."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"candidate folder name {name!r} is not UTF-8") from None
    try:
        json.dumps(meta, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        bad = err.object[max(0, err.start - 40):err.end + 10] if isinstance(err.object, str) else ""
        raise ValueError(f"candidate {name!r}: {METADATA_FILE} ({source}) holds text that is not UTF-8 (a lone "
                         f"surrogate, near {bad!r})") from None


def load_candidates(candidates_dir: Path) -> list[tuple[str, Path, dict[str, Any]]]:
    """(name, source, metadata) per candidate folder; source is its model.tar.gz or the folder itself. A candidate
    that cannot be read whole and safely fails the job naming it: none is skipped (a broken training output is a
    fault to see, and the others' comparison is not the one the pipeline asked for)."""
    if not candidates_dir.is_dir():
        raise ValueError(f"no candidates: {candidates_dir} does not exist")
    found = []
    for entry in sorted(candidates_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            raise ValueError(f"unexpected file {entry} in {candidates_dir}: each candidate must be a folder")
        tarball = entry / MODEL_TARBALL
        if tarball.is_file():
            raw = _read_tarball(entry.name, tarball, METADATA_FILE)
            assert raw is not None  # _read_tarball refuses a tarball without it
            meta = _metadata(entry.name, raw, tarball)
            source = tarball
        elif (entry / METADATA_FILE).is_file():
            if not (entry / MODEL_FILE).is_file():
                raise ValueError(f"candidate {entry.name!r}: {entry} has {METADATA_FILE} but no {MODEL_FILE}")
            try:
                meta = read_metadata(entry)  # bounded, as in a tarball
            except ModelLoadError as err:
                raise ValueError(f"candidate {entry.name!r}: {err}") from None
            source = entry
        else:
            raise ValueError(f"candidate {entry.name!r}: {entry} holds neither {MODEL_TARBALL} "
                             f"nor an extracted model ({METADATA_FILE} + {MODEL_FILE})")
        _utf8(entry.name, meta, source)
        logger.info("candidate %s: read %s (family %s)", entry.name, source, meta.get("family"))
        found.append((entry.name, source, meta))
    if not found:
        raise ValueError(f"no candidates found in {candidates_dir}")
    return found


def _check_comparable(candidates: list[tuple[str, Path, dict[str, Any]]]) -> None:
    """Validation metrics only compare when every candidate saw the same labels and preprocessed data."""
    for key, get in (("labels", lambda m: m.get("labels")),
                     ("preprocessing fingerprint", lambda m: (m.get("fingerprint") or {}).get("preprocess"))):
        values = {name: get(meta) for name, _, meta in candidates if get(meta) is not None}
        if len({json.dumps(v, sort_keys=True) for v in values.values()}) > 1:
            detail = "; ".join(f"{name}: {value}" for name, value in values.items())
            raise ValueError(f"candidates are not comparable: their {key} differ ({detail})")


def _read_oof(name: str, source: Path) -> dict[str, Any] | None:
    """Candidate ``name``'s out-of-fold probabilities (from its tarball or folder); None when it has none."""
    if source.is_dir():
        path = source / OOF_FILE
        return read_oof(path) if path.is_file() else None  # what its arrays declare is bounded there
    raw = _read_tarball(name, source, OOF_FILE)
    return None if raw is None else read_oof(io.BytesIO(raw))


def gather_evidence(candidates: list[tuple[str, Path, dict[str, Any]]]) -> tuple[ensemble.Evidence | None, str]:
    """Every candidate's out-of-fold probabilities on the same rows, or None and why not."""
    if len(candidates) < 2:
        return None, "one candidate"
    if any(name == ENSEMBLE_NAME for name, _, _ in candidates):
        return None, f"a candidate is named {ENSEMBLE_NAME!r}, the name the vote would take"
    oofs = {}
    for name, source, _ in candidates:
        try:
            oofs[name] = _read_oof(name, source)
        except ModelLoadError as err:
            raise ValueError(f"candidate {name!r}: {err}") from None
    present = {name: oof for name, oof in oofs.items() if oof is not None}
    lacking = sorted(set(oofs) - set(present))
    if lacking:
        return None, f"no out-of-fold probabilities from {', '.join(lacking)}"
    first = next(iter(present.values()))
    if any(not np.array_equal(oof["y"], first["y"]) for oof in present.values()):
        return None, "the candidates' out-of-fold rows differ"
    # The rows' weights and slice flags, where every candidate fitted its decision weights with the same ones.
    shared = {key: first[key] for key in ("w", "groups", "patients")
              if all(key in oof and np.array_equal(oof[key], first[key]) for oof in present.values())}
    return ensemble.Evidence({name: oof["proba"] for name, oof in present.items()}, first["y"],
                             weight=shared.get("w"), groups=shared.get("groups"), patients=shared.get("patients")), ""


def build_ensemble(candidates: list[tuple[str, Path, dict[str, Any]]], weights: dict[str, float],
                   evidence: ensemble.Evidence, choice: ensemble.EnsembleChoice, folder: Path, *,
                   seed: int = 0) -> dict[str, Any]:
    """Write the ensemble model (the members' fitted classifiers behind one feature pipeline) into ``folder``;
    returns its metadata.

    The vote's probabilities get what a candidate's get in its training job (processing/decisions.py): a
    temperature fitted on the vote's out-of-fold probabilities (a mean of calibrated members is less sure than
    each), and decision weights kept only where, cross-fitted, they find significantly more of the worst class."""
    from sklearn.pipeline import Pipeline

    from diagnosa.serving_code import write_serving_code

    by_name = {name: (source, meta) for name, source, meta in candidates}
    members = {}
    for name in weights:
        source, _ = by_name[name]
        model_dir = source if source.is_dir() else unpack_model(source, folder.parent / f"member-{name}")
        members[name] = DiagnosaModel.load(model_dir)
    names = list(weights)
    lead = members[names[0]]  # the candidates share one fitted feature pipeline (same preprocessing fingerprint)
    labels = list(lead.labels)
    vote = ensemble.ProbabilityVote([members[n].pipeline.steps[-1][1] for n in names],
                           [members[n].metadata.get("calibration") for n in names], [weights[n] for n in names],
                           len(labels))
    metadata = {key: lead.metadata[key] for key in DATA_METADATA if key in lead.metadata}
    max_loss = float(((lead.metadata.get("search") or {}).get("settings") or {}).get("max_precision_loss",
                                                                                     MAX_PRECISION_LOSS))
    mixed = ensemble.mix(evidence.proba, weights)
    post = calibrate_and_decide(mixed, evidence.y, evidence.weight, max_precision_loss=max_loss, seed=seed,
                                groups=evidence.groups, patients=evidence.patients)
    validation = ensemble.summary(evidence.y, post["cross_fitted_pred"], labels)
    validation["plain_argmax"] = {key: value for key, value in ensemble.summary(
        evidence.y, post["calibrated"].argmax(axis=1), labels).items() if key in ("macro_recall", "worst_class_recall")}
    metadata |= {
        "family": ENSEMBLE_NAME,
        "hyperparameters": {},
        "members": [{"name": n, "family": members[n].metadata.get("family"), "weight": weights[n],
                     "hyperparameters": members[n].metadata.get("hyperparameters"),
                     "calibration": members[n].metadata.get("calibration")} for n in names],
        "validation": validation,
        "calibration": post["calibration"],
        "decision_weights": {label: float(w) for label, w in zip(labels, post["decision_weights"])},
        "decision_rule": (f"argmax of decision weight x the calibrated weighted mean of the members' calibrated "
                          f"probabilities; weights fitted on the vote's out-of-fold probabilities to maximise the "
                          f"worst class's recall with macro precision at most {max_loss:g} below the plain argmax's"),
        "calibration_oof": {"before": calibration_numbers(evidence.y, mixed),
                            "after": calibration_numbers(evidence.y, post["calibrated"])},
        "ensemble": choice.to_dict(),
    }
    metadata["model_version"] = identity_version(metadata)
    model = DiagnosaModel(Pipeline([("features", lead.features), ("classifier", vote)]), labels, metadata,
                          oof={"proba": post["calibrated"], "y": evidence.y, "w": evidence.weight,
                               "groups": evidence.groups, "patients": evidence.patients})
    model.save(folder)
    write_serving_code(folder / "code")
    return metadata


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _tar_folder_atomic(folder: Path, dst: Path) -> None:
    """A SageMaker-style model.tar.gz: the folder's files at the archive root."""
    with atomic_path(dst) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)


def _write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def run(base_dir: str | os.PathLike, ensemble_mode: str = "auto") -> dict[str, Any]:
    """Read candidates under ``<base>/input/candidates``, write the champion and selection.json; ``ensemble_mode``
    one of ``ENSEMBLE_MODES``."""
    if ensemble_mode not in ENSEMBLE_MODES:
        raise ValueError(f"ensemble mode must be one of {', '.join(ENSEMBLE_MODES)}, got {ensemble_mode!r}")
    base = Path(base_dir)
    for folder in (base / "output" / "champion", base / "output" / "selection"):  # as every job: no run overwrites
        if folder.exists() and any(folder.iterdir()):                            # another's outputs
            raise FileExistsError(f"output folder {folder} is not empty: refusing to overwrite another run's outputs")
    candidates = load_candidates(base / "input" / "candidates")
    _check_comparable(candidates)
    selection = select_champion([{"name": name, "validation": meta.get("validation")}
                                 for name, _, meta in candidates])
    by_name = {name: (source, meta) for name, source, meta in candidates}
    source, meta = by_name[selection["champion"]]
    selection["candidates"] = {name: {"source": "tarball" if src.is_file() else "directory",
                                      "family": m.get("family"), "hyperparameters": m.get("hyperparameters"),
                                      "seed": m.get("seed")}
                               for name, (src, m) in by_name.items()}
    selection["fingerprint"] = meta.get("fingerprint")

    champion_path = base / "output" / "champion" / MODEL_TARBALL
    evidence, reason = (gather_evidence(candidates) if ensemble_mode == "auto"
                        else (None, "the pipeline's Ensemble parameter is 'never'"))
    seed = int(meta.get("seed") or 0)
    choice = None if evidence is None else ensemble.choose(evidence, seed=seed)
    selection["ensemble"] = {"considered": evidence is not None, "reason": reason,
                             **({} if choice is None else choice.to_dict())}
    selection_path = base / "output" / SELECTION
    written = False
    try:
        if evidence is not None and choice is not None and choice.use_ensemble:
            with tempfile.TemporaryDirectory(prefix="ensemble-", dir=base) as work:
                folder = Path(work) / ENSEMBLE_NAME
                built = build_ensemble(candidates, choice.weights, evidence, choice, folder, seed=seed)
                _tar_folder_atomic(folder, champion_path)
                written = True
            selection["champion"] = ENSEMBLE_NAME
            selection["ensemble"]["validation"] = built["validation"]
            logger.info("champion: the ensemble %s (cross-fitted macro recall %.4f vs %.4f for one candidate)",
                        choice.weights, choice.cross_fitted[choice.procedure], choice.cross_fitted["single"])
        elif source.is_file():
            _copy_atomic(source, champion_path)
            written = True
        else:
            _tar_folder_atomic(source, champion_path)
            written = True
        _write_json_atomic(selection_path, selection)
    except BaseException:  # a champion without its selection.json is no run's output (it looked like one)
        if written:
            champion_path.unlink(missing_ok=True)
        raise
    logger.info("champion %s (macro recall %.4f); wrote %s and %s", selection["champion"],
                selection["ranking"][0]["macro_recall"], champion_path, selection_path)
    return selection


def main(argv: list[str] | None = None) -> int:
    """Processing container entry point; 0 on success, 1 with a logged reason on any error."""
    configure_logging()
    parser = job_parser("processing.select", __doc__.splitlines()[0] + f"\nThe rule: {RULE}.", "Select", "",
                        "holds input/candidates/<name>/ (model.tar.gz or a model folder) and receives "
                        "output/champion/model.tar.gz and output/selection/selection.json")
    parser.add_argument("--ensemble", choices=ENSEMBLE_MODES, default="auto",
                        help="auto: ship the candidates' vote when it wins the cross-fitted comparison; never: always "
                             "the single champion (default: %(default)s)")
    args = parser.parse_args(argv)
    with stops_on_sigterm(args.base_dir, [Path(args.base_dir) / "output"]):
        try:
            run(args.base_dir, args.ensemble)
        except Exception as err:  # noqa: BLE001  (the job log must say what was wrong)
            message = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
            logger.error("champion selection failed: %s", job_reason(message), exc_info=not isinstance(err, ValueError))
            write_job_failure(args.base_dir, message)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
