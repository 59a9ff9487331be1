"""The ``defacing-assets`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from defacing_assets import __version__
from defacing_assets.cohort.sources import (
    discover_subjects,
    duplicate_problems,
    id_problems,
    validate_source,
)
from defacing_assets.profiles import PROFILES, get_profile
from defacing_assets.workers import quiet_warnings


def _cmd_synth(args: argparse.Namespace) -> int:
    from defacing_assets.cohort.synthetic import write_cohort

    ids = write_cohort(
        args.out,
        args.subjects,
        args.seed,
        args.profile,
        args.modality,
        args.prefix,
        args.short_fov_share,
    )
    print(f"wrote {len(ids)} {args.modality} subjects ({args.profile} profile) to {args.out}")
    return 0


def _fail(problem: object) -> int:
    """Bad input: one line on stderr, exit status 2."""
    print(f"error: {problem}", file=sys.stderr)
    return 2


def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        sources, skipped = discover_subjects(args.dir)
    except FileNotFoundError as error:
        return _fail(error)
    unsafe = id_problems(sources)
    found = []
    for source in sources:
        problems = validate_source(source)
        if source.subject_id in unsafe:
            problems.insert(0, f"{source.path}: {unsafe[source.subject_id]}")
        found.append(problems)
    usable = [source for source, problems in zip(sources, found, strict=True) if not problems]
    copies = duplicate_problems(usable)  # only a usable subject counts as the one kept
    failed = 0
    for source, problems in zip(sources, found, strict=True):
        if source in usable and source.subject_id in copies:
            problems.append(f"{source.path}: {copies[source.subject_id]}")
        if problems:
            failed += 1
            print(f"FAIL {source.subject_id}")
            for problem in problems:
                print(f"  {problem}")
        else:
            print(f"ok   {source.subject_id} ({source.format})")
    for note in skipped:
        print(f"skip {note}")
    if not sources:
        print(
            f"no subjects in {args.dir}: expected <subject>/image.nii.gz (+ label.nii.gz or "
            "mask_<ROI>.nii.gz), <id>_ct.nii.gz or <subject>/ holding DICOM files"
        )
        return 1
    print(f"{len(sources) - failed} of {len(sources)} subjects ok")
    return 1 if failed else 0


def _study_defacers(study: str | None) -> Path | None:
    """The study's defacers.yaml (which may not exist); the study folder itself must."""
    from defacing_assets.defacers.registry import DEFACERS_FILE

    if not study:
        return None
    if not Path(study).is_dir():
        what = "is a file, not a study folder" if Path(study).exists() else "no such study folder"
        raise FileNotFoundError(f"{study}: {what}")
    return Path(study) / DEFACERS_FILE


def _cmd_defacers(args: argparse.Namespace) -> int:
    from defacing_assets.defacers.registry import registry
    from defacing_assets.defacers.yaml_config import DefacerConfigError

    try:
        known = registry(_study_defacers(args.study))
    except (DefacerConfigError, FileNotFoundError) as error:
        return _fail(error)
    rows = []
    for name, entry in sorted(known.items()):
        ready, why = entry.defacer.available()
        source = entry.source + (f" (overrides {entry.overrides})" if entry.overrides else "")
        version = entry.defacer.version() if ready else "-"
        rows.append((name, source, "available" if ready else f"unavailable: {why}", version))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, source, state, version in rows:
        shown = version if version != "-" else ""
        print(f"{name:<{widths[0]}}  {source:<{widths[1]}}  {state}  {shown}".rstrip())
    return 0


def _usable_image(path: str):
    """The image at ``path``, refused (InvalidScanError naming it) when it cannot be used."""
    from defacing_assets.imaging import InvalidScanError, image_problems, load_volume

    volume = load_volume(path)
    problems = image_problems(volume)
    if problems:
        raise InvalidScanError(path, "; ".join(problems))
    return volume


def _output_problem(outputs: dict[str, str | None], inputs: list[str | None]) -> str | None:
    """Why an output path would fail or destroy a file we read (checked before any work)."""
    given = {name: Path(path).resolve() for name, path in outputs.items() if path}
    read = {Path(path).resolve() for path in inputs if path}
    seen: dict[Path, str] = {}
    for name, path in given.items():
        shown = outputs[name]
        if path.is_dir():
            return f"{shown}: is a folder; {name} must name a file"
        if path in read:
            return f"{shown}: {name} would overwrite an input; write it somewhere else"
        if path in seen:
            return f"{shown}: given as both {seen[path]} and {name}"
        seen[path] = name
    return None


def _sweep_leftovers(outputs: list[str]) -> None:
    """Remove what killed runs left: external tools' work folders (each holds an
    un-defaced copy of a scan) and hidden staging files beside our outputs."""
    from defacing_assets.defacers.external import sweep_stale_workdirs
    from defacing_assets.imaging.io import sweep_stale_staging

    sweep_stale_workdirs()
    for folder in {Path(path).resolve().parent for path in outputs}:
        sweep_stale_staging(folder)


