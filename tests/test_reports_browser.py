"""The participant and group reports opened in a real headless Chromium: every image
loads, no script error, no failed resource, and no ``nan``/``None`` shown anywhere.

Uses the participant outputs of ``tests/test_review.py`` (one participant-level run of
sub-01 of the example dataset, shared); skipped without Chromium or Playwright, except
in CI.
"""

from __future__ import annotations

import re

import pandas as pd

from tests.test_review import (  # noqa: F401 - fixtures
    PageErrors,
    browser,
    outputs_copy,
    participant_outputs,
)

NAN_OR_NONE = re.compile(r"\b(nan|NaN|None|null|undefined)\b")


def _open(browser, path):
    errors = PageErrors()
    context = browser.new_context()
    page = errors.watch(context.new_page())
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    broken = page.evaluate("Array.from(document.images).filter("
                           "i => !(i.complete && i.naturalWidth > 0)).length")
    images = page.evaluate("document.images.length")
    text = page.inner_text("body")
    context.close()
    return errors, images, broken, text


def test_participant_and_group_reports_open_cleanly(browser, outputs_copy):
    from cmbprep.cli.run import main

    out = outputs_copy["out"]
    assert main([str(outputs_copy["bids"]), str(out), "group"]) == 0

    candidates = pd.read_csv(out / "sub-01" / "anat" / "sub-01_desc-candidates_cmb.tsv",
                             sep="\t")
    n_shown = int(candidates["status"].isin(["cmb", "review"]).sum())
    errors, images, broken, text = _open(browser, out / "sub-01.html")
    assert errors == [] and broken == 0
    # mosaic + one crop per accepted/review candidate + brain mask + registration
    assert images == 1 + n_shown + 2
    for heading in ("Candidates: accepted and for review", "Quality control",
                    "normalised mutual information", "Methods", "cmbprep-review",
                    "group_cmb.html", "sub-01_desc-candidates_cmb.tsv"):
        assert heading in text, heading
    assert not NAN_OR_NONE.search(text), NAN_OR_NONE.search(text)

    errors, images, broken, text = _open(browser, out / "group_cmb.html")
    assert errors == [] and broken == 0
    assert "Microbleed counts" in text and "sub-01" in text
    assert not NAN_OR_NONE.search(text), NAN_OR_NONE.search(text)
