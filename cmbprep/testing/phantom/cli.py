"""Command line: ``python -m cmbprep.testing.phantom OUT_DIR ...`` (and
``python -m cmbprep.testing``) writes a simulated BIDS dataset."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from .bids import INPUT_KINDS, write_bids_dataset, write_example_dataset
from .config import PROTOCOLS

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog="python -m cmbprep.testing.phantom",
        description="Write a simulated BIDS dataset of SWI with known microbleeds.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n-subjects", type=int, default=3)
    parser.add_argument("--n-controls", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="small")
    parser.add_argument("--input-kind", choices=list(INPUT_KINDS), default="gre")
    parser.add_argument("--sessions", type=int, default=None)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--acq", default=None)
    parser.add_argument("--include-t1w", action="store_true")
    parser.add_argument("--calcifications", type=int, default=0)
    parser.add_argument("--phase-units", choices=["rad", "arbitrary"], default="rad")
    parser.add_argument("--voxel-size", type=float, nargs="+", default=None, metavar="MM",
                        help="override the protocol voxel size (one value: isotropic; or "
                             "read phase slice), mm")
    parser.add_argument("--example", action="store_true",
                        help="write the bundled 3-subject example dataset and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    overrides = None
    if args.voxel_size is not None:
        if len(args.voxel_size) not in (1, 3):
            parser.error("--voxel-size takes 1 or 3 values")
        vs = args.voxel_size * 3 if len(args.voxel_size) == 1 else args.voxel_size
        overrides = {"voxel_size_mm": tuple(vs)}
    if args.example:
        root = write_example_dataset(args.out_dir, seed=args.seed)
    else:
        root = write_bids_dataset(
            args.out_dir, n_subjects=args.n_subjects, seed=args.seed, protocol=args.protocol,
            input_kind=args.input_kind, n_controls=args.n_controls, sessions=args.sessions,
            runs=args.runs, acq=args.acq, include_t1w=args.include_t1w,
            calcifications=args.calcifications, phase_units=args.phase_units,
            config_overrides=overrides)
    print(root)
    return 0
