"""Definition of the region atlas: names, label indices, lookup table and provenance.

The atlas (``atlas-cmbprepMARS``) labels every voxel of the ICBM152 2009a symmetric
template brain (nilearn's brain mask) with one of 14 regions x 2 hemispheres
(:data:`REGIONS`; left hemisphere ``k`` = 1-14, right hemisphere ``k + 20``). How the
regions are made from the Hammers and Mori atlases is in :mod:`.build`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..registration.template import TEMPLATE_DESCRIPTION, TEMPLATE_NAME

#: Atlas name (the ``atlas-`` entity of the outputs).
ATLAS_NAME = "cmbprepMARS"
#: Where the atlas files live (the ``tpl-*`` files are git-ignored and built at install
#: time; the template-to-template field they are built with is committed).
ATLAS_DIR = Path(__file__).resolve().parents[2] / "data" / "atlas"
ATLAS_FILE = "tpl-MNI152NLin2009aSym_res-01_atlas-cmbprepMARS_dseg.nii.gz"
LUT_FILE = "tpl-MNI152NLin2009aSym_atlas-cmbprepMARS_dseg.tsv"
META_FILE = "tpl-MNI152NLin2009aSym_atlas-cmbprepMARS_dseg.json"
#: Right-hemisphere label = left label + RIGHT_OFFSET.
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


def atlas_provenance(juxtacortical_mm: float = DEFAULT_JUXTACORTICAL_MM) -> dict:
    """Provenance and licence record of the atlas (for sidecars and ``anat_meta``)."""
    return {
        "Name": ATLAS_NAME,
        "Template": TEMPLATE_NAME,
        "TemplateDescription": TEMPLATE_DESCRIPTION,
        "Sources": ATLAS_SOURCES,
        "Derivation": (
            "CAT12 T1 template (MNI152NLin2009cAsym, deepmriprep Template_05mm_bet) "
            "registered to the nilearn MNI152NLin2009aSym template with ANTs "
            "rigid+affine+SyN (MI, 1.5 mm, seed 0), shipped as one displacement field "
            "(from-MNI152NLin2009cAsym_to-MNI152NLin2009aSym_mode-image_xfm.nii.gz); "
            "Hammers and Mori labels carried across with it (genericLabel "
            "interpolation); regions composed by "
            "cmbprep.algorithms.lobes.compose_regions; hemisphere = sign of template x."
        ),
        "JuxtacorticalDistance": juxtacortical_mm,
        "JuxtacorticalDistanceUnits": "mm",
        "Licence": (
            "Derived from atlases with academic non-commercial terms (see Sources); the "
            "cmbprep code is Apache-2.0. Check the source licences before commercial use."
        ),
    }
