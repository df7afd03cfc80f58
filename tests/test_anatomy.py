"""Fast unit tests of the anatomy algorithms (no full registration)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmbprep.algorithms import lobes
from cmbprep.algorithms import registration as reg
from cmbprep.algorithms.brain import dice, refine_brain_mask


def _sphere(shape, centre, radius_vox):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius_vox**2


def test_lookup_table_columns_and_categories():
    lut = lobes.lookup_table()
    assert list(lut.columns[:7]) == [
        "index", "name", "abbreviation", "color", "mapping", "mars_category", "hemisphere"
    ]  # fmt: skip
    assert len(lut) == 28 and lut["index"].is_unique and lut["abbreviation"].is_unique
    cat = dict(zip(lut["name"], lut["mars_category"]))
    assert {cat[n] for n in ("frontal", "parietal", "temporal", "occipital", "insula",
                             "cingulate")} == {"lobar"}  # fmt: skip
    assert {cat[n] for n in ("basal_ganglia", "thalamus", "internal_capsule", "external_capsule",
                             "corpus_callosum", "deep_white_matter")} == {"deep"}  # fmt: skip
    assert cat["brainstem"] == cat["cerebellum"] == "infratentorial"
    right = lut[lut["hemisphere"] == "right"]
    assert (right["index"] > lobes.RIGHT_OFFSET).all()
    assert (lut.loc[lut["mars_category"] != "lobar", "lobe"] == "n/a").all()


def test_compose_regions_juxtacortical_rule():
    """WM within juxtacortical_mm of a lobe's cortex keeps that lobe; deeper WM is deep."""
    shape = (40, 20, 20)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[0, 3] = 5.0  # all x > 0: right hemisphere
    hammers = np.zeros(shape, int)
    hammers[:, :, :] = 58  # superior frontal gyrus R (frontal)
    hammers[20:, :, :] = 62  # superior parietal (parietal)
    gm = np.zeros(shape)
    wm = np.ones(shape)
    gm[:2] = 1.0  # frontal cortex at x index 0-1
    wm[:2] = 0.0
    gm[-2:] = 1.0  # parietal cortex at the other end
    wm[-2:] = 0.0
    brain = np.ones(shape, bool)
    labels = lobes.compose_regions(
        hammers, np.zeros(shape, int), gm, wm, brain, affine, juxtacortical_mm=5.0
    )
    r = lobes.RIGHT_OFFSET
    assert labels[0, 10, 10] == lobes.REGION_INDEX["frontal"] + r
    assert labels[5, 10, 10] == lobes.REGION_INDEX["frontal"] + r  # 4 mm from cortex
    assert labels[12, 10, 10] == lobes.REGION_INDEX["deep_white_matter"] + r
    assert labels[35, 10, 10] == lobes.REGION_INDEX["parietal"] + r
    # a smaller juxtacortical distance turns the 4 mm voxel into deep white matter
    labels3 = lobes.compose_regions(
        hammers, np.zeros(shape, int), gm, wm, brain, affine, juxtacortical_mm=3.0
    )
    assert labels3[5, 10, 10] == lobes.REGION_INDEX["deep_white_matter"] + r


def test_compose_regions_hemisphere_and_deep_priority():
    shape = (20, 10, 10)
    affine = np.eye(4)
    affine[0, 3] = -10.0  # x from -10 to +9 mm
    hammers = np.full(shape, 40)  # thalamus L in Hammers, but hemisphere comes from x
    mori = np.full(shape, 67)  # posterior limb of internal capsule
    gm = np.full(shape, 0.8)
    wm = np.full(shape, 0.2)
    labels = lobes.compose_regions(hammers, mori, gm, wm, np.ones(shape, bool), affine)
    tha = lobes.REGION_INDEX["thalamus"]
    assert labels[0, 5, 5] == tha  # left
    assert labels[19, 5, 5] == tha + lobes.RIGHT_OFFSET


