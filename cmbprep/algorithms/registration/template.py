"""The registration template: its name, provenance and the images nilearn ships.

The template is the ICBM 2009a nonlinear *symmetric* T1 template that nilearn ships
(``mni_icbm152_t1_tal_nlin_sym_09a``, brain only, 1 mm). Its BIDS/TemplateFlow
identifier is ``MNI152NLin2009aSym`` (:data:`TEMPLATE_NAME`): the 2009a and 2009c
releases differ slightly (2009c was re-processed with improved bias correction), so
calling the nilearn file ``MNI152NLin2009cSym`` would be wrong.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

#: BIDS/TemplateFlow name of the template space (file names, ``template`` outputs and
#: the phantom's ``mni_*`` truth coordinates).
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
