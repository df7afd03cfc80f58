#!/bin/bash
# Submit cmbprep on SLURM: one array task per participant, then the group level once
# every task has succeeded (docs/hpc.rst). Prints the two job ids.
# Needs BIDS_DIR, OUT_DIR, SCRATCH and CMBPREP_SIF (or CMBPREP_BIN) in the environment;
# extra arguments go to both sbatch calls (e.g. --partition=short --account=lab).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${BIDS_DIR:?}" "${OUT_DIR:?}" "${SCRATCH:?}"
[ -n "${CMBPREP_SIF:-}${CMBPREP_BIN:-}" ] || { echo "set CMBPREP_SIF or CMBPREP_BIN" >&2; exit 64; }
export SUBJECTS=${SUBJECTS:-$PWD/cmbprep-subjects.txt}
mkdir -p "$OUT_DIR"
if [ ! -s "$SUBJECTS" ]; then
    find "$BIDS_DIR" -maxdepth 1 -type d -name 'sub-*' -printf '%f\n' | sed 's/^sub-//' \
        | sort > "$SUBJECTS"
fi
n=$(wc -l < "$SUBJECTS")
[ "$n" -gt 0 ] || { echo "no sub-* folders in $BIDS_DIR" >&2; exit 66; }
array=$(sbatch --parsable "$@" --array=1-"$n" "$here/participant.sbatch")
group=$(sbatch --parsable "$@" --dependency=afterok:"$array" --kill-on-invalid-dep=yes \
    "$here/group.sbatch")
echo "participant array job $array ($n tasks), group job $group"
