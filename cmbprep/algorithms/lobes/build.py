"""Install-time build of the region atlas (``python -m cmbprep.algorithms.lobes``).

Sources are the CAT12 versions of the Hammers (Hammers et al. 2003; Gousias et al.
2008) and Mori/JHU (Oishi et al. 2009) atlases shipped by the ``deepmriprep`` Python
package (MIT code; the atlases keep their own non-commercial academic terms). They are
in MNI152NLin2009cAsym. The CAT12 T1 template shipped with them was registered once to
nilearn's MNI152NLin2009aSym template (ANTs rigid + affine + SyN, 1.5 mm, seed 0;
:func:`register_templates`, several CPU-minutes) and the result ships with cmbprep as
one displacement field (:data:`TRANSFORM_FILE`, made from the two templates only, no
atlas labels). :func:`build_atlas` carries the labels across with it (``genericLabel``
interpolation) and composes the regions with :func:`compose_regions`: seconds, not
minutes. Without the shipped field it registers the templates itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .regions import (
    ATLAS_DIR,
    ATLAS_FILE,
    DEFAULT_JUXTACORTICAL_MM,
    LOBAR,
    LUT_FILE,
    META_FILE,
    REGION_INDEX,
    RIGHT_OFFSET,
    atlas_provenance,
    lookup_table,
)

# Hammers label -> region name (None: CSF, filled later)
_HAMMERS_FRONTAL = [28, 29, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 68, 69, 70, 71, 72, 73,
                    76, 77, 78, 79, 80, 81]  # fmt: skip
_HAMMERS_PARIETAL = [32, 33, 60, 61, 62, 63, 84, 85]
_HAMMERS_TEMPORAL = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 30, 31, 82, 83]
_HAMMERS_OCCIPITAL = [22, 23, 64, 65, 66, 67]
_HAMMERS_INSULA = [20, 21, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95]
_HAMMERS_CINGULATE = [24, 25, 26, 27]
_HAMMERS_BG = [34, 35, 36, 37, 38, 39, 42, 43]
_HAMMERS_THALAMUS = [40, 41]
_HAMMERS_CC = [44]
_HAMMERS_BRAINSTEM = [19, 74, 75]
_HAMMERS_CEREBELLUM = [17, 18]
_HAMMERS_VENTRICLES = [45, 46, 47, 48, 49]
_MORI_IC = [65, 66, 67, 68, 107, 108]
_MORI_EC = [91, 92]
_MORI_CC = [101, 102, 103, 104, 105, 106, 113, 114]


def _map_labels(data: np.ndarray, groups: dict[str, list[int]]) -> np.ndarray:
    out = np.zeros(data.shape, np.uint8)
    lut = np.zeros(int(data.max()) + 1 if data.size else 1, np.uint8)
    for name, ids in groups.items():
        for i in ids:
            if i < lut.size:
                lut[i] = REGION_INDEX[name]
    out[...] = lut[data]
    return out


def _source_regions(hammers: np.ndarray, mori: np.ndarray):
    """Region indices (no hemisphere) of the lobar Hammers labels, the deep / infra-
    tentorial Hammers labels and the Mori white-matter tracts."""
    lobar_groups = {
        "frontal": _HAMMERS_FRONTAL,
        "parietal": _HAMMERS_PARIETAL,
        "temporal": _HAMMERS_TEMPORAL,
        "occipital": _HAMMERS_OCCIPITAL,
        "insula": _HAMMERS_INSULA,
        "cingulate": _HAMMERS_CINGULATE,
    }
    lobar = _map_labels(hammers, lobar_groups)
    deep = _map_labels(
        hammers,
        {
            "basal_ganglia": _HAMMERS_BG,
            "thalamus": _HAMMERS_THALAMUS,
            "corpus_callosum": _HAMMERS_CC,
            "brainstem": _HAMMERS_BRAINSTEM,
            "cerebellum": _HAMMERS_CEREBELLUM,
        },
    )
    tracts = _map_labels(
        mori,
        {"internal_capsule": _MORI_IC, "external_capsule": _MORI_EC, "corpus_callosum": _MORI_CC},
    )
    return lobar, deep, tracts


def compose_regions(
    hammers: np.ndarray,
    mori: np.ndarray,
    gm_prob: np.ndarray,
    wm_prob: np.ndarray,
    brain_mask: np.ndarray,
    affine: np.ndarray,
    *,
    juxtacortical_mm: float = DEFAULT_JUXTACORTICAL_MM,
) -> np.ndarray:
    """Combine Hammers + Mori labels into the MARS region atlas (template grid).

    Parameters
    ----------
    hammers, mori : ndarray of int
        Source atlases resampled to the template grid.
    gm_prob, wm_prob : ndarray of float
        Template tissue probability maps.
    brain_mask : ndarray of bool
        Template brain mask; every voxel in it receives a label.
    affine : ndarray (4, 4)
        Template voxel-to-mm affine (for distances in mm and hemisphere).
    juxtacortical_mm : float
        Lobar white matter within this distance (mm) of lobar cortex keeps the lobe
        of the *nearest* cortex; farther white matter becomes ``deep_white_matter``.

    Returns
    -------
    ndarray of uint8
        Labels 1-14 (left) and 21-34 (right); 0 outside ``brain_mask``.
    """
    hammers = np.asarray(hammers, dtype=np.int64)
    mori = np.asarray(mori, dtype=np.int64)
    vs = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    lobar, deep, tracts = _source_regions(hammers, mori)
    labels = _assign_regions(
        lobar, deep, tracts, gm_prob, wm_prob, brain_mask, vs, juxtacortical_mm
    )
    _fill_unlabelled(labels, hammers, brain_mask, vs)
    return _add_hemisphere(labels, affine)


def _assign_regions(lobar, deep, tracts, gm_prob, wm_prob, brain_mask, vs, juxtacortical_mm):
    """Steps 1-4 of :func:`compose_regions`: lobes (juxtacortical rule), deep white
    matter, tracts, then deep grey matter / brainstem / cerebellum; 0 outside the brain."""
    # Lobar cortex: lobar label where grey matter dominates.
    cortex = (lobar > 0) & (gm_prob >= wm_prob) & (gm_prob > 0.2)
    dist_mm, nearest = ndimage.distance_transform_edt(
        ~cortex, sampling=vs, return_indices=True
    )
    nearest_lobe = lobar[tuple(nearest)]
    labels = np.zeros(lobar.shape, np.uint8)
    # 1. cortex-adjacent lobar tissue -> lobe of the nearest cortex
    lobar_tissue = (lobar > 0) | ((deep == 0) & (tracts == 0) & brain_mask)
    juxta = lobar_tissue & (dist_mm <= juxtacortical_mm)
    labels[juxta] = nearest_lobe[juxta]
    labels[cortex] = lobar[cortex]
    # 2. lobar white matter far from cortex -> deep white matter
    far = (lobar > 0) & (dist_mm > juxtacortical_mm)
    labels[far] = REGION_INDEX["deep_white_matter"]
    # 3. white-matter tracts (capsules, corpus callosum) where WM dominates
    tract_wm = (tracts > 0) & (wm_prob >= gm_prob) & (deep == 0) | (
        (tracts > 0) & (lobar > 0) & ~cortex
    )
    labels[tract_wm] = tracts[tract_wm]
    # 4. deep grey matter, brainstem, cerebellum
    labels[deep > 0] = deep[deep > 0]
    labels[~brain_mask] = 0
    return labels


def _fill_unlabelled(labels, hammers, brain_mask, vs) -> None:
    """Step 5 (in place): unlabelled brain voxels (ventricles, gaps) take the nearest
    label; lateral-ventricle voxels adjacent to lobes would become lobar: prefer deep WM."""
    unlabeled = brain_mask & (labels == 0)
    if unlabeled.any():
        ventricles = np.isin(hammers, _HAMMERS_VENTRICLES)
        _, idx = ndimage.distance_transform_edt(labels == 0, sampling=vs, return_indices=True)
        fill = labels[tuple(idx)]
        fill[ventricles & np.isin(fill, [REGION_INDEX[n] for n in LOBAR])] = REGION_INDEX[
            "deep_white_matter"
        ]
        labels[unlabeled] = fill[unlabeled]


def _add_hemisphere(labels: np.ndarray, affine) -> np.ndarray:
    """Step 6: right hemisphere (template x >= 0) labels get :data:`RIGHT_OFFSET`."""
    x_mm = (
        affine[0, 0] * np.arange(labels.shape[0])[:, None, None]
        + affine[0, 1] * np.arange(labels.shape[1])[None, :, None]
        + affine[0, 2] * np.arange(labels.shape[2])[None, None, :]
        + affine[0, 3]
    )
    right = (x_mm >= 0) & (labels > 0)
    labels[right] = labels[right] + RIGHT_OFFSET
    return labels


def _deepmriprep_templates() -> Path:
    spec = importlib.util.find_spec("deepmriprep")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "building the cmbprep atlas needs the 'deepmriprep' package's atlas files: "
            "pip install --no-deps deepmriprep==0.3.0"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "templates"


#: The shipped 2009cAsym -> 2009aSym displacement field (in ``ATLAS_DIR``), made by
#: :func:`register_templates`; resamples 2009cAsym images onto the 2009aSym grid.
TRANSFORM_FILE = "from-MNI152NLin2009cAsym_to-MNI152NLin2009aSym_mode-image_xfm.nii.gz"
#: Quantisation step of the stored displacements (mm).
TRANSFORM_STEP_MM = 0.01


def _cat_template(src: Path) -> nib.Nifti1Image:
    cat_t1 = nib.load(src / "Template_05mm_bet.nii.gz")
    return nib.Nifti1Image(np.asarray(cat_t1.dataobj, np.float32), cat_t1.affine)


def register_templates(
    out_file: str | Path = ATLAS_DIR / TRANSFORM_FILE,
    *,
    resolution_mm: float = 1.5,
    seed: int = 0,
    n_threads: int = 1,
    margin_mm: float = 12.0,
) -> Path:
    """Register the CAT12 T1 template (2009cAsym) to the nilearn 2009aSym template and
    write the transform as one displacement field (done once, by the maintainers).

    ANTs rigid + affine + SyN (Mattes MI, ``resolution_mm``, ``seed``). The affine and
    the SyN warp are composed into a single displacement field on the ``resolution_mm``
    template grid, cropped to the template brain mask plus ``margin_mm`` (the atlas is
    only kept inside the mask) and stored as int16 in steps of
    :data:`TRANSFORM_STEP_MM` (gzip NIfTI, ITK displacement-field layout).
    """
    from .. import registration as reg

    reg.set_ants_threads(n_threads)
    src = _deepmriprep_templates()
    tpl, tpl_mask = reg.load_template(1.0)
    fixed = reg.resample_to_resolution(tpl, resolution_mm)
    moving = reg.resample_to_resolution(_cat_template(src), resolution_mm)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_file.parent) as tmp:
        fwd, _ = reg.register_images(
            fixed,
            moving,
            Path(tmp) / "cat_to_nilearn_",
            stages=("Rigid", "Affine", "SyN"),
            seed=seed,
            syn_iterations=(100, 70, 30),
            mask_linear_stages=False,
        )
        return store_field(fwd, fixed, tpl_mask, out_file, margin_mm=margin_mm)


def store_field(composite, fixed, tpl_mask, out_file, *, margin_mm: float = 12.0) -> Path:
    """Write the ANTs transform ``composite`` as one int16 displacement field on the
    grid of ``fixed``, cropped to ``tpl_mask`` plus ``margin_mm`` (see
    :func:`register_templates`)."""
    import ants

    from ..registration.resampling import to_ants

    out_file = Path(out_file)
    with tempfile.TemporaryDirectory(dir=out_file.parent) as tmp:
        composed = ants.apply_transforms(
            fixed=to_ants(fixed), moving=to_ants(fixed), transformlist=[str(composite)],
            compose=str(Path(tmp) / "composed_"),
        )  # fmt: skip
        field = nib.load(composed)
        data = np.asarray(field.dataobj, np.float32)
        affine = field.affine
    # crop to the brain mask (+ margin) of the template, on the field's grid
    ijk_mask = np.argwhere(np.asarray(tpl_mask.dataobj) > 0)
    corners = np.array(list(itertools.product(*zip(ijk_mask.min(0), ijk_mask.max(0)))), float)
    mm = nib.affines.apply_affine(tpl_mask.affine, corners)
    ijk = nib.affines.apply_affine(np.linalg.inv(affine), mm)
    step = float(np.linalg.norm(affine[:3, 0]))
    margin = int(np.ceil(margin_mm / step))
    lo = np.maximum(np.floor(ijk.min(0)).astype(int) - margin, 0)
    hi = np.minimum(np.ceil(ijk.max(0)).astype(int) + margin + 1, data.shape[:3])
    data = data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    affine = affine.copy()
    affine[:3, 3] = nib.affines.apply_affine(affine, lo)
    q = np.rint(data / TRANSFORM_STEP_MM)
    if np.abs(q).max() >= 32767:
        raise ValueError("displacement too large for the int16 storage")
    img = nib.Nifti1Image(q.astype(np.int16), affine)
    img.header.set_intent("vector")
    img.header.set_xyzt_units("mm")
    img.header.set_slope_inter(TRANSFORM_STEP_MM, 0.0)
    img.header["descrip"] = b"cmbprep 2009cAsym->2009aSym field (mm, ITK LPS)"
    nib.save(img, out_file)
    return out_file


def _load_field(path: Path, folder: Path) -> Path:
    """The stored field as a float32 ITK displacement-field NIfTI in ``folder``."""
    stored = nib.load(path)
    img = nib.Nifti1Image(np.asarray(stored.get_fdata(), np.float32), stored.affine)
    img.header.set_intent("vector")
    img.header.set_xyzt_units("mm")
    out = folder / "field.nii.gz"
    nib.save(img, out)
    return out


def _warp_sources(src: Path, tpl, transform: Path) -> dict:
    """Carry the Hammers and Mori labels onto the template grid through the
    2009cAsym -> 2009aSym field (``genericLabel`` interpolation)."""
    from .. import registration as reg

    moved = {}
    with tempfile.TemporaryDirectory() as tmp:
        field = _load_field(transform, Path(tmp))
        for name in ("hammers", "mori"):
            img = nib.load(src / f"{name}.nii.gz")
            img = nib.Nifti1Image(np.asarray(img.dataobj, np.float32), img.affine)
            out = reg.apply_transform(img, tpl, [field], interpolation="genericLabel")
            moved[name] = np.rint(np.asarray(out.dataobj)).astype(np.int64)
    return moved


def build_atlas(
    out_dir: str | Path = ATLAS_DIR,
    *,
    juxtacortical_mm: float = DEFAULT_JUXTACORTICAL_MM,
    transform: str | Path | None = None,
    seed: int = 0,
    n_threads: int = 1,
    progress=None,
) -> Path:
    """Build the atlas in the template grid and write image, TSV and JSON.

    Parameters
    ----------
    out_dir : path-like
        Output directory (default: the package's ``data/atlas``).
    juxtacortical_mm : float
        See :func:`compose_regions`.
    transform : path-like, optional
        The 2009cAsym -> 2009aSym displacement field; default: the shipped
        :data:`TRANSFORM_FILE`, or, if that is missing, one made now by
        :func:`register_templates` (seed ``seed``; several CPU-minutes).
    seed, n_threads : int
        ANTs random seed and thread count.
    progress : callable, optional
        Called with one line of text per step (e.g. ``print``).

    Returns
    -------
    Path
        The atlas NIfTI file.
    """
    from nilearn.datasets import load_mni152_gm_template, load_mni152_wm_template

    from .. import registration as reg

    t0 = time.monotonic()

    def say(step, text):
        if progress is not None:
            progress(f"[{step}/4] {text} ({time.monotonic() - t0:.0f} s)")

    reg.set_ants_threads(n_threads)
    src = _deepmriprep_templates()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tpl, tpl_mask = reg.load_template(1.0)
    gm = np.asarray(load_mni152_gm_template(resolution=1).dataobj, np.float32)
    wm = np.asarray(load_mni152_wm_template(resolution=1).dataobj, np.float32)
    say(1, "templates loaded")
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        if transform is None:
            transform = ATLAS_DIR / TRANSFORM_FILE
            if not transform.exists():
                if progress is not None:
                    progress(f"{transform} missing: registering the templates now "
                             "(several CPU-minutes)")
                transform = register_templates(Path(tmp) / TRANSFORM_FILE, seed=seed,
                                               n_threads=n_threads)
        say(2, f"template transform: {Path(transform).name}")
        moved = _warp_sources(src, tpl, Path(transform))
    say(3, "Hammers and Mori labels carried to MNI152NLin2009aSym")
    labels = compose_regions(
        moved["hammers"],
        moved["mori"],
        gm,
        wm,
        np.asarray(tpl_mask.dataobj) > 0,
        tpl.affine,
        juxtacortical_mm=juxtacortical_mm,
    )
    img = nib.Nifti1Image(labels, tpl.affine)
    img.set_data_dtype(np.uint8)
    img.header.set_xyzt_units("mm")
    atlas_path = out_dir / ATLAS_FILE
    nib.save(img, atlas_path)
    lookup_table().to_csv(out_dir / LUT_FILE, sep="\t", index=False)
    (out_dir / META_FILE).write_text(json.dumps(atlas_provenance(juxtacortical_mm), indent=2))
    say(4, f"regions composed, written to {atlas_path}")
    return atlas_path


def main(argv=None) -> int:
    """Command-line entry point (``python -m cmbprep.algorithms.lobes``)."""
    parser = argparse.ArgumentParser(
        prog="python -m cmbprep.algorithms.lobes",
        description="Build the cmbprep MARS atlas (offline).",
    )
    parser.add_argument("--out-dir", default=str(ATLAS_DIR))
    parser.add_argument("--juxtacortical-mm", type=float, default=DEFAULT_JUXTACORTICAL_MM)
    parser.add_argument("--nthreads", type=int, default=0,
                        help="ITK threads (0: the CPUs this process may use)")
    parser.add_argument("--register", metavar="FILE", default=None,
                        help="maintainers: register the two templates again (several "
                        "CPU-minutes) and write the displacement field to FILE instead "
                        "of building the atlas")
    ns = parser.parse_args(argv)
    if ns.nthreads <= 0:
        from ...config import available_cpus

        ns.nthreads = available_cpus()

    def progress(line):
        print(f"cmbprep atlas: {line}", file=sys.stderr, flush=True)

    if ns.register:
        progress("registering CAT12 2009cAsym to nilearn 2009aSym (several CPU-minutes)")
        print(register_templates(ns.register, n_threads=ns.nthreads))
        return 0
    progress("building the region atlas from the CAT12 Hammers and Mori atlases")
    print(build_atlas(ns.out_dir, juxtacortical_mm=ns.juxtacortical_mm,
                      n_threads=ns.nthreads, progress=progress))
    return 0
