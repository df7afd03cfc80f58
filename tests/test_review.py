"""The rater's review: ``cmbprep-review`` in a real headless Chromium, its table, and the
group level reading it (counts of the chosen rater, kappa and ICC between raters).

The participant level runs once per test run (the example dataset, ``example_run`` in
tests/conftest.py, shared with ``tests/test_participant_workflow.py``,
``tests/test_offline.py`` and ``tests/test_reports_browser.py``; a lock lets the xdist
workers wait for one run). Each test works on its own copy of the outputs. The browser
tests need Debian's ``chromium`` and the Python ``playwright`` package: without them
they are skipped (CI installs both, and fails instead of skipping).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmbprep.group.analysis import cohen_kappa, icc_absolute_agreement, rater_agreement
from cmbprep.review import store
from cmbprep.review.server import ReviewSession

CHROMIUM = Path("/usr/bin/chromium")


# --------------------------------------------------------------------------------------
# Shared fixtures (also imported by tests/test_reports_browser.py)
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def participant_outputs(example_run):
    """The example dataset and its real participant-level outputs (the shared run of
    tests/conftest.py: three subjects and the group level)."""
    return {"bids": example_run["bids"], "out": example_run["out"]}


@pytest.fixture
def outputs_copy(participant_outputs, tmp_path):
    """A private copy of the outputs (and the BIDS folder, for the group level)."""
    bids = tmp_path / "bids"
    out = tmp_path / "out"
    shutil.copytree(participant_outputs["bids"], bids)
    shutil.copytree(participant_outputs["out"], out)
    return {"bids": bids, "out": out, "root": tmp_path}


def chromium_or_skip():
    """Playwright's sync API, or skip (fail under CI) when Chromium or Playwright is
    missing."""
    sync_playwright, reason = None, None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found (apt-get install chromium chromium-driver)"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            reason = "the Python package playwright is not installed (pip install playwright)"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(reason)
    return sync_playwright


@pytest.fixture(scope="module")
def browser():
    """A headless Debian Chromium driven by Playwright (no browser download)."""
    sync_playwright = chromium_or_skip()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=["--no-sandbox"])
        yield chromium
        chromium.close()


class PageErrors(list):
    """Script errors, console errors and failed loads of a page. With
    ``allow_aborted``, loads the page itself cancelled (an image replaced before it
    arrived, as when a rater presses keys quickly) are not counted."""

    def __init__(self, allow_aborted=False):
        super().__init__()
        self.allow_aborted = allow_aborted

    def _failed(self, request):
        if self.allow_aborted and "ERR_ABORTED" in (request.failure or ""):
            return
        self.append(f"failed load: {request.url} ({request.failure})")

    def watch(self, page):
        page.on("pageerror", lambda exc: self.append(f"script error: {exc}"))
        page.on("console", lambda msg: msg.type == "error" and self.append(
            f"console error: {msg.text}"))
        page.on("requestfailed", self._failed)
        page.on("response", lambda resp: resp.status >= 400 and self.append(
            f"HTTP {resp.status}: {resp.url}"))
        return page


def _checksums(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------
def test_kappa_matches_scikit_learn():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(3)
    a = rng.choice(["yes", "no", "unsure"], 60)
    b = np.where(rng.random(60) < 0.7, a, rng.choice(["yes", "no", "unsure"], 60))
    kappa, low, high, observed = cohen_kappa(a, b)
    assert kappa == pytest.approx(cohen_kappa_score(a, b))
    assert low < kappa < high and observed == pytest.approx(np.mean(a == b))
    assert math.isnan(cohen_kappa(["yes"] * 4, ["yes"] * 4)[0])


def test_icc_matches_shrout_and_fleiss():
    """Shrout and Fleiss (1979), table 2: ICC(2,1) = 0.29; CI as R's psych::ICC."""
    ratings = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9],
               [6, 2, 4, 7]]
    icc, low, high = icc_absolute_agreement(ratings)
    assert round(icc, 2) == 0.29
    assert low == pytest.approx(0.019, abs=0.001) and high == pytest.approx(0.76, abs=0.005)
    assert math.isnan(icc_absolute_agreement([[1, 1]])[0])


