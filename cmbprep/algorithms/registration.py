"""Template registration with ANTs (ANTsPy), offline.

The template is the ICBM 2009a nonlinear *symmetric* T1 template that nilearn ships
(``mni_icbm152_t1_tal_nlin_sym_09a``, brain only, 1 mm). Its BIDS/TemplateFlow
identifier is ``MNI152NLin2009aSym`` (:data:`TEMPLATE_NAME`): the 2009a and 2009c
releases differ slightly (2009c was re-processed with improved bias correction), so
calling the nilearn file ``MNI152NLin2009cSym`` would be wrong.

Registration maps the template (moving image) onto the subject (fixed image) in three
stages -- rigid, affine, SyN -- at a coarse isotropic resolution (2 mm by default).
The subject image contains skull and scalp whereas the template is brain-only, so the
rigid/affine stages are first run on the whole head, the warped template brain mask is
then dilated and used as the fixed-image metric mask for a second affine + SyN pass.

Transform conventions (ANTs)
----------------------------
``template_to_subject_xfm`` is the composite transform (HDF5) that *resamples template
images into subject space* (ANTs "forward" transform when the template is the moving
image). Because ANTs maps points in the opposite direction to images, the same file
maps *subject points to template points*: :func:`points_to_template` therefore takes
``template_to_subject_xfm``. ANTs works in LPS millimetres; the functions here take and
return RAS+ millimetres (the NIfTI convention) and flip the signs internally.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .mip import voxel_sizes

TEMPLATE_NAME = "MNI152NLin2009aSym"
TEMPLATE_DESCRIPTION = (
    "ICBM 2009a Nonlinear Symmetric T1 template (brain only), 1 mm, as shipped by "
    "nilearn (mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz); brain mask = template "
    "intensity > 0.2 of its maximum (nilearn.datasets.load_mni152_brain_mask)."
)
TEMPLATE_CITATION = (
    "Fonov V, Evans AC, Botteron K, et al. Unbiased average age-appropriate atlases "
    "for pediatric studies. NeuroImage 54(1):313-327, 2011; Fonov VS, Evans AC, "
    "McKinstry RC, Almli CR, Collins DL. Unbiased nonlinear average age-appropriate "
    "brain templates from birth to adulthood. NeuroImage 47:S102, 2009."
)

#: Default QC thresholds (see :func:`registration_quality`).
QC_THRESHOLDS = {
    "min_nmi": 1.04,
    "min_mask_in_head": 0.90,
    "min_scale": 0.70,
    "max_scale": 1.40,
}


# ----------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------
def set_ants_threads(n_threads: int) -> None:
    """Set ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` for ANTs/ITK.

    ITK reads the variable the first time a multi-threaded filter runs in a process,
    so call this before any ANTs function (the Nipype interfaces do).
    """
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(max(1, int(n_threads)))


def load_template(resolution_mm: float = 1.0) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Return the nilearn ICBM152 2009a symmetric T1 template and its brain mask.

    Parameters
    ----------
    resolution_mm : float
        Isotropic voxel size of the returned images in millimetres (1 = native).

    Returns
    -------
    t1, mask : nibabel.Nifti1Image
        T1 scaled to [0, 1] (float32) and the binary brain mask (uint8).
    """
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    res = None if float(resolution_mm) == 1.0 else float(resolution_mm)
    t1 = load_mni152_template(resolution=res)
    mask = load_mni152_brain_mask(resolution=res)
    t1 = nib.Nifti1Image(np.asarray(t1.dataobj, dtype=np.float32), t1.affine)
    mask = nib.Nifti1Image((np.asarray(mask.dataobj) > 0).astype(np.uint8), mask.affine)
    return t1, mask


def _to_ants(img: nib.Nifti1Image, dtype=np.float32):
    """nibabel image -> ANTs image (physical space preserved, oblique affines ok)."""
    import ants

    data = np.asarray(img.dataobj, dtype=dtype)
    affine = np.asarray(img.affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction_ras = affine[:3, :3] / spacing
    lps = np.diag([-1.0, -1.0, 1.0])
    direction = lps @ direction_ras
    origin = lps @ affine[:3, 3]
    return ants.from_numpy(
        data, origin=tuple(origin), spacing=tuple(spacing), direction=direction
    )


def _to_nibabel(image, dtype=None) -> nib.Nifti1Image:
    """ANTs image -> nibabel image."""
    lps = np.diag([-1.0, -1.0, 1.0])
    direction = lps @ np.asarray(image.direction)
    spacing = np.asarray(image.spacing)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing
    affine[:3, 3] = lps @ np.asarray(image.origin)
    data = image.numpy()
    if dtype is not None:
        data = data.astype(dtype)
    return nib.Nifti1Image(data, affine)


def coarse_step(voxel_size, target_mm: float = 1.0) -> np.ndarray:
    """Integer decimation factors per axis that bring ``voxel_size`` near ``target_mm``."""
    vs = np.asarray(voxel_size, dtype=float)
    return np.maximum(np.round(target_mm / vs).astype(int), 1)


def coarse_affine(affine: np.ndarray, step) -> np.ndarray:
    """Affine of the grid whose voxel ``k`` is the block ``[k*s, (k+1)*s)`` of the fine
    grid (centre at fine index ``k*s + (s-1)/2``)."""
    step = np.asarray(step, float)
    scale = np.eye(4)
    scale[:3, :3] = np.diag(step)
    scale[:3, 3] = (step - 1.0) / 2.0
    return np.asarray(affine, float) @ scale


def block_reduce(data: np.ndarray, step, func: str = "mean") -> np.ndarray:
    """Block mean (or ``max``) of ``data`` over ``step``-sized blocks (edges replicated)."""
    step = [int(s) for s in step]
    data = np.asarray(data)
    if all(s == 1 for s in step):
        return data.astype(np.float32) if func == "mean" else data.copy()
    shape = np.asarray(data.shape[:3])
    n = -(-shape // step)
    pad = [(0, int(n[i] * step[i] - shape[i])) for i in range(3)]
    if any(p[1] for p in pad):
        data = np.pad(data, pad, mode="edge")
    blocks = data.reshape(n[0], step[0], n[1], step[1], n[2], step[2])
    if func == "max":
        return blocks.max(axis=(1, 3, 5))
    return blocks.mean(axis=(1, 3, 5), dtype=np.float32)


def upsample_nearest(coarse: np.ndarray, step, shape) -> np.ndarray:
    """Inverse of :func:`block_reduce`: every fine voxel takes its block's value."""
    idx = [np.arange(int(n)) // int(s) for n, s in zip(shape[:3], step)]
    return np.asarray(coarse)[np.ix_(*idx)]


def upsample_linear(coarse: np.ndarray, step, shape) -> np.ndarray:
    """Separable linear interpolation of a :func:`block_reduce` grid back to ``shape``
    (float32; coarse voxel centres at fine index ``k*s + (s-1)/2``, edges clamped)."""
    out = np.asarray(coarse, dtype=np.float32)
    for axis, (n, s) in enumerate(zip(shape[:3], step)):
        s = int(s)
        if s == 1 and out.shape[axis] == n:
            continue
        c = (np.arange(int(n)) - (s - 1) / 2.0) / s
        lo = np.clip(np.floor(c).astype(int), 0, out.shape[axis] - 1)
        hi = np.clip(lo + 1, 0, out.shape[axis] - 1)
        w = np.clip(c - lo, 0.0, 1.0).astype(np.float32)
        wshape = [1, 1, 1]
        wshape[axis] = -1
        w = w.reshape(wshape)
        out = np.take(out, lo, axis=axis) * (1.0 - w) + np.take(out, hi, axis=axis) * w
    return out


def estimate_head_mask(image: np.ndarray, voxel_size) -> np.ndarray:
    """Head (foreground) mask by Otsu threshold, largest component and hole filling.

    Parameters
    ----------
    image : ndarray (X, Y, Z)
        Magnitude image.
    voxel_size : sequence of 3 floats
        Voxel size in mm.

    Returns
    -------
    ndarray of bool
    """
    from skimage.filters import threshold_otsu

    data = np.nan_to_num(np.asarray(image, dtype=np.float32))
    hi = np.percentile(data, 99.5)
    clipped = np.clip(data, 0, hi)
    level = threshold_otsu(clipped[clipped > 0]) if np.any(clipped > 0) else 0.0
    mask = clipped > 0.5 * level
    radius_vox = np.maximum(np.round(3.0 / np.asarray(voxel_size)).astype(int), 1)
    struct = _ellipsoid(radius_vox)
    mask = ndimage.binary_closing(mask, struct, iterations=1)
    lab, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, lab, index=np.arange(1, n + 1))
        mask = lab == (1 + int(np.argmax(sizes)))
    filled = mask.copy()
    for axis in range(3):  # fill holes slice by slice along each axis, then in 3D
        filled |= _fill_slices(mask, axis)
    return ndimage.binary_fill_holes(filled)


def _fill_slices(mask: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(mask, axis, 0)
    out = np.stack([ndimage.binary_fill_holes(s) for s in moved], axis=0)
    return np.moveaxis(out, 0, axis)


def _ellipsoid(radius_vox) -> np.ndarray:
    r = np.asarray(radius_vox, dtype=int)
    grids = np.ogrid[-r[0] : r[0] + 1, -r[1] : r[1] + 1, -r[2] : r[2] + 1]
    dist = sum((g / max(rr, 1)) ** 2 for g, rr in zip(grids, r))
    return dist <= 1.0


def ball_mm(radius_mm: float, voxel_size) -> np.ndarray:
    """Structuring element: a ball of ``radius_mm`` on an anisotropic voxel grid."""
    vs = np.asarray(voxel_size, dtype=float)
    r = np.maximum(np.floor(radius_mm / vs).astype(int), 0)
    grids = np.ogrid[-r[0] : r[0] + 1, -r[1] : r[1] + 1, -r[2] : r[2] + 1]
    dist2 = sum((g * v) ** 2 for g, v in zip(grids, vs))
    return dist2 <= radius_mm**2 + 1e-6


def normalized_mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Studholme's NMI ``(H(a) + H(b)) / H(a, b)`` (1 = independent, 2 = identical)."""
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.size < 10:
        return float("nan")
    hist, _, _ = np.histogram2d(a, b, bins=bins)
    p = hist / hist.sum()
    pa, pb = p.sum(1), p.sum(0)

    def _h(q):
        q = q[q > 0]
        return -np.sum(q * np.log(q))

    hab = _h(p.ravel())
    return float((_h(pa) + _h(pb)) / hab) if hab > 0 else float("nan")


# ----------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------
@dataclass
class RegistrationResult:
    """Files and QC of a template-to-subject registration."""

    template_to_subject_xfm: Path
    subject_to_template_xfm: Path
    qc: dict = field(default_factory=dict)
    warped_template_mask: nib.Nifti1Image | None = None  # on the coarse subject grid


def _centroid_lps(image) -> np.ndarray:
    """Physical (LPS) centroid of the non-zero voxels of an ANTs image."""
    arr = image.numpy() > 0
    idx = np.argwhere(arr).mean(axis=0)
    direction = np.asarray(image.direction)
    return np.asarray(image.origin) + direction @ (idx * np.asarray(image.spacing))


def _write_translation(path: Path, translation_lps: np.ndarray) -> Path:
    import ants

    tx = ants.create_ants_transform(
        transform_type="AffineTransform", dimension=3, translation=list(translation_lps)
    )
    ants.write_transform(tx, str(path))
    return path


def _run_antsregistration(args: list[str]) -> None:
    import ants
    from ants.internal import get_lib_fn, process_arguments

    libfn = get_lib_fn("antsRegistration")
    rc = libfn(process_arguments(args))
    if rc != 0:
        raise RuntimeError(f"antsRegistration failed with exit code {rc}")
    del ants


def _stage(kind, fixed, moving, *, metric, iterations, shrink, sigmas_mm, masks, step):
    if kind == "SyN":
        transform = f"SyN[{step},3,0]"
        metric_str = f"{metric}[{fixed},{moving},1,32]"
    else:
        transform = f"{kind}[{step}]"
        metric_str = f"{metric}[{fixed},{moving},1,32,Regular,0.25]"
    return [
        "--transform", transform,
        "--metric", metric_str,
        "--convergence", "[{},1e-6,10]".format("x".join(str(i) for i in iterations)),
        "--shrink-factors", "x".join(str(s) for s in shrink),
        "--smoothing-sigmas", "x".join(f"{s:g}" for s in sigmas_mm) + "mm",
        "--masks", masks,
    ]  # fmt: skip


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

    Returns
    -------
    forward, inverse : Path
        ``Composite.h5`` (resamples moving images into fixed space, maps fixed points to
        moving points) and ``InverseComposite.h5``.
    """
    out_prefix = Path(out_prefix)
    tmp = Path(tempfile.mkdtemp(prefix="cmbprep_reg_", dir=out_prefix.parent))
    try:
        fixed_f = tmp / "fixed.nii.gz"
        moving_f = tmp / "moving.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(fixed.dataobj, np.float32), fixed.affine), fixed_f)
        nib.save(
            nib.Nifti1Image(np.asarray(moving.dataobj, np.float32), moving.affine), moving_f
        )
        mask_opt = "[NA,NA]"
        if fixed_mask is not None:
            mask_f = tmp / "fixed_mask.nii.gz"
            nib.save(
                nib.Nifti1Image(
                    (np.asarray(fixed_mask.dataobj) > 0).astype(np.uint8), fixed_mask.affine
                ),
                mask_f,
            )
            mask_opt = f"[{mask_f},NA]"
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
            args += _stage(
                kind,
                fixed_f,
                moving_f,
                metric="MI",
                iterations=syn_iterations if syn else affine_iterations,
                shrink=syn_shrink_factors if syn else shrink_factors,
                sigmas_mm=syn_smoothing_mm if syn else smoothing_mm,
                masks=mask_opt if (syn or mask_linear_stages) else "[NA,NA]",
                step=0.2 if syn else 0.1,
            )
        _run_antsregistration(args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fwd = Path(f"{out_prefix}Composite.h5")
    inv = Path(f"{out_prefix}InverseComposite.h5")
    if not fwd.exists() or not inv.exists():
        raise RuntimeError(f"antsRegistration wrote no composite transform at {out_prefix}")
    return fwd, inv


def resample_to_resolution(img: nib.Nifti1Image, resolution_mm: float, interp: str = "linear"):
    """Resample an image to isotropic ``resolution_mm`` (keeps orientation and extent)."""
    import ants

    a = _to_ants(img)
    interp_type = {"linear": 0, "nearest": 1}[interp]
    out = ants.resample_image(a, (resolution_mm,) * 3, use_voxels=False, interp_type=interp_type)
    return _to_nibabel(out)


def apply_transform(
    moving: nib.Nifti1Image,
    reference: nib.Nifti1Image,
    transforms,
    *,
    interpolation: str = "linear",
    default_value: float = 0.0,
) -> nib.Nifti1Image:
    """Resample ``moving`` onto ``reference``'s grid through ANTs transform files.

    ``transforms`` are applied the ANTs way (last in the list first).
    ``interpolation`` is an ANTs name: ``linear``, ``nearestNeighbor``,
    ``genericLabel``...
    """
    import ants

    if isinstance(transforms, (str, Path)):
        transforms = [transforms]
    out = ants.apply_transforms(
        fixed=_to_ants(reference),
        moving=_to_ants(moving),
        transformlist=[str(t) for t in transforms],
        interpolator=interpolation,
        defaultvalue=default_value,
    )
    return _to_nibabel(out)


def register_template_to_subject(
    subject: nib.Nifti1Image,
    work_dir: str | Path,
    *,
    head_mask: nib.Nifti1Image | None = None,
    resolution_mm: float = 2.0,
    seed: int = 0,
    n_threads: int = 1,
    prefix: str = "template_to_subject_",
    syn_iterations=(50, 15, 0),
    refine_affine_iterations=(100, 10),
    mask_dilation_mm: float = 6.0,
    qc_thresholds: dict | None = None,
) -> RegistrationResult:
    """Register the ICBM152 template (moving) to a subject image with skull (fixed).

    Parameters
    ----------
    subject : nibabel.Nifti1Image
        Bias-corrected magnitude (or T1w) in subject space; any storage order/oblique
        affine.
    work_dir : path-like
        Directory for the transform files.
    head_mask : nibabel.Nifti1Image, optional
        Head (foreground) mask on the subject grid; estimated by Otsu when missing.
    resolution_mm : float
        Isotropic working resolution in mm (default 2 mm: ~10x faster than 1 mm; the
        transform is applied at full resolution afterwards). The subject image is
        first block-averaged over whole voxels up to this size (box anti-aliasing,
        and ANTs never sees the full-resolution image).
    seed : int
        ANTs ``--random-seed``.
    n_threads : int
        ITK threads (``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``).
    syn_iterations : sequence of int
        SyN iterations at shrink factors 4, 2, 1 of the working grid. The default does
        no iteration at shrink 1 (each one costs about as much as ten at shrink 2, and
        the phantom accuracy tests pass without them): the field is estimated at
        shrink 4 and 2 (8 and 4 mm at the default resolution) and upsampled. Pass 1 is fixed: rigid + affine
        (500, 250 iterations at shrink 4, 2); pass 2 is affine
        (``refine_affine_iterations`` at shrink 2, 1) then SyN, all Mattes MI (32 bins,
        25 % regular sampling for linear stages).
    refine_affine_iterations : sequence of 2 int
        Iterations of the masked pass-2 affine stage at shrink 2 and 1 (the metric is
        flat after about ten iterations at shrink 1).
    mask_dilation_mm : float
        Dilation of the affinely warped template brain mask that becomes the
        fixed-image metric mask of the second pass (excludes most scalp).
    qc_thresholds : dict, optional
        Overrides for :data:`QC_THRESHOLDS`.

    Returns
    -------
    RegistrationResult
    """
    set_ants_threads(n_threads)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    template, template_mask = load_template(1.0)
    tpl = resample_to_resolution(template, resolution_mm)
    tpl_mask = resample_to_resolution(template_mask, resolution_mm, interp="nearest")

    # Block means over whole subject voxels no larger than the working resolution first
    # (an anti-aliasing box filter that also spares ANTs the full-resolution image).
    subject = _finite(subject)
    pre_step = np.maximum(np.floor(resolution_mm / voxel_sizes(subject.affine) + 1e-6), 1)
    pre_step = pre_step.astype(int)
    pre_affine = coarse_affine(subject.affine, pre_step)
    sub = resample_to_resolution(
        nib.Nifti1Image(block_reduce(np.asarray(subject.dataobj), pre_step), pre_affine),
        resolution_mm,
    )
    if head_mask is None:
        head = estimate_head_mask(np.asarray(sub.dataobj), voxel_sizes(sub.affine))
        head = nib.Nifti1Image(head.astype(np.uint8), sub.affine)
    else:
        h_step = np.maximum(np.floor(resolution_mm / voxel_sizes(head_mask.affine) + 1e-6), 1)
        h_step = h_step.astype(int)
        head_data = block_reduce(np.asarray(head_mask.dataobj) > 0, h_step)
        head = apply_transform(
            nib.Nifti1Image(head_data, coarse_affine(head_mask.affine, h_step)),
            sub,
            [],
            interpolation="linear",
        )
        head = nib.Nifti1Image((np.asarray(head.dataobj) > 0.5).astype(np.uint8), sub.affine)
    head_arr = np.asarray(head.dataobj) > 0
    if head_arr.sum() < 100:
        raise ValueError("head mask is empty: the subject image has no foreground")

    # Centre-of-mass initialisation: template brain centroid onto the head centroid.
    import ants

    c_fixed = _centroid_lps(_to_ants(head))
    c_moving = _centroid_lps(_to_ants(tpl_mask))
    init = _write_translation(work_dir / f"{prefix}init.mat", c_moving - c_fixed)

    # Pass 1: rigid + affine on the whole head (no mask).
    t_start = time.perf_counter()
    lin_fwd, _ = register_images(
        sub,
        tpl,
        work_dir / f"{prefix}pass1_",
        initial_transform=init,
        stages=("Rigid", "Affine"),
        seed=seed,
        affine_iterations=(500, 250),
        shrink_factors=(4, 2),
        smoothing_mm=(4.0, 2.0),
        mask_linear_stages=False,
    )
    warped_mask = apply_transform(tpl_mask, sub, lin_fwd, interpolation="linear")
    wm = np.asarray(warped_mask.dataobj) > 0.5
    fixed_mask = ndimage.binary_dilation(
        wm, ball_mm(mask_dilation_mm, voxel_sizes(sub.affine))
    ) & _dilate(head_arr, sub)
    t_pass1 = time.perf_counter() - t_start
    # Pass 2: affine refinement + SyN inside the dilated brain.
    fwd, inv = register_images(
        sub,
        tpl,
        work_dir / prefix,
        fixed_mask=nib.Nifti1Image(fixed_mask.astype(np.uint8), sub.affine),
        initial_transform=lin_fwd,
        stages=("Affine", "SyN"),
        seed=seed,
        affine_iterations=tuple(refine_affine_iterations),
        shrink_factors=(2, 1),
        smoothing_mm=(2.0, 0.0),
        syn_iterations=syn_iterations,
    )
    t_pass2 = time.perf_counter() - t_start - t_pass1
    for f in work_dir.glob(f"{prefix}pass1_*"):
        f.unlink()
    init.unlink(missing_ok=True)
    del ants

    warped_tpl = apply_transform(tpl, sub, fwd, interpolation="linear")
    warped_mask = apply_transform(tpl_mask, sub, fwd, interpolation="linear")
    qc = registration_quality(
        np.asarray(sub.dataobj),
        np.asarray(warped_tpl.dataobj),
        np.asarray(warped_mask.dataobj) > 0.5,
        head_arr,
        affine_scale=_volume_scale(
            np.asarray(warped_mask.dataobj) > 0.5,
            float(np.prod(voxel_sizes(sub.affine))),
            tpl_mask,
        ),
        thresholds=qc_thresholds,
    )
    qc["resolution_mm"] = float(resolution_mm)
    qc["seed"] = int(seed)
    qc["duration_s"] = {"linear": round(t_pass1, 1), "affine_syn": round(t_pass2, 1)}
    return RegistrationResult(fwd, inv, qc, warped_mask)


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
    fixed = resample_to_resolution(_finite(reference), resolution_mm)
    mov = resample_to_resolution(_finite(moving), resolution_mm)
    out_prefix = Path(out_prefix)
    fwd, inv = register_images(
        fixed, mov, out_prefix, stages=("Rigid",), seed=seed, mask_linear_stages=False
    )
    ref = nib.Nifti1Image(np.zeros(reference.shape[:3], np.float32), reference.affine)
    moved = apply_transform(_finite(moving), ref, fwd, interpolation="linear")
    fwd.unlink(missing_ok=True)
    inv.unlink(missing_ok=True)
    return moved


def _dilate(mask: np.ndarray, img: nib.Nifti1Image, mm: float = 4.0) -> np.ndarray:
    return ndimage.binary_dilation(mask, ball_mm(mm, voxel_sizes(img.affine)))


def _finite(img: nib.Nifti1Image) -> nib.Nifti1Image:
    data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32))
    if data.ndim == 4:
        data = data[..., 0]
    return nib.Nifti1Image(data, img.affine)


def _volume_scale(warped_mask: np.ndarray, warped_voxel_mm3: float, template_mask) -> float:
    """Linear scale template -> subject from brain volumes: ``(V_warped / V_tpl)^(1/3)``.

    (Reading the composite HDF5 transform back with ANTsPy is avoided: it can hang.)
    """
    tpl = np.asarray(template_mask.dataobj) > 0
    tpl_ml = tpl.sum() * float(np.prod(voxel_sizes(template_mask.affine)))
    sub_ml = np.asarray(warped_mask, bool).sum() * warped_voxel_mm3
    return float((sub_ml / tpl_ml) ** (1.0 / 3.0)) if tpl_ml > 0 else float("nan")


def registration_quality(
    subject: np.ndarray,
    warped_template: np.ndarray,
    warped_mask: np.ndarray,
    head_mask: np.ndarray | None,
    *,
    affine_scale: float = float("nan"),
    thresholds: dict | None = None,
) -> dict:
    """QC metrics of a template-to-subject registration and a pass/fail verdict.

    Metrics
    -------
    ``nmi``
        Normalised mutual information (32 bins) between subject and warped template
        inside the warped template brain mask. Identical images give 2, independent
        images 1. A correctly registered brain of any contrast gives clearly > 1;
        garbage or mis-registered images give close to 1.
    ``mask_in_head``
        Fraction of the warped template brain mask that lies inside the subject's head
        mask (should be ~1).
    ``affine_scale``
        Linear scale of the template brain in the subject, from the brain volumes
        ``(V_warped / V_template)^(1/3)`` (plausible adult heads: 0.7-1.4).

    Returns
    -------
    dict
        Metrics, the thresholds used, ``registration_ok`` (bool) and
        ``registration_warnings`` (list of str).
    """
    th = dict(QC_THRESHOLDS)
    th.update(thresholds or {})
    subject = np.asarray(subject, float)
    warped_mask = np.asarray(warped_mask, bool)
    nmi = normalized_mutual_information(subject[warped_mask], np.asarray(warped_template)[warped_mask])
    in_head = (
        float((warped_mask & head_mask).sum() / max(warped_mask.sum(), 1))
        if head_mask is not None
        else float("nan")
    )
    warnings = []
    if not np.isfinite(nmi) or nmi < th["min_nmi"]:
        warnings.append(
            f"low normalised mutual information between subject and warped template "
            f"({nmi:.3f} < {th['min_nmi']}): registration probably failed"
        )
    if np.isfinite(in_head) and in_head < th["min_mask_in_head"]:
        warnings.append(
            f"only {100 * in_head:.0f}% of the warped template brain lies inside the head "
            f"mask (< {100 * th['min_mask_in_head']:.0f}%)"
        )
    if np.isfinite(affine_scale) and not (th["min_scale"] <= affine_scale <= th["max_scale"]):
        warnings.append(
            f"implausible template scale {affine_scale:.2f} (expected "
            f"{th['min_scale']}-{th['max_scale']})"
        )
    return {
        "nmi": round(float(nmi), 4),
        "mask_in_head": round(in_head, 4),
        "affine_scale": round(float(affine_scale), 4),
        "thresholds": th,
        "registration_ok": not warnings,
        "registration_warnings": warnings,
    }


# ----------------------------------------------------------------------------------
# Applying transforms
# ----------------------------------------------------------------------------------
def resample_labels_to_subject(
    labels: nib.Nifti1Image,
    reference: nib.Nifti1Image,
    template_to_subject_xfm: str | Path,
    *,
    interpolation: str = "nearestNeighbor",
) -> nib.Nifti1Image:
    """Warp a template-space label image onto the subject grid.

    Parameters
    ----------
    labels : nibabel.Nifti1Image
        Integer labels in template space.
    reference : nibabel.Nifti1Image
        Subject image defining the output grid (3D; first volume used if 4D).
    template_to_subject_xfm : path-like
        Composite transform from :func:`register_template_to_subject`.
    interpolation : str
        ``nearestNeighbor`` (fast) or ``genericLabel`` (smoother boundaries, slower).

    Returns
    -------
    nibabel.Nifti1Image
        uint8/uint16 labels on the reference grid (0 outside the warped template and
        outside the reference field of view).
    """
    ref = nib.Nifti1Image(np.zeros(reference.shape[:3], np.float32), reference.affine)
    src = nib.Nifti1Image(np.asarray(labels.dataobj, np.float32), labels.affine)
    out = apply_transform(src, ref, template_to_subject_xfm, interpolation=interpolation)
    data = np.rint(np.asarray(out.dataobj)).astype(np.int32)
    dtype = np.uint8 if data.max() < 256 else np.uint16
    img = nib.Nifti1Image(data.astype(dtype), reference.affine)
    img.set_data_dtype(dtype)
    return img


def _apply_to_points(points_ras_mm, transform: str | Path) -> np.ndarray:
    import ants
    import pandas as pd

    pts = np.atleast_2d(np.asarray(points_ras_mm, dtype=float))
    if pts.size == 0:
        return np.zeros((0, 3))
    if pts.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {pts.shape}")
    df = pd.DataFrame({"x": -pts[:, 0], "y": -pts[:, 1], "z": pts[:, 2]})
    out = ants.apply_transforms_to_points(3, df, [str(transform)], whichtoinvert=[False])
    res = out[["x", "y", "z"]].to_numpy(dtype=float)
    res[:, :2] *= -1
    return res


def points_to_template(points_ras_mm, template_to_subject_xfm: str | Path) -> np.ndarray:
    """Map subject scanner RAS+ mm points to template (MNI) RAS+ mm.

    ANTs maps points opposite to images: the transform that resamples template images
    into subject space (``template_to_subject_xfm``, ``..._from-<template>_to-swi_...``)
    maps subject points to template points. Conversion RAS <-> LPS is done here.

    Parameters
    ----------
    points_ras_mm : array-like (N, 3)
    template_to_subject_xfm : path-like

    Returns
    -------
    ndarray (N, 3)
    """
    return _apply_to_points(points_ras_mm, template_to_subject_xfm)


def points_to_subject(points_mni_mm, subject_to_template_xfm: str | Path) -> np.ndarray:
    """Map template (MNI) RAS+ mm points to subject scanner RAS+ mm.

    Uses the transform that resamples subject images into template space
    (``subject_to_template_xfm``), following the ANTs point/image rule.
    """
    return _apply_to_points(points_mni_mm, subject_to_template_xfm)
