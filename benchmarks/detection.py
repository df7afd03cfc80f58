"""Detection benchmark on a phantom cohort, through the real pipeline (run by hand).

Seeds 1001-1099 are used here and by nothing else (tests use other seeds, the classifier
was trained on 20000+ and its thresholds chosen on 30000+; see
:mod:`cmbprep.testing.detector_training`).

    .venv/bin/python benchmarks/detection.py --work /tmp/detbench [--quick] [--direct]

Default (pipeline) mode: the cohort is written as one raw BIDS dataset (``sub-<protocol>
<seed>``, single-echo magnitude + phase) with its truth, then ``cmbprep <bids> <out>
participant`` is run once per detector (``--detector cmbprep`` and ``--detector
bian2013``, same work directory), and the derivative tables are scored against truth:
accepted microbleeds (``desc-cmb_cmb.tsv``; for bian2013 also the ``review`` candidates,
i.e. everything it shows the rater as putative) are matched one-to-one within
max(3 mm, apparent radius + 1.5 mm) (:mod:`cmbprep.testing.scoring`).

``--held-out`` adds 17 scans of the generator family that the benchmark holds out
(:data:`cmbprep.testing.detector_training.HELD_OUT_FAMILY`, seeds 1051-1067, randomised
protocol and input kind: 11 magnitude + phase, 2 MEGRE, 4 scanner SWI; the measures are
also given per input kind). Its held-out figure is
measured with a model fitted without that family::

    python -m cmbprep.testing.detector_training --cache DIR --hold-out D --no-lofo \
        --output /tmp/model_without_D.json
    python benchmarks/detection.py --work DIR --held-out --only held-out \
        --detectors cmbprep --detector-model /tmp/model_without_D.json

``--test-family [FAMILY ...]`` adds 17 scans (seeds 1071-1087) of each family in
:data:`cmbprep.testing.detector_training.TEST_FAMILIES` (or of those named): family G,
``converging`` veins (10 magnitude + phase, 4 MEGRE, 3 scanner SWI), and family H,
``lobulated`` lesions among family D's veins (10 magnitude + phase, 2 MEGRE, 5 scanner
SWI). They were made after the shipped model was fixed and are kept out of every fit:
further held-out figures, one per family (cohort ``test-family G``, ...), measured with
the shipped model itself (``--only test-family``).

``--direct`` skips the CLI: SWI from :func:`~cmbprep.algorithms.swi.process_swi`, the
phantom's brain mask, detectors called as functions (quick iteration; also gives the
detection time of one call and the ``rules`` scorer for comparison).

Truth: *visible* microbleeds (the phantom lowers the noise-free magnitude below 50 % in
at least one voxel); detections of invisible ones count neither way. Measures with all
microbleeds as truth are printed too.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import numpy as np
import pandas as pd

from cmbprep.testing.scoring import scan_bootstrap, sensitivity_at_fp_rate, summarise

#: (protocol, overrides, seeds). Controls have no CMBs. In-family: the default vein model
#: (``surface_walk``, that of training family A) and fixed protocols.
COHORT = [
    ("clinical", {"n_cmbs": 8, "n_calcifications": 2}, [1011, 1012, 1013]),
    ("iso1", {"n_cmbs": 8, "n_calcifications": 1}, [1021, 1022, 1023]),
    ("iso1", {"n_cmbs": 0, "n_calcifications": 1}, [1031]),
    ("clinical", {"n_cmbs": 0, "n_calcifications": 0}, [1041, 1042]),
    ("itp", {"n_cmbs": 8, "n_calcifications": 2}, [1001, 1002]),
]
QUICK = [
    ("clinical", {"n_cmbs": 8, "n_calcifications": 2}, [1011]),
    ("iso1", {"n_cmbs": 0, "n_calcifications": 1}, [1031]),
]
#: Held-out family (never used to fit, calibrate or threshold the shipped model): its own
#: vein model and protocol ranges, randomised per scan (input kind included).
HELD_OUT_SEEDS = list(range(1051, 1068))  # 11 gre, 2 megre, 4 scanner SWI
#: Test families (never used by any fit, not even leave-one-family-out).
TEST_FAMILY_SEEDS = list(range(1071, 1088))  # of each test family
#: Input kinds written with phase (scanner SWI, ``swi``, comes without).
PHASE_INPUT_KINDS = ("gre", "megre")


def scans(cohort, held_out=False, test_families=()):
    """Scan descriptions with their participant labels and cohorts."""
    from cmbprep.testing.detector_training import HELD_OUT_FAMILY, fixed_scan
    from cmbprep.testing.phantom.randomise import random_scan

    out = [(f"{p}{s}", "in-family", fixed_scan(p, o, s)) for p, o, seeds in cohort
           for s in seeds]
    if held_out:
        out += [(f"family{HELD_OUT_FAMILY}{s}", "held-out", random_scan(HELD_OUT_FAMILY, s))
                for s in HELD_OUT_SEEDS]
    out += [(f"family{f}{s}", f"test-family {f}", random_scan(f, s)) for f in test_families
            for s in TEST_FAMILY_SEEDS]
    return out


def test_families(named):
    """The test families to add: none (``None``), all (``[]``) or those named."""
    from cmbprep.testing.detector_training import TEST_FAMILIES

    if named is None:
        return ()
    unknown = sorted(set(named) - set(TEST_FAMILIES))
    if unknown:
        raise SystemExit(f"--test-family: {', '.join(unknown)} not among the test families "
                         f"{', '.join(TEST_FAMILIES)}")
    return tuple(named) or TEST_FAMILIES


def write_cohort(bids, scan_specs):
    """Raw BIDS dataset of the cohort plus ``derivatives/phantom-truth``."""
    from cmbprep.testing.detector_training import phantom_fingerprint
    from cmbprep.testing.phantom import simulate_subject, write_subject

    bids = Path(bids)
    stamp = bids / ".phantom-fingerprint"
    if stamp.exists() and stamp.read_text().strip() != phantom_fingerprint():
        raise SystemExit(f"{bids} was written by another version of the phantom generator; "
                         "delete it (or use another --work folder)")
    bids.mkdir(parents=True, exist_ok=True)
    stamp.write_text(phantom_fingerprint() + "\n")
    todo = [(label, spec) for label, _, spec in scan_specs
            if not (bids / "derivatives" / "phantom-truth" / f"sub-{label}").exists()]
    for label, spec in todo:
        t0 = time.perf_counter()
        ph = simulate_subject(spec.config, seed=spec.sim_seed)
        write_subject(ph, bids, label, input_kind=spec.input_kind)
        print(f"wrote sub-{label} ({spec.input_kind}) in {time.perf_counter() - t0:.0f} s",
              flush=True)
    return bids


def run_pipeline(bids, out, work, detector, nprocs, model=None, labels=None):
    cmd = [sys.executable, "-m", "cmbprep.cli.run", str(bids), str(out), "participant",
           "-w", str(work), "--detector", detector, "--nprocs", str(nprocs),
           "--omp-nthreads", "1", "--skip-bids-validation"]
    if model:
        cmd += ["--detector-model", str(model)]
    if labels:
        cmd += ["--participant-label", *labels]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"cmbprep exited with {proc.returncode}: {' '.join(cmd)}")
    return wall


def _durations(pattern):
    """Run time (s) of every node result matching ``pattern``, by participant."""
    from nipype.utils.filemanip import loadpkl

    out = {}
    for pklz in glob.glob(pattern, recursive=True):
        res = loadpkl(pklz)
        parts = [p for p in Path(pklz).parts if "sub_" in p or "sub-" in p]
        out.setdefault(parts[-1] if parts else pklz, []).append(
            float(getattr(res.runtime, "duration", np.nan)))
    return out


def node_durations(work, detector):
    """Detection time (s) in the work directory, by participant, along the critical
    path: ``find_candidates`` + the slowest ``analyse_candidates`` chunk + ``detect``
    (``bian2013``: ``detect`` only)."""
    work = Path(work)
    stages = [(work / "**" / "detect" / "result_detect.pklz", sum)]
    if detector == "cmbprep":
        stages += [
            (work / "**" / "find_candidates" / "result_find_candidates.pklz", sum),
            (work / "**" / "analyse_candidates" / "mapflow" / "_analyse_candidates*" /
             "result__analyse_candidates*.pklz", max)]
    total = {}
    for pattern, combine in stages:
        for label, times in _durations(str(pattern)).items():
            total[label] = total.get(label, 0.0) + combine(times)
    return total


def read_detections(out, label, detector):
    anat = Path(out) / f"sub-{label}" / "anat"
    cand = pd.read_csv(next(anat.glob("*desc-candidates_cmb.tsv")), sep="\t",
                       na_values="n/a", keep_default_na=False)
    cmb = pd.read_csv(next(anat.glob("*desc-cmb_cmb.tsv")), sep="\t", na_values="n/a",
                      keep_default_na=False)
    if detector == "bian2013":
        return cand[cand["status"].isin(["cmb", "review"])], cmb, cand
    return cmb, cmb, cand


def print_summary(name, m):
    v, a = m["visible"], m["all"]
    print(f"== {name}")
    print(f"  visible CMBs: sensitivity {v['sensitivity']:.3f} ({v['true_positives']}/"
          f"{v['n_cmbs']}), precision {v['precision']:.3f}, F1 {v['f1']:.3f}")
    print(f"  all CMBs:     sensitivity {a['sensitivity']:.3f} ({a['true_positives']}/"
          f"{a['n_cmbs']}), precision {a['precision']:.3f}, F1 {a['f1']:.3f}")
    print(f"  sensitivity apparent diameter >= 3 mm {m['sensitivity_ge3mm']:.3f} "
          f"({m['n_ge3mm']}), visible < 3 mm {m['sensitivity_lt3mm_visible']:.3f} "
          f"({m['n_lt3mm_visible']}), invisible {m['sensitivity_invisible']:.3f} "
          f"({m['n_invisible']})")
    print(f"  false positives {m['false_positives']}: {m['fp_per_scan']:.2f}/scan, "
          f"{m['fp_per_control_scan']:.2f}/control scan ({m['n_control_scans']} controls)")
    print(f"  calcifications reported as CMB: {m['calcifications_as_cmb']}/"
          f"{m['calcifications']}")
    if "with_phase" in m:
        w = m["with_phase"]
        print(f"  calcifications reported as CMB on the {w['n_scans']} scans with phase "
              f"(target <= 10 %): {w['calcifications_as_cmb']}/{w['calcifications']}")
    print(f"  sensitivity by MARS category: "
          f"{ {k: round(x, 3) for k, x in m['sensitivity_by_mars'].items()} }")
    print(f"  sensitivity by protocol: "
          f"{ {k: round(x, 3) for k, x in m['sensitivity_by_protocol'].items()} }")
    print(f"  MARS category agreement of matched detections: {m['mars_agreement']:.3f} "
          f"({m['n_mars_pairs']})", flush=True)
    if "review_per_scan" in m:
        print(f"  left for review: {m['review_per_scan']:.2f} candidates per scan", flush=True)
    if "offered_to_rater" in m:
        o = m["offered_to_rater"]
        print(f"  offered to a rater (accepted or review): {o['per_scan']:.2f} candidates per "
              f"scan, {o['no_microbleed_per_scan']:.2f} of them on no microbleed; they hold "
              f"{o['true_positives']}/{o['n_cmbs']} visible microbleeds "
              f"({o['sensitivity']:.3f}; >= 3 mm {o['sensitivity_ge3mm']:.3f})", flush=True)
    if "at_1_fp_per_scan" in m:
        a = m["at_1_fp_per_scan"]
        print(f"  best threshold with <= 1 FP/scan (FROC point over accepted and review "
              f"candidates): sensitivity {a['sensitivity']:.3f} ({a['true_positives']}/"
              f"{a['n_cmbs']}) at score >= {a['threshold']:.2f}, {a['fp_per_scan']:.2f} "
              "FP/scan", flush=True)
    if "ci95" in m and np.isfinite(m["ci95"]["f1"][0]):
        ci = m["ci95"]
        print(f"  95 % interval over {ci['n_scans']} scans ({ci['n_resamples']} scan "
              "resamples): " + ", ".join(
                  f"{name} {ci[key][0]:.2f}-{ci[key][1]:.2f}" for key, name in (
                      ("f1", "F1"), ("sensitivity_ge3mm", ">= 3 mm"),
                      ("fp_per_scan", "FP/scan"), ("fp_per_control_scan", "FP/control"))),
              flush=True)


def cohort_measures(per_scan):
    """``cmbprep <group>`` measures (with ``review_per_scan``, the FROC point
    ``at_1_fp_per_scan``, ``ci95``, 95 % intervals with the scan as unit,
    :func:`~cmbprep.testing.scoring.scan_bootstrap`, from 10 scans up; ``offered_to_rater``,
    what a rater who checks every accepted and review candidate is shown and can find;
    ``with_phase``, the calcifications reported on the scans with phase, which is what the
    calcification target is about) of the in-family, held-out and test-family cohorts, and
    of the last two by input kind."""
    groups = {}
    for entry in per_scan:
        groups.setdefault(entry["cohort"], []).append(entry)
        if entry["cohort"] != "in-family":
            groups.setdefault(f"{entry['cohort']} {entry['input_kind']}", []).append(entry)
    results = {}
    for name, group in groups.items():
        m = results[f"cmbprep {name}"] = summarise(group)
        m["review_per_scan"] = float(np.mean([e["review"] for e in group]))
        m["at_1_fp_per_scan"] = sensitivity_at_fp_rate(group, 1.0)
        m["ci95"] = scan_bootstrap(group)
        offered = summarise([dict(e, detections=e["candidates"]) for e in group])
        m["offered_to_rater"] = {
            **{k: offered["visible"][k] for k in ("n_cmbs", "true_positives", "sensitivity")},
            "sensitivity_ge3mm": offered["sensitivity_ge3mm"],
            "per_scan": float(np.mean([len(e["candidates"]) for e in group])),
            "no_microbleed_per_scan": offered["fp_per_scan"]}
        with_phase = [e for e in group if e["input_kind"] in PHASE_INPUT_KINDS]
        if with_phase:
            calcs = summarise(with_phase)
            m["with_phase"] = {"n_scans": len(with_phase),
                               "calcifications": calcs["calcifications"],
                               "calcifications_as_cmb": calcs["calcifications_as_cmb"]}
    return results


def pipeline_mode(args, cohort):
    work = Path(args.work)
    specs = scans(cohort, args.held_out, args.test_family)
    if args.only:
        specs = [s for s in specs if s[1].split()[0] == args.only]
    bids = write_cohort(work / "bids", specs)
    results = {}
    for detector in args.detectors:
        model = args.detector_model if detector == "cmbprep" else None
        out = work / (f"out-{detector}" + (f"-{Path(model).stem}" if model else ""))
        wall = run_pipeline(bids, out, work / "work", detector, args.nprocs, model,
                            [label for label, _, _ in specs]
                            if args.only or args.quick else None)
        print(f"cmbprep participant --detector {detector}: {wall:.0f} s wall", flush=True)
        per_scan, extra = [], {}
        for label, group, spec in specs:
            truth = pd.read_csv(bids / "derivatives" / "phantom-truth" / f"sub-{label}" /
                                "anat" / f"sub-{label}_desc-truth_cmb.tsv", sep="\t",
                                na_values="n/a", keep_default_na=False)
            det, cmb, cand = read_detections(out, label, detector)
            per_scan.append({"truth": truth, "detections": det, "cohort": group,
                             "protocol": f"{spec.family}/{spec.input_kind}",
                             "input_kind": spec.input_kind,
                             "review": int((cand["status"] == "review").sum()),
                             "candidates": cand[cand["status"].isin(["cmb", "review"])]})
            extra[label] = {"accepted": len(cmb), "candidates": len(cand),
                            "review": per_scan[-1]["review"]}
        results[detector] = summarise(per_scan)
        if detector == "cmbprep":
            results.update(cohort_measures(per_scan))
        if detector == "bian2013":
            only = [dict(s, detections=s["detections"][s["detections"]["status"] == "cmb"])
                    for s in per_scan]
            results["bian2013_cmb_only"] = summarise(only)
        durations = node_durations(work / "work", detector)
        results[detector]["detect_node_s"] = durations
        results[detector]["wall_s"] = wall
        results[detector]["scans"] = extra
    return results


def direct_mode(args, cohort):
    from cmbprep.algorithms.detection import detect_bian2013, detect_cmbprep
    from cmbprep.testing.detector_training import detector_parameters, prepare_scan

    names = ("cmbprep", "cmbprep_rules", "bian2013", "bian2013_cmb_only")
    per_scan = {n: [] for n in names}
    times = []
    for label, group, spec in scans(cohort, args.held_out, args.test_family):
        protocol, seed = f"{spec.family}/{spec.input_kind}", spec.seed
        a, truth, timing = prepare_scan(spec, args.cache)
        t0 = time.perf_counter()
        r = detect_cmbprep(a["swi"], a["brain"], a["affine"], filtered_phase=a["phase"],
                           magnitude=a["magnitude"], parameters=detector_parameters(a))
        timing["cmbprep_s"] = time.perf_counter() - t0
        rr = detect_cmbprep(a["swi"], a["brain"], a["affine"], filtered_phase=a["phase"],
                            magnitude=a["magnitude"],
                            parameters=detector_parameters(a, scorer="rules"))
        t0 = time.perf_counter()
        rb = detect_bian2013(a["swi"], a["minip"], a["brain"], a["affine"])
        timing["bian2013_s"] = time.perf_counter() - t0
        timing.update(protocol=protocol, seed=seed, shape="x".join(map(str, a["swi"].shape)))
        times.append(timing)
        c, cr, cb = r.candidates, rr.candidates, rb.candidates
        per_scan["cmbprep"].append({"truth": truth, "protocol": protocol, "cohort": group,
                                    "input_kind": spec.input_kind,
                                    "review": int((c["status"] == "review").sum()),
                                    "detections": c[c["status"] == "cmb"]})
        per_scan["cmbprep_rules"].append({"truth": truth, "protocol": protocol,
                                          "detections": cr[cr["status"] == "cmb"]})
        per_scan["bian2013"].append({"truth": truth, "protocol": protocol,
                                     "detections": cb[cb["status"].isin(["cmb", "review"])]})
        per_scan["bian2013_cmb_only"].append({"truth": truth, "protocol": protocol,
                                              "detections": cb[cb["status"] == "cmb"]})
        print(f"{protocol} {seed}: cmbprep {int((c['status'] == 'cmb').sum())} accepted, "
              f"{timing['cmbprep_s']:.1f} s; bian2013 {timing['bian2013_s']:.1f} s",
              flush=True)
    print(pd.DataFrame(times).round(1).to_string(index=False))
    results = {n: summarise(per_scan[n]) for n in names}
    results.update(cohort_measures(per_scan["cmbprep"]))
    return results


def timing_mode(args):
    """Detection time of the default detector on the 0.5x0.5x1 mm whole-head scans: each
    stage, and the wall time with the analysis in ``--nprocs`` chunks run in parallel
    (as the pipeline's MapNode does); also the SWI chain's step 5 (the phase convention
    decided again inside the brain), which the pipeline runs just before detection."""
    from cmbprep.algorithms.detection import (
        analyse_candidates,
        find_candidates,
        merge_and_score,
    )
    from cmbprep.algorithms.swi import confirm_handedness_in_brain
    from cmbprep.testing.detector_training import prepare_scan

    n_chunks = max(1, args.nprocs)
    for label, _, spec in scans(COHORT):
        if spec.family != "itp":
            continue
        protocol, seed = spec.family, spec.seed
        a, _, _ = prepare_scan(spec, args.cache)
        t0 = time.perf_counter()
        context = find_candidates(a["swi"], a["brain"], a["affine"],
                                  filtered_phase=a["phase"], magnitude=a["magnitude"])
        t_find = time.perf_counter() - t0
        analysed, t_chunks = {}, []
        for chunk in range(n_chunks):
            t0 = time.perf_counter()
            analysed.update(analyse_candidates(
                context, range(chunk, len(context.peaks), n_chunks)))
            t_chunks.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        r = merge_and_score(context, analysed, images=(a["swi"], a["magnitude"], a["brain"]))
        t_merge = time.perf_counter() - t0
        if a["phase"] is not None and a["handedness"] in ("right", "left"):
            # the SWI chain's step 5 (its own node, before detection in the pipeline)
            t0 = time.perf_counter()
            _, step5 = confirm_handedness_in_brain(a["magnitude"], a["phase"], a["affine"],
                                                   a["brain"], a["handedness"])
            print(f"{protocol} {seed}: SWI step 5 (phase convention inside the brain) "
                  f"{time.perf_counter() - t0:.1f} s, changed: {step5['Changed']}",
                  flush=True)
        print(f"{protocol} {seed} {'x'.join(map(str, a['swi'].shape))}: find {t_find:.1f} s, "
              f"analyse {sum(t_chunks):.1f} s ({n_chunks} chunks, slowest "
              f"{max(t_chunks):.1f} s), merge+score {t_merge:.1f} s; one process "
              f"{t_find + sum(t_chunks) + t_merge:.1f} s, {n_chunks} processes "
              f"{t_find + max(t_chunks) + t_merge:.1f} s; {len(r.candidates)} candidates",
              flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/cmbprep-detection-benchmark",
                        help="folder for the BIDS cohort, outputs and work directory")
    parser.add_argument("--quick", action="store_true", help="two scans only")
    parser.add_argument("--direct", action="store_true",
                        help="call the detectors directly instead of the CLI")
    parser.add_argument("--timing", action="store_true",
                        help="only time the default detector on the 0.5 mm scans")
    parser.add_argument("--cache", default=None,
                        help="(--direct, --timing) cache of simulated scans")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--detectors", nargs="+", default=["cmbprep", "bian2013"],
                        choices=["cmbprep", "bian2013"], help="(pipeline mode)")
    parser.add_argument("--held-out", action="store_true",
                        help="also the held-out family's scans (seeds 1051-1067)")
    parser.add_argument("--test-family", nargs="*", default=None, metavar="FAMILY",
                        help="also the test families' scans (seeds 1071-1087; all test "
                        "families, or those named)")
    parser.add_argument("--only", choices=["in-family", "held-out", "test-family"],
                        default=None,
                        help="(pipeline mode) write, run and score only these scans")
    parser.add_argument("--detector-model", default=None,
                        help="(pipeline mode) classifier JSON for --detector cmbprep, e.g. "
                        "a model fitted without the held-out family")
    parser.add_argument("--json", default=None, help="write the measures to this file")
    args = parser.parse_args(argv)
    args.test_family = test_families(args.test_family)
    cohort = QUICK if args.quick else COHORT
    if args.timing:
        timing_mode(args)
        return 0
    results = direct_mode(args, cohort) if args.direct else pipeline_mode(args, cohort)
    print()
    for name, m in results.items():
        print_summary(name, m)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
