"""Template registration with ANTs (ANTsPy), offline.

The template is the ICBM 2009a nonlinear *symmetric* T1 template that nilearn ships,
``MNI152NLin2009aSym`` (:mod:`.template` explains why not 2009c). Registration maps the
template (moving image) onto the subject (fixed image) in three stages -- rigid, affine,
SyN -- at a coarse isotropic resolution (2 mm by default); see :mod:`.template_to_subject`.

Modules
-------
:mod:`.template`
    Template name, provenance and images.
:mod:`.resampling`
    nibabel <-> ANTs images, whole-voxel block grids, isotropic resampling.
:mod:`.antsregistration`
    The ``antsRegistration`` command (stages, composite transforms), rigid alignment.
:mod:`.template_to_subject`
    The two-pass template-to-subject registration and its head-mask fallback.
:mod:`.quality`
    Registration QC metrics and verdict.
:mod:`.transforms`
    Applying transform files to images, labels and points.
:mod:`.sessions`
    A participant's later session onto the first (rigid), its residual and coverage.

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

from .antsregistration import register_images, rigid_align_to_reference, set_ants_threads
from .quality import QC_THRESHOLDS, normalized_mutual_information, registration_quality
from .resampling import coarse_affine, resample_to_resolution
from .sessions import SessionRegistration, points_in_field_of_view, register_sessions
from .template import TEMPLATE_CITATION, TEMPLATE_DESCRIPTION, TEMPLATE_NAME, load_template
from .template_to_subject import (
    RegistrationResult,
    estimate_head_mask,
    register_template_to_subject,
)
from .transforms import (
    apply_transform,
    map_points,
    points_to_subject,
    points_to_template,
    resample_labels_to_subject,
)

__all__ = [
    "QC_THRESHOLDS",
    "TEMPLATE_CITATION",
    "TEMPLATE_DESCRIPTION",
    "TEMPLATE_NAME",
    "RegistrationResult",
    "SessionRegistration",
    "apply_transform",
    "coarse_affine",
    "estimate_head_mask",
    "load_template",
    "map_points",
    "normalized_mutual_information",
    "points_in_field_of_view",
    "points_to_subject",
    "points_to_template",
    "register_images",
    "register_sessions",
    "register_template_to_subject",
    "registration_quality",
    "resample_labels_to_subject",
    "resample_to_resolution",
    "rigid_align_to_reference",
    "set_ants_threads",
]