def _cmd_deface(args: argparse.Namespace) -> int:
    from defacing_assets.defacers.registry import registered
    from defacing_assets.defacers.yaml_config import DefacerConfigError
    from defacing_assets.imaging import InvalidScanError
    from defacing_assets.imaging.io import nifti_suffix_problem, save_volumes

    try:
        entry = registered(args.method, _study_defacers(args.study))
    except (DefacerConfigError, FileNotFoundError) as error:
        return _fail(error)
    except KeyError as error:
        return _fail(error.args[0])
    defacer = entry.defacer
    ready, why = defacer.available()
    if not ready:
        why = why.removeprefix(f"{args.method}: ")
        return _fail(f"{args.method} ({entry.source}) cannot run here: {why}")
    problem = _output_problem(
        {"output": args.output, "--kept-mask": args.kept_mask}, [args.input, args.labels]
    )
    if problem:
        return _fail(problem)
    try:
        volume = _usable_image(args.input)
        labels = _protection_labels(args.labels, volume) if args.labels else None
    except (InvalidScanError, FileNotFoundError) as error:
        return _fail(error)
    outputs = [path for path in (args.output, args.kept_mask) if path]
    for path in outputs:
        problem = nifti_suffix_problem(path)
        if problem:
            return _fail(problem)
    if labels is not None and not defacer.uses_labels:
        print(f"note: {args.method} does not use labels; --labels ignored", file=sys.stderr)
    _sweep_leftovers(outputs)
    result = defacer.seeded(args.seed).deface(volume, args.modality, labels)
    if result.status != "ok":
        print(f"{args.method} {result.status}: {result.reason}", file=sys.stderr)
        return 1
    written = [(result.image, args.output)]
    if args.kept_mask:
        written.append((result.kept_mask, args.kept_mask))
    try:
        save_volumes(written)  # both or neither, as the README promises
    except OSError as error:
        where = error.filename or " and ".join(outputs)
        return _fail(f"{where}: cannot write ({error.strerror or error}); nothing was written")
    print(
        f"{args.method}: {100 * result.changed_fraction:.2f}% of voxels changed in "
        f"{result.seconds:.1f} s -> {args.output}"
    )
    return 0


def _protection_labels(path: str, image):
    """The OAR label map behind ``--labels``: a label file, or a subject folder in any layout."""
    from defacing_assets.cohort.sources import discover_subjects, read_scan
    from defacing_assets.imaging import InvalidScanError, load_volume
    from defacing_assets.imaging.validation import label_problems

    given = Path(path)
    if given.is_dir():
        sources, _ = discover_subjects(given.parent)
        source = next((s for s in sources if s.path == given), None)
        if source is None:
            raise InvalidScanError(path, "not a subject folder (no image with labels found)")
        labels = read_scan(source).labels
        if labels is None:
            raise InvalidScanError(path, "the subject has no OAR labels")
        where = str(source.files[1]) if len(source.files) > 1 else path
    elif given.exists():
        labels, where = load_volume(given), path
    else:
        raise FileNotFoundError(f"{path}: no such label file or subject folder")
    problems = label_problems(labels, image)
    if problems:
        raise InvalidScanError(where, "; ".join(problems))
    return labels