def test_region_coverage_and_lookup():
    lut = lobes.lookup_table()
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[:5] = 1  # frontal left
    labels[5:] = 14  # cerebellum left
    fov = np.zeros_like(labels, bool)
    fov[:5] = True
    fov[5:7] = True  # 40% of the cerebellum
    coverage, not_covered = lobes.region_coverage(labels, fov, lut, min_fraction=0.5)
    assert coverage["frontal_left"] == 1.0
    assert coverage["cerebellum_left"] == pytest.approx(0.4)
    assert "cerebellum_left" in not_covered and "frontal_left" not in not_covered
    table = lobes.regions_at_voxels(labels, np.array([[1, 1, 1], [8, 1, 1], [50, 0, 0]]), lut)
    assert table["region"].tolist() == ["frontal", "cerebellum", "n/a"]
    assert table["mars_category"].tolist() == ["lobar", "infratentorial", "n/a"]
    assert table["lobe"].tolist() == ["frontal", "n/a", "n/a"]


def test_points_ras_lps_convention(tmp_path):
    """points_to_template applies an ANTs transform to RAS points (LPS inside)."""
    import ants

    # ANTs transform (LPS): p_moving = p_fixed + t
    t_lps = np.array([3.0, -5.0, 7.0])
    tx = ants.create_ants_transform(
        transform_type="AffineTransform", dimension=3, translation=list(t_lps)
    )
    path = tmp_path / "tx.mat"
    ants.write_transform(tx, str(path))
    pts = np.array([[10.0, 20.0, 30.0], [-40.0, 0.0, 5.0]])
    out = reg.points_to_template(pts, path)
    expected = pts + np.array([-3.0, 5.0, 7.0])  # LPS -> RAS flips x and y
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert reg.points_to_template(np.zeros((0, 3)), path).shape == (0, 3)


def test_nmi_separates_related_from_scrambled():
    rng = np.random.default_rng(0)
    a = rng.random(20000)
    b = np.sin(3 * a) + 0.05 * rng.standard_normal(a.size)
    assert reg.normalized_mutual_information(a, b) > 1.2
    assert reg.normalized_mutual_information(a, rng.permutation(b)) < 1.02


def test_refine_brain_mask_removes_dark_rim():
    shape = (60, 60, 40)
    vs = (1.0, 1.0, 1.5)
    brain = _sphere(shape, (30, 30, 20), 15)
    grid = np.indices(shape).astype(float)
    image = 0.2 + 1.0 * brain * (1 + 0.3 * grid[0] / 60)  # bias across x
    too_big = _sphere(shape, (30, 30, 20), 18)  # includes a 3-voxel dark rim
    refined = refine_brain_mask(image, too_big, vs, band_mm=5.0)
    assert dice(refined, brain) > 0.97
    assert dice(too_big, brain) < 0.9


def test_estimate_head_mask_fills_dark_interior():
    shape = (50, 50, 50)
    outer = _sphere(shape, (25, 25, 25), 20)
    inner = _sphere(shape, (25, 25, 25), 15)
    skull = outer & ~_sphere(shape, (25, 25, 25), 17)
    image = np.where(outer, 1.0, 0.0)
    image[skull] = 0.02  # dark skull ring between scalp and brain
    image[inner] = 0.8
    head = reg.estimate_head_mask(image, (1.0, 1.0, 1.0))
    assert dice(head, outer) > 0.97


