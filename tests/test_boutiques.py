"""boutiques.json stays in step with the real command-line parser."""

from __future__ import annotations

import json
import shlex

import pytest

from pathlib import Path

from cmbprep.cli.parser import build_parser, parse_args

ROOT = Path(__file__).parents[1]
DESCRIPTOR = ROOT / "boutiques.json"


def _bosh(*args):
    from boutiques import bosh

    return bosh(list(args))


def test_descriptor_is_a_valid_bids_app():
    # bosh raises DescriptorValidationError when invalid.
    _bosh("validate", "--bids", str(DESCRIPTOR))


def test_simulated_command_line_is_accepted_by_the_parser():
    invocation = ROOT / "tests" / "data" / "boutiques_invocation.json"
    result = _bosh("exec", "simulate", str(DESCRIPTOR), "-i", str(invocation))
    command = result.shell_command
    assert command.startswith("mkdir -p /data/derivatives/cmbprep; cmbprep ")
    argv = shlex.split(command.split(";", 1)[1])[1:]
    settings = parse_args(argv)
    assert settings.participant_label == ["01", "02"]
    assert settings.session_label == ["baseline"]
    assert settings.detector == "bian2013" and settings.handedness == "left"
    assert settings.minip_slab_mm == 6.0 and settings.random_seed == 7
    assert settings.stop_on_first_crash and settings.skip_bids_validation
    assert settings.prevalence_by == ["platelet_nadir:0,5,10,15"]


def test_every_parser_option_is_in_the_descriptor_and_back():
    descriptor = json.loads(DESCRIPTOR.read_text())
    flags = {i["command-line-flag"] for i in descriptor["inputs"] if "command-line-flag" in i}
    parser_flags = set()
    for action in build_parser()._actions:
        if action.option_strings and action.dest not in ("help", "version", "verbosity"):
            assert set(action.option_strings) & flags, f"{action.option_strings} not in boutiques.json"
            parser_flags.update(action.option_strings)
    assert flags <= parser_flags


def test_group_invocation_keeps_the_output_folder(tmp_path):
    """Both [OUTPUT_DIR] inputs exist (the BIDS-App form asks for a String and a File);
    bosh substitutes keys in descriptor order, so the String one is required and comes
    first: a group invocation keeps its output folder (issue 13)."""
    from boutiques.invocationSchemaHandler import InvocationValidationError

    invocation = tmp_path / "group.json"
    invocation.write_text(json.dumps({
        "bids_dir": "/data", "output_dir_name": "/out",
        "participant_level_analysis_dir": "/out", "analysis_level": "group",
        "group_column": "group"}))
    command = _bosh("exec", "simulate", str(DESCRIPTOR), "-i", str(invocation)).shell_command
    assert command.startswith("mkdir -p /out; cmbprep /data /out group")
    settings = parse_args(shlex.split(command.split(";", 1)[1])[1:])
    assert str(settings.output_dir) == "/out" and settings.analysis_level == "group"
    # without output_dir_name the invocation is refused instead of dropping the folder
    invocation.write_text(json.dumps({"bids_dir": "/data", "analysis_level": "group",
                                      "participant_level_analysis_dir": "/out"}))
    with pytest.raises(InvocationValidationError, match="output_dir_name"):
        _bosh("exec", "simulate", str(DESCRIPTOR), "-i", str(invocation))
