"""The detection tables: accepted microbleeds (:func:`cmb_table`) and their label image,
and the column descriptions of their JSON sidecars.

The tables are written by :func:`cmbprep.utils.tables.write_tsv` with ``%.6g`` floats,
``n/a`` for missing values and booleans as ``true``/``false``.
"""

from __future__ import annotations

import numpy as np

from .parameters import CMBPREP_PARAMETERS

__all__ = ["CMB_COLUMNS", "cmb_label_image", "cmb_table", "column_descriptions"]

CMB_COLUMNS = ["cmb_id", "x", "y", "z", "i", "j", "k", "mni_x", "mni_y", "mni_z",
               "volume_mm3", "diameter_mm", "score", "region", "lobe", "hemisphere",
               "mars_category"]


def cmb_table(candidates, template_points=None):
    """Accepted microbleeds (``status == "cmb"``) with the :data:`CMB_COLUMNS` columns.

    Parameters
    ----------
    candidates : pandas.DataFrame
        Candidate table (after :func:`.regions.assign_regions`).
    template_points : (N, 3) ndarray or None
        Template (MNI) mm coordinates of *all* candidates, row-aligned with
        ``candidates``; ``None`` gives ``n/a``.
    """
    cand = candidates.copy()
    if template_points is not None:
        pts = np.asarray(template_points, dtype=float).reshape(-1, 3)
        cand["mni_x"], cand["mni_y"], cand["mni_z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    for col in ("mni_x", "mni_y", "mni_z", "region", "lobe", "hemisphere", "mars_category"):
        if col not in cand.columns:
            cand[col] = "n/a"
    accepted = cand[cand["status"] == "cmb"].copy() if len(cand) else cand.iloc[0:0].copy()
    accepted["cmb_id"] = np.arange(1, len(accepted) + 1)
    accepted["candidate_id"] = accepted.get("candidate_id")
    return accepted.reindex(columns=CMB_COLUMNS + ["candidate_id"]).reset_index(drop=True)


def cmb_label_image(labels, cmb):
    """Relabel a candidate label image so each accepted CMB carries its ``cmb_id``.

    Parameters
    ----------
    labels : ndarray of int
        Candidate labels (``candidate_id``).
    cmb : pandas.DataFrame
        Output of :func:`cmb_table` (``cmb_id`` and ``candidate_id`` columns).

    Returns
    -------
    ndarray of int16 (int32 when more than 32767 CMBs)
    """
    lut = np.zeros(int(labels.max()) + 1, dtype=np.int32)
    for cmb_id, cand_id in zip(cmb["cmb_id"], cmb["candidate_id"]):
        lut[int(cand_id)] = int(cmb_id)
    out = lut[labels]
    return out.astype(np.int16) if out.max() < 32767 else out


_DESCRIPTIONS = {
    "candidate_id": ("Candidate index (matches the candidate label image)", None),
    "cmb_id": ("Microbleed index (matches the label in the CMB dseg image)", None),
    "x": ("Scanner RAS+ x of the lesion centroid", "mm"),
    "y": ("Scanner RAS+ y of the lesion centroid", "mm"),
    "z": ("Scanner RAS+ z of the lesion centroid", "mm"),
    "i": ("Voxel index along the first array axis (rounded centroid)", None),
    "j": ("Voxel index along the second array axis (rounded centroid)", None),
    "k": ("Voxel index along the third array axis (rounded centroid)", None),
    "mni_x": ("Template x of the centroid (n/a without a transform)", "mm"),
    "mni_y": ("Template y of the centroid (n/a without a transform)", "mm"),
    "mni_z": ("Template z of the centroid (n/a without a transform)", "mm"),
    "volume_mm3": ("Volume of the segmented hypointensity (blooming included)", "mm^3"),
    "diameter_mm": ("Diameter of the sphere with the segmented volume", "mm"),
    "score": ("Detector score in [0, 1]; higher is more microbleed-like", None),
    "status": ("Decision", None),
    "reason": ("Criteria that failed ('+'-separated; too_large_to_accept: over "
               f"{CMBPREP_PARAMETERS['max_accept_diameter_mm']:g} mm, so left for review; "
               "duplicate: inside a better-scored candidate), n/a if none", None),
    "region": ("Atlas region at the centroid", None),
    "lobe": ("Lobe of the atlas region (n/a for non-lobar regions)", None),
    "hemisphere": ("Hemisphere of the atlas region", None),
    "mars_category": ("Microbleed Anatomical Rating Scale category", None),
    "frst": ("Fast radial symmetry response at the seed (0-255 image units)", None),
    "seed_intensity": ("SWI intensity at the seed after rescaling to 0-255", None),
    "max_slice_area_mm2": ("Largest in-plane area of the lesion over slices", "mm^2"),
    "circularity": ("4 pi area / perimeter^2 on the slice of largest area", None),
    "centroid_shift_mm": ("Largest in-plane centroid displacement between consecutive slices",
                          "mm"),
    "n_slices": ("Number of slices the lesion appears on", None),
    "blobness": ("Scale-normalised Laplacian-of-Gaussian response (relative intensity)", None),
    "scale_mm": ("Gaussian scale of the strongest blob response", "mm"),
    "contrast": ("1 - darkest relative intensity / local background", None),
    "elongation": ("Square root of largest/smallest second-moment eigenvalue (1 = sphere)",
                   None),
    "elongation_perp_b0": ("Elongation in the plane perpendicular to B0 (1 = round)", None),
    "b0_aspect": ("Standard deviation along B0 / mean standard deviation across B0", None),
    "magnitude_contrast": ("1 - the darkest relative intensity of the bias-corrected "
                           "magnitude (0.5 mm smoothing) inside the region: about 1 a "
                           "signal void on the magnitude, about 0 dark only through the "
                           "SWI phase mask (n/a without magnitude; scanner SWI: the SWI)",
                           None),
    "sphericity": ("pi^(1/3) (6V)^(2/3) / surface area (1 = sphere)", None),
    "hessian_ratio": ("Smallest/largest Hessian eigenvalue at the centre (1 blob, 0 tube)",
                      None),
    "surrounding_dark_fraction": ("Fraction of a 2 mm shell around the lesion that is as "
                                  "dark as the lesion (vessels continue through it)", None),
    "touches_patch_border": ("Whether the segmentation reaches the border of its analysis "
                             "patch (typical of vessels)", None),
    "attached_depth_ratio": ("Depth of the darkest voxel of a structure attached to the "
                             "lesion at a quarter of its depth and leaving the patch, "
                             "relative to the lesion depth (0: none attached; about 1: a "
                             "bead on a vessel)", None),
    "distance_to_edge_mm": ("Distance from the centroid to the brain-mask edge", "mm"),
    "n_voxels": ("Number of voxels of the segmented region", None),
    "screened_out": ("Whether cheap criteria (region leaves its patch, faint, huge, clearly "
                     "elongated) rejected the candidate before the costly features", None),
    "network_probability": ("Output of the classifier's patch network (probability, "
                            "before it is combined with the trees into score; n/a for "
                            "screened-out candidates or a classifier without network)",
                            None),
    "phase_artefact_zone": ("Whether the centroid lies in a phase-mask artefact zone (a "
                            "region of at least 1 cm^3 that the SWI's phase mask darkens, "
                            "typically at the skull base): the candidate was found on the "
                            "bias-corrected magnitude there and scored without its phase "
                            "(the classifier's no_phase part and thresholds)", None),
    "dipole_correlation": ("Correlation of the filtered phase with a z-oriented point-dipole "
                           "pattern around the lesion (n/a without phase)", None),
    "paramagnetic_evidence": ("dipole_correlation times the phase handedness: > 0 "
                              "paramagnetic (microbleed), < 0 diamagnetic (calcification)",
                              None),
    "continuation_fraction": ("Fraction of 256 ray directions from the centre that stay "
                              "dark (quarter of the lesion depth, 0.5 mm smoothing) to 3 mm "
                              "beyond the lesion radius (a vessel continues)", None),
    "continuation_axiality": ("(3 lambda_max - 1) / 2 of the orientation tensor of the "
                              "rays weighted by their dark length beyond the lesion: 1 "
                              "along one axis (vessel), about 0 isotropic or none", None),
    "tube_length_mm": ("Longest dark run through the centre along an antipodal ray pair, "
                       "both sides, at most 5 mm each (10 mm: vessel)", "mm"),
    "vesselness_max_shell": ("Maximum Frangi vesselness (dark tubes, sigma 0.5-1.2 mm) in "
                             "the shell 1-4 mm outside the lesion radius, in [0, 1]", None),
    "blob_vs_vessel": ("Log ratio of the blob to the tube measure of the centre's Hessian "
                       "eigenvalues at the best scale (about +3 blob, -3 tube)", None),
    "dipole_fit_r2": ("r^2 of the fit of the local phase (outside the lesion) by a "
                      "sphere's (3 cos^2 theta - 1) / r^3 field (n/a without phase)", None),
    "cylinder_fit_r2": ("r^2 of the fit of the local phase by an infinite cylinder's field "
                        "along the candidate's axis (n/a without phase)", None),
    "dipole_vs_cylinder": ("dipole_fit_r2 - cylinder_fit_r2 (> 0: sphere-like phase; n/a "
                           "without phase)", None),
    "dipole_amplitude_snr": ("Sphere-fit signal over residual, > 0 paramagnetic "
                             "(microbleed), < 0 diamagnetic (calcification); n/a without "
                             "phase", None),
    "dipole_phase_at_radius": ("Phase of the sphere fit at the lesion radius, |A| / R^3, "
                               "signed as dipole_amplitude_snr (about a radian or more: "
                               "the lesion's own field makes it dark); n/a without phase",
                               "rad"),
}

_LEVELS = {
    "status": {"cmb": "accepted as a cerebral microbleed",
               "review": "borderline: a rater should check it",
               "rejected": "rejected (see reason)"},
    "mars_category": {"lobar": "lobar (cortex and juxtacortical white matter)",
                      "deep": "deep (basal ganglia, thalamus, capsules, corpus callosum, "
                              "deep and periventricular white matter)",
                      "infratentorial": "infratentorial (brainstem, cerebellum)"},
    "hemisphere": {"left": "left", "right": "right", "midline": "midline or bilateral"},
    "touches_patch_border": {"true": "reaches the patch border", "false": "does not"},
    "phase_artefact_zone": {"true": "in a phase-mask artefact zone (scored without phase)",
                            "false": "not in one"},
}


def column_descriptions(columns):
    """BIDS sidecar content (Description, Units, Levels) for the given table columns.

    Parameters
    ----------
    columns : iterable of str

    Returns
    -------
    dict
        One entry per column.
    """
    out = {}
    for col in columns:
        desc, units = _DESCRIPTIONS.get(col, (col.replace("_", " "), None))
        entry = {"Description": desc}
        if units:
            entry["Units"] = units
        if col in _LEVELS:
            entry["Levels"] = _LEVELS[col]
        out[col] = entry
    return out