def test_built_atlas_properties():
    atlas, lut = lobes.load_atlas()
    data = np.asarray(atlas.dataobj)
    _, tpl_mask = reg.load_template(1.0)
    brain = np.asarray(tpl_mask.dataobj) > 0
    assert (data[brain] > 0).all(), "every template brain voxel has a region"
    assert (data[~brain] == 0).all()
    assert set(np.unique(data[brain])) == set(lut["index"])
    # hemisphere agrees with the sign of template x
    ijk = np.argwhere(data > 0)[::997]
    xyz = ijk @ atlas.affine[:3, :3].T + atlas.affine[:3, 3]
    hemi = np.where(data[tuple(ijk.T)] > lobes.RIGHT_OFFSET, 1, -1)
    assert np.all(np.sign(xyz[:, 0] + 1e-6) == hemi)
    # anatomical sanity at well-known MNI coordinates
    probe = pd.DataFrame(
        [
            ((-40, 30, 30), "frontal"),
            ((40, -70, 40), "parietal"),
            ((-55, -20, -15), "temporal"),
            ((15, -95, 5), "occipital"),
            ((-22, 5, 2), "basal_ganglia"),
            ((10, -18, 8), "thalamus"),
            ((0, -30, -35), "brainstem"),
            ((25, -70, -40), "cerebellum"),
            ((0, 10, 20), "corpus_callosum"),
        ],
        columns=["xyz", "region"],
    )
    found = lobes.regions_at_points(np.array(probe["xyz"].tolist()), atlas, lut)
    agree = (found["region"].to_numpy() == probe["region"].to_numpy()).mean()
    assert agree >= 8 / 9, found.assign(expected=probe["region"])


def test_interface_rejects_empty_image(tmp_path):
    import nibabel as nib

    from cmbprep.errors import DataError
    from cmbprep.interfaces.anatomical import RegisterTemplate

    path = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), path)
    with pytest.raises(DataError, match="empty.nii.gz"):
        RegisterTemplate(magnitude=str(path)).run(cwd=str(tmp_path))


def test_block_grid_helpers_round_trip():
    import nibabel as nib

    from cmbprep.algorithms.arrays import (
        block_factors,
        block_reduce,
        upsample_linear,
        upsample_nearest,
        voxel_sizes,
    )

    affine = np.diag([1.0, 0.5, 0.5, 1.0])
    affine[:3, 3] = [-10.0, 4.0, 7.0]
    step = block_factors(voxel_sizes(affine), 1.0, rounding="round")
    assert list(step) == [1, 2, 2]
    shape = (6, 9, 8)  # 9 is not a multiple of 2: the last block is padded
    # coarse voxel k is centred on the fine block [k*s, (k+1)*s)
    caff = reg.coarse_affine(affine, step)
    fine_centre = nib.affines.apply_affine(affine, [2.0, 2.5, 4.5])
    assert np.allclose(nib.affines.apply_affine(caff, [2, 1, 2]), fine_centre)
    # a linear ramp survives block mean + linear upsampling away from the edges
    ramp = np.broadcast_to(np.arange(shape[1], dtype=np.float32)[None, :, None], shape)
    coarse = block_reduce(ramp, step, dtype=np.float32)
    assert coarse.shape == (6, 5, 4)
    back = upsample_linear(coarse, step, shape)
    assert back.shape == shape
    assert np.allclose(back[:, 1:-2, :], ramp[:, 1:-2, :], atol=1e-5)
    # max-reduction then nearest upsampling covers the original mask
    rng = np.random.default_rng(0)
    mask = rng.random(shape) > 0.8
    up = upsample_nearest(block_reduce(mask, step, func="max"), step, shape)
    assert up.shape == shape and np.all(up[mask])


def test_brain_coverage_fraction_weights_regions_by_template_volume():
    """The whole-brain fraction covered weights each region's fraction by its volume;
    anatomy_metadata writes it beside the per-region fractions."""
    volumes = {"frontal_left": 300.0, "cerebellum_left": 100.0, "empty_left": 0.0}
    coverage = {"frontal_left": 1.0, "cerebellum_left": 0.4, "empty_left": 0.0}
    assert lobes.brain_coverage_fraction(coverage, volumes) == pytest.approx(0.85)
    assert lobes.brain_coverage_fraction({}, volumes) is None
    meta = lobes.anatomy_metadata({"registration_ok": True}, {}, coverage,
                                  ["cerebellum_left"], 0.5, region_volumes=volumes)
    assert meta["brain_coverage_fraction"] == pytest.approx(0.85)
    installed = lobes.template_region_volumes()
    full = lobes.anatomy_metadata({}, {}, {k: 1.0 for k in installed}, [], 0.5)
    assert full["brain_coverage_fraction"] == 1.0
    assert 1.2e6 < sum(installed.values()) < 2.5e6  # an adult brain, mm^3