def test_rater_agreement_pairs_and_messages():
    reviews = {"sub-01": {"A": {"1": "yes", "2": "no", "3": "yes"},
                          "B": {"1": "yes", "2": "yes", "3": "yes"}},
               "sub-02": {"A": {"1": "no", "2": None}, "B": {"1": "no", "2": "no"}}}
    table = rater_agreement(reviews)
    row = table.iloc[0]
    assert (row["rater_1"], row["rater_2"], row["n_units"]) == ("A", "B", 2)
    assert row["n_candidates"] == 4 and row["n_units_complete"] == 1
    assert row["percent_agreement"] == pytest.approx(75.0)
    assert "ICC needs two or more units" in row["message"]


# --------------------------------------------------------------------------------------
# The reviewed table, the group level and errors (no browser)
# --------------------------------------------------------------------------------------
def test_two_raters_legacy_table_and_group_counts(outputs_copy):
    """A hand-edited table of earlier versions is kept as one rater's review, a second
    rater adds rows, and the group level counts the chosen rater and their agreement."""
    from cmbprep.cli.run import main

    out = outputs_copy["out"]
    anat = out / "sub-01" / "anat"
    candidates = pd.read_csv(anat / "sub-01_desc-candidates_cmb.tsv", sep="\t")
    queue_ids = list(candidates.loc[candidates["status"].isin(["cmb", "review"]),
                                    "candidate_id"])
    legacy = candidates.copy()
    legacy.loc[legacy["status"] == "review", "status"] = "cmb"
    legacy.to_csv(anat / "sub-01_desc-reviewed_cmb.tsv", sep="\t", index=False,
                  na_rep="n/a")
    (anat / "sub-01_desc-reviewed_cmb.json").write_text(json.dumps({"Rater": "OLD"}))
    session = ReviewSession(out, "01")
    assert [i["candidate_id"] for i in session.queue] and \
        sorted(i["candidate_id"] for i in session.queue) == sorted(queue_ids)
    for item in session.queue:
        session.decide("NEW", item["item"], "no" if item["item"] == 0 else "yes")
    table = store.read_reviewed(anat / "sub-01_desc-reviewed_cmb.tsv")
    assert set(table["rater"]) == {"OLD", "NEW"}
    assert (table.loc[table["rater"] == "OLD", "status"] == "cmb").sum() == len(queue_ids)
    sidecar = json.loads((anat / "sub-01_desc-reviewed_cmb.json").read_text())
    assert sidecar["Raters"] == ["NEW", "OLD"] and "decision" in sidecar

    bids = outputs_copy["bids"]
    assert main([str(bids), str(out), "group", "--rater", "NEW"]) == 0
    group = pd.read_csv(out / "group_cmb.tsv", sep="\t")
    assert group.loc[0, "rater"] == "NEW" and group.loc[0, "count_source"] == "rater"
    assert group.loc[0, "n_cmb"] == len(queue_ids) - 1
    assert group.loc[0, "n_review_pending"] == 0
    agreement = pd.read_csv(out / "group_rater_agreement.tsv", sep="\t")
    assert agreement.loc[0, "n_candidates"] == len(queue_ids)
    assert agreement.loc[0, "percent_agreement"] == pytest.approx(
        100 * (len(queue_ids) - 1) / len(queue_ids))
    assert "Rater agreement" in (out / "group_cmb.html").read_text()
    # A rater who did not review this participant: the automatic detection is counted.
    assert main([str(bids), str(out), "group", "--rater", "XY"]) == 0
    group = pd.read_csv(out / "group_cmb.tsv", sep="\t")
    assert group.loc[0, "count_source"] == "automatic"
    notes = json.loads((out / "group_cmb_provenance.json").read_text())["notes"]
    assert any("without a review by XY" in n for n in notes)


