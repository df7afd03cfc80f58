"""Nothing is fetched at run time: a participant run opens no network connection."""

import json
import os
import subprocess
import sys

from cmbprep.testing.phantom import write_example_dataset

# Records every network look-up or connection (audit events, Python >= 3.8) of this
# process and of the worker processes it forks, without blocking them. (The spawned
# processes of interfaces/itk_process.py start without the hook; they run one ANTs call.)
# Without NIPYPE_NO_ET, this records Nipype's version check: a look-up of its server.
_RUNNER = """
import json, os, sys
record = sys.argv[1]
def hook(event, args):
    if event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.connect"):
        with open(record, "a") as fobj:
            fobj.write(json.dumps([os.getpid(), event, repr(args)[:200]]) + "\\n")
sys.addaudithook(hook)
from cmbprep.cli.run import main
sys.exit(main(sys.argv[2:]))
"""


def test_participant_run_opens_no_network_connection(tmp_path):
    bids = write_example_dataset(tmp_path / "bids")
    record = tmp_path / "network.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "NIPYPE_NO_ET"}
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(record), str(bids), str(tmp_path / "out"),
         "participant", "--participant-label", "03", "-w", str(tmp_path / "work"),
         "--nprocs", "2", "--omp-nthreads", "1"],
        capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    attempts = [json.loads(line) for line in record.read_text().splitlines()] \
        if record.exists() else []
    assert attempts == []
    assert (tmp_path / "out" / "sub-03" / "anat").is_dir()
