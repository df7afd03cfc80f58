"""Lobar / MARS region atlas in template space: definition, install-time build, run-time use.

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

Modules
-------
:mod:`.regions`
    Region names and indices, lookup table, file names, provenance record.
:mod:`.build`
    Install-time build from the Hammers and Mori atlases
    (``python -m cmbprep.algorithms.lobes``, see :mod:`.__main__`).
:mod:`.labels`
    Run-time: loading, look-ups at voxels/points, subject-space labels, coverage.
"""

from __future__ import annotations

from .build import build_atlas, compose_regions
from .labels import (
    anatomy_metadata,
    atlas_available,
    brain_coverage_fraction,
    label_subject,
    load_atlas,
    region_coverage,
    regions_at_points,
    regions_at_voxels,
    template_region_volumes,
)
from .regions import (
    ATLAS_DIR,
    ATLAS_FILE,
    ATLAS_NAME,
    ATLAS_SOURCES,
    DEFAULT_JUXTACORTICAL_MM,
    LOBAR,
    LUT_FILE,
    META_FILE,
    REGION_INDEX,
    REGIONS,
    RIGHT_OFFSET,
    atlas_provenance,
    lookup_table,
)

__all__ = [
    "ATLAS_DIR",
    "ATLAS_FILE",
    "ATLAS_NAME",
    "ATLAS_SOURCES",
    "DEFAULT_JUXTACORTICAL_MM",
    "LOBAR",
    "LUT_FILE",
    "META_FILE",
    "REGIONS",
    "REGION_INDEX",
    "RIGHT_OFFSET",
    "anatomy_metadata",
    "atlas_available",
    "brain_coverage_fraction",
    "atlas_provenance",
    "build_atlas",
    "compose_regions",
    "label_subject",
    "load_atlas",
    "lookup_table",
    "region_coverage",
    "template_region_volumes",
    "regions_at_points",
    "regions_at_voxels",
]