def _cmd_qc(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from defacing_assets.cohort.scan import Scan
    from defacing_assets.cohort.sources import read_landmarks
    from defacing_assets.defacers.base import DefacingResult
    from defacing_assets.imaging import InvalidScanError
    from defacing_assets.qc.render import montage, save_png
    from defacing_assets.qc.verdict import assess, assess_alone

    problem = _output_problem({"--render": args.render}, [args.input, args.original])
    if problem:
        return _fail(problem)
    try:
        defaced = _usable_image(args.input)
        original = _usable_image(args.original) if args.original else None
        if original is not None and not original.same_grid(defaced):
            raise InvalidScanError(
                args.original,
                f"grid {original.shape} differs from "
                f"{args.input} {defaced.shape}: not its original",
            )
        landmarks = read_landmarks(Path(args.original).parent) if args.original else None
    except InvalidScanError as error:
        return _fail(error)
    if original is None:
        verdict = assess_alone(defaced, args.modality)
    else:
        scan = Scan(Path(args.original).parent.name, original, None, args.modality, landmarks)
        kept = defaced.with_array((defaced.array == original.array).astype(np.uint8))
        result = DefacingResult(defaced, kept, "ok", "", "", "", "", 0.0)
        verdict = assess(scan, result, "given", seed=args.seed)
    if args.render:
        try:
            Path(args.render).parent.mkdir(parents=True, exist_ok=True)
            save_png(montage(verdict.renders), args.render)
        except OSError as error:
            return _fail(f"{args.render}: cannot write ({error.strerror or error})")
    if args.json:
        print(json.dumps(verdict.cli_summary(), indent=1))
    else:
        print(f"{'PASSED' if verdict.passed else 'FAILED'}: {verdict.reason}")
    return 0 if verdict.passed else 1


def _demo_environment(study: Path, profile: str, seed: int) -> dict[str, str]:
    return {
        "DEFACING_STUDY": str(study),
        "DEFACING_DATA": str(study / "data"),
        "DEFACING_STORAGE": str(study / "store"),
        "DEFACING_PROFILE": profile,
        "DEFACING_SEED": str(seed),
        "DAGSTER_HOME": str((study / "dagster_home").resolve()),
    }


def _cmd_demo(args: argparse.Namespace) -> int:
    from defacing_assets.cohort.synthetic import generate_subject, write_subject

    study = Path(args.study)
    profile = get_profile(args.profile)
    n_subjects = args.subjects or profile.n_subjects
    environment = _demo_environment(study, profile.name, args.seed)
    os.environ.update(environment)
    home = Path(environment["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    data = study / "data"
    for index in range(n_subjects):
        subject_id = f"SYN{index + 1:03d}"
        if not (data / subject_id / "subject.json").exists():
            scan, params = generate_subject(subject_id, index, args.seed, profile.name)
            write_subject(scan, params, data / subject_id)
            print(f"synthesised {subject_id}", flush=True)

    from defacing_assets.orchestration import run_demo_study

    run = run_demo_study(args.workers)
    for title, text in run.summaries:
        print(f"\n{title}\n{text}")
    print(f"\nstudy folder: {study.resolve()}  (see it in the UI with `make ui`)")
    if run.failed_models:
        print(
            f"demo: {len(run.failed_models)} models failed, the study's effects are not "
            f"tested with them: {'; '.join(run.failed_models)}",
            file=sys.stderr,
        )
        return 1
    return 0


SEED_HELP = (
    "the study's seed for the template registration's random sampling "
    "(same scan and seed: same output bytes)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="defacing-assets",
        description="Measure what defacing tools cost head-and-neck radiotherapy scans.",
    )
    parser.add_argument("--version", action="version", version=f"defacing-assets {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write a synthetic head-and-neck cohort")
    synth.add_argument("out", help="output folder (one subfolder per subject)")
    synth.add_argument("--subjects", type=int, default=5)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--profile", choices=list(PROFILES), default="demo")
    synth.add_argument("--modality", choices=["MR", "CT"], default="MR")
    synth.add_argument("--prefix", default="SYN", help="subject id prefix")
    synth.add_argument(
        "--short-fov-share",
        type=float,
        default=0.0,
        help="share of subjects whose field of view ends at the mouth or the nose (no neck)",
    )
    synth.set_defaults(run=_cmd_synth)

    validate = commands.add_parser("validate", help="check every subject in a data folder")
    validate.add_argument("dir")
    validate.set_defaults(run=_cmd_validate)

    defacers = commands.add_parser("defacers", help="list the defacer registry")
    defacers.add_argument("--study", default=None, help="study folder holding defacers.yaml")
    defacers.set_defaults(run=_cmd_defacers)

    deface = commands.add_parser("deface", help="deface one NIfTI image")
    deface.add_argument("--method", required=True)
    deface.add_argument("input")
    deface.add_argument("output")
    deface.add_argument("--kept-mask", default=None, help="also write the kept-voxel mask")
    deface.add_argument(
        "--labels",
        default=None,
        help="OAR labels to protect (hnc_safe): a label map on the image grid, or a subject folder",
    )
    deface.add_argument("--modality", choices=["MR", "CT"], default="MR")
    deface.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    deface.add_argument("--study", default=None, help="study folder holding defacers.yaml")
    deface.set_defaults(run=_cmd_deface)

    qc = commands.add_parser("qc", help="is the face gone? renders, detectors, landmarks")
    qc.add_argument("input", help="the defaced scan")
    qc.add_argument("--original", default=None, help="the scan before defacing")
    qc.add_argument("--modality", choices=["MR", "CT"], default="MR")
    qc.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    qc.add_argument("--json", action="store_true", help="print one JSON object")
    qc.add_argument("--render", default=None, help="write the five renders as one PNG")
    qc.set_defaults(run=_cmd_qc)

    demo = commands.add_parser("demo", help="synthetic cohort and the study, end to end")
    demo.add_argument("--study", default="demo_study", help="study folder (data, store, instance)")
    demo.add_argument("--profile", choices=list(PROFILES), default="demo")
    demo.add_argument("--subjects", type=int, default=None)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes running partitions side by side (default: one per core)",
    )
    demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; SIGTERM and SIGHUP end it through ``finally`` clauses (exit status
    128 + signal), so temporary folders holding patient data are removed and external
    tools stopped."""
    from defacing_assets.defacers.external import exit_on_termination

    quiet_warnings()
    args = build_parser().parse_args(argv)
    with exit_on_termination():
        return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
