"""Lobar / MARS region atlas in template space, built offline.

The atlas (``atlas-cmbprepMARS``) labels every voxel of the ICBM152 2009a symmetric
template brain (nilearn's brain mask) with one of 14 regions x 2 hemispheres:

======================= ================ ==========================================
region                  MARS category    source
======================= ================ ==========================================
frontal, parietal,      lobar            Hammers lobar labels (cortex + white
temporal, occipital,                     matter within ``juxtacortical_mm`` of
insula, cingulate                        cortex); hippocampus/amygdala -> temporal
basal_ganglia           deep             Hammers caudate, putamen, pallidum,
                                         accumbens
thalamus                deep             Hammers thalamus
internal_capsule        deep             Mori (JHU) anterior/posterior limb and
                                         retrolenticular part
external_capsule        deep             Mori external capsule
corpus_callosum         deep             Hammers corpus callosum + Mori genu/body/
                                         splenium/tapetum
deep_white_matter       deep             lobar white matter farther than
                                         ``juxtacortical_mm`` from cortex, and
                                         periventricular tissue (ventricles filled
                                         with the nearest label)
brainstem               infratentorial   Hammers brainstem + substantia nigra
cerebellum              infratentorial   Hammers cerebellum
======================= ================ ==========================================

Label index: left hemisphere ``k`` (1-14, order above), right hemisphere ``k + 20``.
Hemisphere is the sign of the template x coordinate (the template is symmetric).

Sources are the CAT12 versions of the Hammers (Hammers et al. 2003; Gousias et al.
2008) and Mori/JHU (Oishi et al. 2009) atlases shipped by the ``deepmriprep`` Python
package (MIT code; the atlases keep their own non-commercial academic terms). They are
in MNI152NLin2009cAsym; :func:`build_atlas` registers the CAT12 T1 template shipped
with them to nilearn's MNI152NLin2009aSym template (ANTs SyN, 1.5 mm, fixed seed) and
carries the labels across with ``genericLabel`` interpolation.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

ATLAS_NAME = "cmbprepMARS"
ATLAS_DIR = Path(__file__).resolve().parents[1] / "data" / "atlas"
ATLAS_FILE = "tpl-MNI152NLin2009aSym_res-01_atlas-cmbprepMARS_dseg.nii.gz"
LUT_FILE = "tpl-MNI152NLin2009aSym_atlas-cmbprepMARS_dseg.tsv"
META_FILE = "tpl-MNI152NLin2009aSym_atlas-cmbprepMARS_dseg.json"
RIGHT_OFFSET = 20
DEFAULT_JUXTACORTICAL_MM = 5.0

# name, abbreviation, MARS category, BIDS standard mapping, colour
REGIONS = [
    ("frontal", "Fro", "lobar", 4, "#1f77b4"),
    ("parietal", "Par", "lobar", 4, "#ff7f0e"),
    ("temporal", "Tem", "lobar", 4, "#2ca02c"),
    ("occipital", "Occ", "lobar", 4, "#d62728"),
    ("insula", "Ins", "lobar", 4, "#9467bd"),
    ("cingulate", "Cin", "lobar", 4, "#8c564b"),
    ("basal_ganglia", "BG", "deep", 10, "#e377c2"),
    ("thalamus", "Tha", "deep", 10, "#7f7f7f"),
    ("internal_capsule", "IC", "deep", 2, "#bcbd22"),
    ("external_capsule", "EC", "deep", 2, "#17becf"),
    ("corpus_callosum", "CC", "deep", 2, "#aec7e8"),
    ("deep_white_matter", "DWM", "deep", 2, "#ffbb78"),
    ("brainstem", "BS", "infratentorial", 11, "#98df8a"),
    ("cerebellum", "Cbm", "infratentorial", 12, "#ff9896"),
]
REGION_INDEX = {name: i + 1 for i, (name, *_rest) in enumerate(REGIONS)}
LOBAR = [r[0] for r in REGIONS if r[2] == "lobar"]

ATLAS_SOURCES = {
    "hammers": {
        "description": "Hammers adult brain atlas (n30r83), CAT12 version",
        "citation": "Hammers A, et al. Hum Brain Mapp 19:224-247, 2003; Gousias IS, "
        "et al. NeuroImage 40:672-684, 2008.",
        "licence": "Academic, non-commercial use (brain-development.org / CAT12 terms)",
    },
    "mori": {
        "description": "Mori/JHU white-matter atlas (CAT12 version)",
        "citation": "Oishi K, et al. NeuroImage 46:486-499, 2009; Mori S, et al. "
        "NeuroImage 40:570-582, 2008.",
        "licence": "Academic, non-commercial use (JHU / CAT12 terms)",
    },
    "distributed_by": "deepmriprep 0.3.0 (PyPI, MIT code), deepmriprep/data/templates",
}

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
_MORI_IC = [65, 66, 67, 68, 107, 108]
_MORI_EC = [91, 92]
_MORI_CC = [101, 102, 103, 104, 105, 106, 113, 114]


def lookup_table() -> pd.DataFrame:
    """The BIDS ``dseg.tsv`` lookup table of the atlas.

    Columns: ``index name abbreviation color mapping mars_category hemisphere lobe``.
    ``name`` is the region (same for both hemispheres); ``lobe`` is the region for
    lobar regions and ``n/a`` otherwise; ``mapping`` is the BIDS common label
    (2 WM, 4 GM+WM, 10 subcortical GM, 11 brainstem, 12 cerebellum).
    """
    rows = []
    for hemi, offset, suffix in (("left", 0, "L"), ("right", RIGHT_OFFSET, "R")):
        for k, (name, abbr, mars, mapping, color) in enumerate(REGIONS, start=1):
            rows.append(
                {
                    "index": k + offset,
                    "name": name,
                    "abbreviation": f"{abbr}{suffix}",
                    "color": color,
                    "mapping": mapping,
                    "mars_category": mars,
                    "hemisphere": hemi,
                    "lobe": name if mars == "lobar" else "n/a",
                }
            )
    return pd.DataFrame(rows).sort_values("index").reset_index(drop=True)


def _map_labels(data: np.ndarray, groups: dict[str, list[int]]) -> np.ndarray:
    out = np.zeros(data.shape, np.uint8)
    lut = np.zeros(int(data.max()) + 1 if data.size else 1, np.uint8)
    for name, ids in groups.items():
        for i in ids:
            if i < lut.size:
                lut[i] = REGION_INDEX[name]
    out[...] = lut[data]
    return out


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
    # Lobar cortex: lobar label where grey matter dominates.
    cortex = (lobar > 0) & (gm_prob >= wm_prob) & (gm_prob > 0.2)
    dist_mm, nearest = ndimage.distance_transform_edt(
        ~cortex, sampling=vs, return_indices=True
    )
    nearest_lobe = lobar[tuple(nearest)]
    labels = np.zeros(hammers.shape, np.uint8)
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
    # 5. fill unlabelled brain voxels (ventricles, gaps) with the nearest label;
    #    lateral-ventricle voxels adjacent to lobes would become lobar: prefer deep WM.
    unlabeled = brain_mask & (labels == 0)
    if unlabeled.any():
        ventricles = np.isin(hammers, [45, 46, 47, 48, 49])
        _, idx = ndimage.distance_transform_edt(labels == 0, sampling=vs, return_indices=True)
        fill = labels[tuple(idx)]
        fill[ventricles & np.isin(fill, [REGION_INDEX[n] for n in LOBAR])] = REGION_INDEX[
            "deep_white_matter"
        ]
        labels[unlabeled] = fill[unlabeled]
    # 6. hemisphere from template x
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


def build_atlas(
    out_dir: str | Path = ATLAS_DIR,
    *,
    juxtacortical_mm: float = DEFAULT_JUXTACORTICAL_MM,
    resolution_mm: float = 1.5,
    seed: int = 0,
    n_threads: int = 1,
) -> Path:
    """Build the atlas in the template grid and write image, TSV and JSON.

    Parameters
    ----------
    out_dir : path-like
        Output directory (default: the package's ``data/atlas``).
    juxtacortical_mm : float
        See :func:`compose_regions`.
    resolution_mm : float
        Working resolution of the 2009cAsym -> 2009aSym template registration.
    seed, n_threads : int
        ANTs random seed and thread count.

    Returns
    -------
    Path
        The atlas NIfTI file.
    """
    import tempfile

    from . import registration as reg

    reg.set_ants_threads(n_threads)
    src = _deepmriprep_templates()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tpl, tpl_mask = reg.load_template(1.0)
    from nilearn.datasets import load_mni152_gm_template, load_mni152_wm_template

    gm = np.asarray(load_mni152_gm_template(resolution=1).dataobj, np.float32)
    wm = np.asarray(load_mni152_wm_template(resolution=1).dataobj, np.float32)
    cat_t1 = nib.load(src / "Template_05mm_bet.nii.gz")
    cat_t1 = nib.Nifti1Image(np.asarray(cat_t1.dataobj, np.float32), cat_t1.affine)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        fixed = reg.resample_to_resolution(tpl, resolution_mm)
        moving = reg.resample_to_resolution(cat_t1, resolution_mm)
        fwd, _ = reg.register_images(
            fixed,
            moving,
            Path(tmp) / "cat_to_nilearn_",
            stages=("Rigid", "Affine", "SyN"),
            seed=seed,
            syn_iterations=(100, 70, 30),
            mask_linear_stages=False,
        )
        moved = {}
        for name in ("hammers", "mori"):
            img = nib.load(src / f"{name}.nii.gz")
            img = nib.Nifti1Image(np.asarray(img.dataobj, np.float32), img.affine)
            out = reg.apply_transform(img, tpl, fwd, interpolation="genericLabel")
            moved[name] = np.rint(np.asarray(out.dataobj)).astype(np.int64)
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
    return atlas_path


def atlas_provenance(juxtacortical_mm: float = DEFAULT_JUXTACORTICAL_MM) -> dict:
    """Provenance and licence record of the atlas (for sidecars and ``anat_meta``)."""
    from . import registration as reg

    return {
        "Name": ATLAS_NAME,
        "Template": reg.TEMPLATE_NAME,
        "TemplateDescription": reg.TEMPLATE_DESCRIPTION,
        "Sources": ATLAS_SOURCES,
        "Derivation": (
            "CAT12 T1 template (MNI152NLin2009cAsym, deepmriprep Template_05mm_bet) "
            "registered to the nilearn MNI152NLin2009aSym template with ANTs "
            "rigid+affine+SyN (MI, 1.5 mm, seed 0); Hammers and Mori labels carried "
            "across with genericLabel interpolation; regions composed by "
            "cmbprep.algorithms.lobes.compose_regions; hemisphere = sign of template x."
        ),
        "JuxtacorticalDistance": juxtacortical_mm,
        "JuxtacorticalDistanceUnits": "mm",
        "Licence": (
            "Derived from atlases with academic non-commercial terms (see Sources); the "
            "cmbprep code is Apache-2.0. Check the source licences before commercial use."
        ),
    }


def atlas_available(atlas_dir: str | Path = ATLAS_DIR) -> bool:
    """True when the built atlas files exist."""
    atlas_dir = Path(atlas_dir)
    return (atlas_dir / ATLAS_FILE).exists() and (atlas_dir / LUT_FILE).exists()


def load_atlas(atlas_dir: str | Path = ATLAS_DIR, *, build_if_missing: bool = True):
    """Load the template-space atlas image and its lookup table.

    If the files are missing and ``build_if_missing``, they are built (offline, from
    the installed ``deepmriprep`` package; about a minute).

    Returns
    -------
    labels : nibabel.Nifti1Image
    lut : pandas.DataFrame
    """
    atlas_dir = Path(atlas_dir)
    if not atlas_available(atlas_dir):
        if not build_if_missing:
            raise FileNotFoundError(
                f"{atlas_dir / ATLAS_FILE} not found: run `python -m cmbprep.algorithms.lobes`"
            )
        build_atlas(atlas_dir)
    labels = nib.load(atlas_dir / ATLAS_FILE)
    lut = pd.read_csv(atlas_dir / LUT_FILE, sep="\t", keep_default_na=False)
    return labels, lut


def regions_at_voxels(labels: np.ndarray, ijk: np.ndarray, lut: pd.DataFrame) -> pd.DataFrame:
    """Region name, lobe, hemisphere and MARS category at voxel indices.

    Parameters
    ----------
    labels : ndarray (X, Y, Z) of int
    ijk : ndarray (N, 3) of int
        Voxel indices (rounded); out-of-grid indices give ``n/a``.
    lut : pandas.DataFrame
        The atlas lookup table (:func:`lookup_table`).

    Returns
    -------
    pandas.DataFrame
        Columns ``label region lobe hemisphere mars_category`` (``n/a`` for label 0).
    """
    ijk = np.atleast_2d(np.rint(np.asarray(ijk, float))).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.asarray(labels.shape)[:3]), axis=1)
    values = np.zeros(len(ijk), dtype=int)
    if inside.any():
        values[inside] = np.asarray(labels)[tuple(ijk[inside].T)]
    table = lut.set_index("index")
    rows = []
    for v in values:
        if v in table.index:
            r = table.loc[v]
            rows.append((v, r["name"], r["lobe"], r["hemisphere"], r["mars_category"]))
        else:
            rows.append((v, "n/a", "n/a", "n/a", "n/a"))
    return pd.DataFrame(rows, columns=["label", "region", "lobe", "hemisphere", "mars_category"])


def regions_at_points(points_mm, labels_img: nib.Nifti1Image, lut: pd.DataFrame) -> pd.DataFrame:
    """:func:`regions_at_voxels` for mm points (e.g. template ``mni_x..z``)."""
    pts = np.atleast_2d(np.asarray(points_mm, float))
    ijk = nib.affines.apply_affine(np.linalg.inv(labels_img.affine), pts)
    return regions_at_voxels(np.asarray(labels_img.dataobj), ijk, lut)


def region_coverage(
    labels: np.ndarray, inside_fov: np.ndarray, lut: pd.DataFrame, *, min_fraction: float = 0.5
) -> tuple[dict, list]:
    """Fraction of each region's template volume inside the subject field of view.

    Parameters
    ----------
    labels : ndarray of int
        Atlas labels in template space.
    inside_fov : ndarray of bool
        Template voxels that map inside the subject image grid.
    lut : pandas.DataFrame
    min_fraction : float
        Regions with a smaller covered fraction are reported as not covered.

    Returns
    -------
    coverage : dict
        ``abbreviation -> fraction`` (0-1, 3 decimals).
    not_covered : list of str
        ``"<name>_<hemisphere>"`` of regions below ``min_fraction``.
    """
    labels = np.asarray(labels)
    inside_fov = np.asarray(inside_fov, bool)
    total = np.bincount(labels.ravel(), minlength=256)
    covered = np.bincount(labels[inside_fov].ravel(), minlength=256)
    coverage, not_covered = {}, []
    for _, r in lut.iterrows():
        n = total[int(r["index"])]
        frac = float(covered[int(r["index"])] / n) if n else 0.0
        key = f"{r['name']}_{r['hemisphere']}"
        coverage[key] = round(frac, 3)
        if frac < min_fraction:
            not_covered.append(key)
    return coverage, not_covered


def label_subject(
    brain_mask: nib.Nifti1Image,
    atlas: nib.Nifti1Image,
    lut: pd.DataFrame,
    template_to_subject_xfm,
    subject_to_template_xfm,
    *,
    min_coverage: float = 0.5,
    work_mm: float = 1.0,
    coverage_mm: float = 2.0,
) -> tuple[nib.Nifti1Image, dict, list]:
    """Atlas labels in subject space, restricted to (and filling) the brain mask.

    Parameters
    ----------
    brain_mask : nibabel.Nifti1Image
        Subject brain mask; defines the output grid.
    atlas : nibabel.Nifti1Image
        Template-space labels (:func:`load_atlas`).
    lut : pandas.DataFrame
    template_to_subject_xfm, subject_to_template_xfm : path-like
        Composite transforms from the template registration.
    min_coverage : float
        See :func:`region_coverage`.
    work_mm : float
        Labels are warped (nearest neighbour) onto a grid of blocks of subject voxels
        of about this size and copied to every voxel of the block.
    coverage_mm : float
        The field-of-view coverage is computed on the atlas grid decimated to about
        this voxel size.

    Returns
    -------
    dseg : nibabel.Nifti1Image (uint8)
        Every brain-mask voxel carries a region label (voxels where the warped atlas
        has no label take the nearest label); 0 outside the brain mask.
    coverage : dict
        Fraction of each region's template volume inside the subject field of view.
    not_covered : list of str
    """
    from . import registration as reg

    mask = np.asarray(brain_mask.dataobj) > 0
    shape = mask.shape[:3]
    # Labels are warped once onto a ~1 mm grid (the atlas resolution) made of blocks of
    # subject voxels, gaps inside the (block-wise) mask are filled there with the
    # nearest label, and every subject voxel then takes its block's label.
    step = reg.coarse_step(reg.voxel_sizes(brain_mask.affine), work_mm)
    affine_c = reg.coarse_affine(brain_mask.affine, step)
    mask_c = reg.block_reduce(mask, step, func="max")
    ref_c = nib.Nifti1Image(np.zeros(mask_c.shape, np.float32), affine_c)
    warped = reg.resample_labels_to_subject(atlas, ref_c, template_to_subject_xfm)
    labels_c = np.asarray(warped.dataobj).astype(np.uint8)
    labels_c[~mask_c] = 0
    missing = mask_c & (labels_c == 0)
    if missing.any() and (labels_c > 0).any():
        # every label lies inside the mask: the bounding box of the mask is enough
        nz = np.argwhere(mask_c)
        box = tuple(slice(a, b + 1) for a, b in zip(nz.min(0), nz.max(0)))
        sub = labels_c[box]
        _, idx = ndimage.distance_transform_edt(
            sub == 0, sampling=reg.voxel_sizes(affine_c), return_indices=True
        )
        miss = missing[box]
        sub[miss] = sub[tuple(idx)][miss]
    labels = reg.upsample_nearest(labels_c, step, shape)
    labels[~mask] = 0
    dseg = nib.Nifti1Image(labels, brain_mask.affine)
    dseg.set_data_dtype(np.uint8)
    # Field of view in template space: a ones image on the (block) subject grid, warped
    # back onto the atlas grid decimated to ``coverage_mm``.
    atlas_data = np.asarray(atlas.dataobj)
    a_step = reg.coarse_step(reg.voxel_sizes(atlas.affine), coverage_mm)
    atlas_c = atlas_data[:: a_step[0], :: a_step[1], :: a_step[2]]
    a_affine = np.asarray(atlas.affine, float) @ np.diag(list(a_step) + [1]).astype(float)
    ones = nib.Nifti1Image(np.ones(mask_c.shape, np.float32), affine_c)
    fov = reg.apply_transform(
        ones,
        nib.Nifti1Image(np.zeros(atlas_c.shape, np.float32), a_affine),
        subject_to_template_xfm,
        interpolation="nearestNeighbor",
    )
    coverage, not_covered = region_coverage(
        atlas_c, np.asarray(fov.dataobj) > 0.5, lut, min_fraction=min_coverage
    )
    return dseg, coverage, not_covered


if __name__ == "__main__":  # pragma: no cover - build entry point
    import argparse

    parser = argparse.ArgumentParser(description="Build the cmbprep MARS atlas (offline).")
    parser.add_argument("--out-dir", default=str(ATLAS_DIR))
    parser.add_argument("--juxtacortical-mm", type=float, default=DEFAULT_JUXTACORTICAL_MM)
    parser.add_argument("--nthreads", type=int, default=1)
    ns = parser.parse_args()
    print(build_atlas(ns.out_dir, juxtacortical_mm=ns.juxtacortical_mm, n_threads=ns.nthreads))