def _read_only(folder: Path):
    """Make ``folder`` read-only for this process: a read-only bind mount as root, else
    permissions. Returns an undo function, or skips."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        return lambda: folder.chmod(mode)
    if not shutil.which("mount"):
        pytest.skip("running as root without mount(8): cannot make a read-only folder")
    steps = (["mount", "--bind", str(folder), str(folder)],
             ["mount", "-o", "remount,bind,ro", str(folder)])
    for number, step in enumerate(steps):
        if subprocess.run(step, capture_output=True).returncode != 0:
            if number:
                subprocess.run(["umount", str(folder)], capture_output=True)
            pytest.skip("running as root and a read-only bind mount is not permitted here")
    return lambda: subprocess.run(["umount", str(folder)], check=True)


def test_read_only_output_folder_is_one_clear_error(outputs_copy, capsys):
    from cmbprep.review.cli import main

    anat = outputs_copy["out"] / "sub-01" / "anat"
    undo = _read_only(anat)
    try:
        code = main([str(outputs_copy["out"]), "--participant-label", "01", "--port", "0",
                     "--no-browser"])
    finally:
        undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 73 and len(err) == 1
    assert str(anat) in err[0] and "cannot write the review" in err[0]
    assert main([str(outputs_copy["out"]), "--participant-label", "09", "--port", "0",
                 "--no-browser"]) == 66
    assert main([str(outputs_copy["out"]), "--participant-label", "01", "--rater",
                 "bad name!"]) == 64


def _start_server(out, port, *extra):
    # stderr goes to a file: a pipe nobody reads could fill up and block the server
    log = tempfile.NamedTemporaryFile("w+", prefix="review-server-", suffix=".log",
                                      delete=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "cmbprep.review", str(out), "--participant-label", "01",
         "--port", str(port), "--no-browser", *extra],
        stdout=subprocess.PIPE, stderr=log, text=True)
    log.close()
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not match:
        process.wait(timeout=30)
        raise AssertionError((line, Path(log.name).read_text()))
    return process, f"http://127.0.0.1:{match.group(1)}/"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_server_answers_only_localhost_json(outputs_copy):
    process, url = _start_server(outputs_copy["out"], 0, "--rater", "AB")
    try:
        port = int(url.rsplit(":", 1)[1].strip("/"))

        def request(method, path, body=None, headers=None):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            content = response.read()
            conn.close()
            return response.status, content

        assert request("GET", "/api/state", headers={"Host": "attacker.example:80"})[0] \
            == 403
        assert request("POST", "/api/decision", body="rater=AB&item=0&decision=yes",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}
                       )[0] == 415
        status, content = request("GET", "/api/state?rater=AB")
        state = json.loads(content)
        assert status == 200 and state["rater"] == "AB" and state["resume"] == 0
        status, content = request("GET", "/api/crop?item=0&zoom=1")
        assert status == 200 and content[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        process.kill()
        process.wait()
    assert not (outputs_copy["out"] / "sub-01" / "anat" / "sub-01_desc-reviewed_cmb.tsv"
                ).exists()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_server_stops_with_a_keep_alive_connection_open(outputs_copy, stop):
    """A browser keeps HTTP/1.1 connections open; Ctrl-C / SIGTERM must still stop the
    server at once (Python's server_close() would otherwise wait for that thread)."""
    process, url = _start_server(outputs_copy["out"], 0, "--rater", "AB")
    port = int(url.rsplit(":", 1)[1].strip("/"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/api/state")
        response = conn.getresponse()
        response.read()
        assert response.status == 200 and not response.will_close  # kept alive
        process.send_signal(stop)
        assert process.wait(timeout=10) == 0
    finally:
        conn.close()
        if process.poll() is None:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------------------
# The page in a real browser
# --------------------------------------------------------------------------------------
def _decided(tsv: Path, rater: str) -> dict:
    if not tsv.exists():
        return {}
    table = pd.read_csv(tsv, sep="\t", na_values="n/a", keep_default_na=False)
    mine = table[(table["rater"] == rater) & table["decision"].notna()]
    return dict(zip(mine["candidate_id"], mine["decision"]))


def _wait_js(page, expression, timeout=30.0):
    """Poll a JavaScript expression until it is true (``wait_for_function`` would need
    ``eval``, which the page's content security policy forbids)."""
    assert _wait_for(lambda: page.evaluate(expression), timeout), expression


def _wait_for(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_browser_review_survives_a_killed_server(browser, outputs_copy):
    from cmbprep.cli.run import main

    out, root = outputs_copy["out"], outputs_copy["root"]
    anat = out / "sub-01" / "anat"
    tsv = anat / "sub-01_desc-reviewed_cmb.tsv"
    before = _checksums(root)
    port = _free_port()
    process, url = _start_server(out, port)
    context = browser.new_context()
    errors = PageErrors(allow_aborted=True)
    try:
        page = errors.watch(context.new_page())
        page.goto(url)
        page.wait_for_selector("#rater-input", state="visible")
        page.fill("#rater-input", "AB")
        page.click("#rater-start")
        page.wait_for_selector("#review", state="visible")
        n_items = len(page.evaluate("fetch('/api/state').then(r => r.json())")["items"])
        assert n_items >= 3
        _wait_js(page, "document.getElementById('crop').complete && "
                               "document.getElementById('crop').naturalWidth > 100")
        page.keyboard.press("y")
        _wait_js(page, "document.getElementById('progress').textContent"
                               ".startsWith('1 of')")
        page.click("#btn-no")
        _wait_js(page, "document.getElementById('progress').textContent"
                               ".startsWith('2 of')")
        decided = _decided(tsv, "AB")
        assert sorted(decided.values()) == ["no", "yes"]
        assert errors == []
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()

    # Restart on the same port: the page remembers the rater and resumes at the third.
    process, url = _start_server(out, port)
    try:
        page.wait_for_timeout(500)  # deliver the events of the killed server's loads
        errors.clear()
        page.reload()
        _wait_js(page, "document.getElementById('progress').textContent"
                               ".startsWith('2 of')")
        assert "3 of" in page.inner_text("#candidate-info")
        src = page.get_attribute("#crop", "src")
        page.keyboard.press("z")
        assert page.get_attribute("#crop", "src") != src
        page.keyboard.press("b")
        assert "2 of" in page.inner_text("#candidate-info")
        assert "no" in page.inner_text("#candidate-info")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("u")
        _wait_js(page, "document.getElementById('progress').textContent"
                               ".startsWith('3 of')")
        for done in range(3, n_items):
            page.keyboard.press("y")
            _wait_js(page, f"document.getElementById('progress').textContent"
                                   f".startsWith('{done + 1} of')")
        page.wait_for_selector("#done", state="visible")
        assert "All" in page.inner_text("#done")
        _wait_js(page, "document.getElementById('crop').complete")
        assert errors == [], "\n".join(errors)
    finally:
        context.close()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)

    decided = _decided(tsv, "AB")
    assert len(decided) == n_items
    assert sorted(decided.values()).count("unsure") == 1
    assert sorted(decided.values()).count("no") == 1
    table = pd.read_csv(tsv, sep="\t", keep_default_na=False)
    assert list(table.columns[:6]) == ["candidate_id", "rater", "decision", "decided_at",
                                       "status", "auto_status"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t)
               for t in table["decided_at"])
    assert dict(zip(table["decision"], table["status"])) == {
        "yes": "cmb", "no": "rejected", "unsure": "review"}
    # Nothing written but the reviewed table and its sidecar.
    after = _checksums(root)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert changed == ["out/sub-01/anat/sub-01_desc-reviewed_cmb.json",
                       "out/sub-01/anat/sub-01_desc-reviewed_cmb.tsv"]

    assert main([str(outputs_copy["bids"]), str(out), "group"]) == 0
    group = pd.read_csv(out / "group_cmb.tsv", sep="\t")
    row = group.iloc[0]
    assert row["count_source"] == "rater" and row["rater"] == "AB"
    assert row["n_cmb"] == n_items - 2 and row["n_review_pending"] == 1
    assert row["cmb_table"] == "sub-01/anat/sub-01_desc-reviewed_cmb.tsv"
