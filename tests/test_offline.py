"""Nothing is fetched at run time: a participant run opens no network connection."""


def test_participant_run_opens_no_network_connection(example_run):
    """The shared run of the example dataset (tests/conftest.py) went through a child
    process that records every network look-up or connection of it and of the worker
    processes it forks, with NIPYPE_NO_ET unset (Nipype's version check would be one)."""
    assert example_run["network_attempts"] == []
    for sub in ("sub-01", "sub-02", "sub-03"):
        assert (example_run["out"] / sub / "anat").is_dir()


def test_the_recorder_sees_a_look_up(tmp_path):
    """The recording hook of that run does record a look-up (without cmbprep)."""
    import json
    import subprocess
    import sys

    from tests.conftest import AUDITED_RUNNER

    code = AUDITED_RUNNER.split("from cmbprep")[0] + \
        "import socket\nsocket.getaddrinfo('localhost', 80)\n"
    record = tmp_path / "network.jsonl"
    subprocess.run([sys.executable, "-c", code, str(record)], check=True, timeout=60)
    events = [json.loads(line)[1] for line in record.read_text().splitlines()]
    assert "socket.getaddrinfo" in events
