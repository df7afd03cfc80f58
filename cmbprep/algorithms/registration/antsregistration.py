"""The ``antsRegistration`` command, run in-process through ANTsPy: ITK thread count,
stage options (Mattes MI), composite transform files, and a rigid alignment built on it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from .resampling import finite_3d, resample_to_resolution
from .transforms import apply_transform


def set_ants_threads(n_threads: int) -> None:
    """Set ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` for ANTs/ITK.

    ITK reads the variable the first time a multi-threaded filter runs in a process,
    so call this before any ANTs function (the Nipype interfaces do).
    """
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(max(1, int(n_threads)))


def write_translation(path: Path, translation_lps: np.ndarray) -> Path:
    """Write an ITK affine transform file that only translates (LPS mm)."""
    import ants

    tx = ants.create_ants_transform(
        transform_type="AffineTransform", dimension=3, translation=list(translation_lps)
    )
    ants.write_transform(tx, str(path))
    return path


def _run_antsregistration(args: list[str]) -> None:
    from ants.internal import get_lib_fn, process_arguments

    libfn = get_lib_fn("antsRegistration")
    rc = libfn(process_arguments(args))
    if rc != 0:
        raise RuntimeError(f"antsRegistration failed with exit code {rc}")


def _stage(kind, fixed, moving, *, metric, iterations, shrink, sigmas_mm, masks, step,
           threshold=1e-6):
    if kind == "SyN":
        transform = f"SyN[{step},3,0]"
        metric_str = f"{metric}[{fixed},{moving},1,32]"
    else:
        transform = f"{kind}[{step}]"
        metric_str = f"{metric}[{fixed},{moving},1,32,Regular,0.25]"
    return [
        "--transform", transform,
        "--metric", metric_str,
        "--convergence", "[{},{:g},10]".format("x".join(str(i) for i in iterations),
                                                threshold),
        "--shrink-factors", "x".join(str(s) for s in shrink),
        "--smoothing-sigmas", "x".join(f"{s:g}" for s in sigmas_mm) + "mm",
        "--masks", masks,
    ]  # fmt: skip


def _write_inputs(folder: Path, fixed, moving, fixed_mask) -> tuple[Path, Path, str]:
    """Save fixed/moving (float32) and the fixed mask (uint8) for antsRegistration;
    return their paths and the ``--masks`` option."""
    fixed_f = folder / "fixed.nii.gz"
    moving_f = folder / "moving.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(fixed.dataobj, np.float32), fixed.affine), fixed_f)
    nib.save(nib.Nifti1Image(np.asarray(moving.dataobj, np.float32), moving.affine), moving_f)
    mask_opt = "[NA,NA]"
    if fixed_mask is not None:
        mask_f = folder / "fixed_mask.nii.gz"
        mask_data = (np.asarray(fixed_mask.dataobj) > 0).astype(np.uint8)
        nib.save(nib.Nifti1Image(mask_data, fixed_mask.affine), mask_f)
        mask_opt = f"[{mask_f},NA]"
    return fixed_f, moving_f, mask_opt


def _arguments(fixed_f, moving_f, mask_opt, out_prefix, initial_transform, stages, seed,
               schedules, mask_linear_stages, convergence_threshold=1e-6) -> list[str]:
    """The antsRegistration command line; ``schedules`` maps "linear"/"syn" to
    ``(iterations, shrink factors, smoothing mm)``."""
    args = [
        "--dimensionality", "3",
        "--float", "1",
        "--collapse-output-transforms", "1",
        "--write-composite-transform", "1",
        "--random-seed", str(int(seed)),
        "--winsorize-image-intensities", "[0.005,0.995]",
        "--use-histogram-matching", "0",
        "--output", f"[{out_prefix}]",
    ]  # fmt: skip
    if initial_transform is not None:
        args += ["--initial-moving-transform", str(initial_transform)]
    for kind in stages:
        syn = kind == "SyN"
        iterations, shrink, sigmas_mm = schedules["syn" if syn else "linear"]
        args += _stage(
            kind,
            fixed_f,
            moving_f,
            metric="MI",
            iterations=iterations,
            shrink=shrink,
            sigmas_mm=sigmas_mm,
            masks=mask_opt if (syn or mask_linear_stages) else "[NA,NA]",
            step=0.2 if syn else 0.1,
            threshold=convergence_threshold,
        )
    return args


def register_images(
    fixed: nib.Nifti1Image,
    moving: nib.Nifti1Image,
    out_prefix: str | Path,
    *,
    fixed_mask: nib.Nifti1Image | None = None,
    initial_transform: str | Path | None = None,
    stages=("Rigid", "Affine", "SyN"),
    seed: int = 0,
    affine_iterations=(500, 250, 100),
    shrink_factors=(4, 2, 1),
    smoothing_mm=(4.0, 2.0, 0.0),
    syn_iterations=(60, 30, 10),
    syn_shrink_factors=(4, 2, 1),
    syn_smoothing_mm=(4.0, 2.0, 0.0),
    mask_linear_stages: bool = True,
    convergence_threshold: float = 1e-6,
) -> tuple[Path, Path]:
    """Run ``antsRegistration`` (moving -> fixed) and write composite transforms.

    Parameters
    ----------
    fixed, moving : nibabel.Nifti1Image
        Images already resampled to the working resolution.
    out_prefix : path-like
        Prefix of the output files (``<prefix>Composite.h5`` and
        ``<prefix>InverseComposite.h5``).
    fixed_mask : nibabel.Nifti1Image, optional
        Metric mask in fixed space (used by the SyN stage, and by linear stages when
        ``mask_linear_stages``).
    initial_transform : path-like, optional
        ITK transform file applied first (moving <- fixed point mapping).
    stages : sequence of {"Rigid", "Affine", "SyN"}
    seed : int
        ``--random-seed`` for the metric sampling.
    affine_iterations, shrink_factors, smoothing_mm : sequence
        Iterations, downsampling factors and Gaussian smoothing (mm) per resolution
        level of the linear stages.
    syn_iterations, syn_shrink_factors, syn_smoothing_mm : sequence
        The same for the SyN stage.
    mask_linear_stages : bool
        Use ``fixed_mask`` in the linear stages too.
    convergence_threshold : float
        Each level stops when the metric's slope over the last 10 iterations falls below
        this (``--convergence [N,threshold,10]``).

    Returns
    -------
    forward, inverse : Path
        ``Composite.h5`` (resamples moving images into fixed space, maps fixed points to
        moving points) and ``InverseComposite.h5``.
    """
    out_prefix = Path(out_prefix)
    schedules = {
        "linear": (affine_iterations, shrink_factors, smoothing_mm),
        "syn": (syn_iterations, syn_shrink_factors, syn_smoothing_mm),
    }
    tmp = Path(tempfile.mkdtemp(prefix="cmbprep_reg_", dir=out_prefix.parent))
    try:
        fixed_f, moving_f, mask_opt = _write_inputs(tmp, fixed, moving, fixed_mask)
        _run_antsregistration(
            _arguments(fixed_f, moving_f, mask_opt, out_prefix, initial_transform, stages,
                       seed, schedules, mask_linear_stages, convergence_threshold)
        )  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fwd = Path(f"{out_prefix}Composite.h5")
    inv = Path(f"{out_prefix}InverseComposite.h5")
    if not fwd.exists() or not inv.exists():
        raise RuntimeError(f"antsRegistration wrote no composite transform at {out_prefix}")
    return fwd, inv


def rigid_align_to_reference(
    moving: nib.Nifti1Image,
    reference: nib.Nifti1Image,
    out_prefix: str | Path,
    *,
    seed: int = 0,
    resolution_mm: float = 2.0,
) -> nib.Nifti1Image:
    """Rigidly register ``moving`` (e.g. a T1w) to ``reference`` and resample it there.

    Mutual information, rigid only, at ``resolution_mm``; the moved image is returned
    on the reference grid (linear interpolation) and the transform files are deleted.
    """
    fixed = resample_to_resolution(finite_3d(reference), resolution_mm)
    mov = resample_to_resolution(finite_3d(moving), resolution_mm)
    out_prefix = Path(out_prefix)
    fwd, inv = register_images(
        fixed, mov, out_prefix, stages=("Rigid",), seed=seed, mask_linear_stages=False
    )
    ref = nib.Nifti1Image(np.zeros(reference.shape[:3], np.float32), reference.affine)
    moved = apply_transform(finite_3d(moving), ref, fwd, interpolation="linear")
    fwd.unlink(missing_ok=True)
    inv.unlink(missing_ok=True)
    return moved
