#!/usr/bin/env bash
# `make hpc-check`: run the SLURM recipe of docs/hpc.rst for real on this machine.
#
# Brings up a single-node SLURM (Debian slurm-wlm + munge; no cgroups:
# ProctrackType=proctrack/linuxproc, TaskPlugin=task/none), makes the demo dataset,
# submits it with benchmarks/hpc/submit.sh (one array task per participant, then the
# group job with --dependency=afterok) as an unprivileged user, waits, and checks the
# outputs, the job states, that the input was not written and that the per-task work
# dirs were removed. Then, unless HPC_CHECK_PLUGIN=0, the Nipype-plugin alternative:
# `cmbprep ... participant --use-plugin benchmarks/hpc/slurm_plugin.yml` (every Nipype
# node its own SLURM job).
#
# Needs root (it installs the packages if missing, starts munged/slurmctld/slurmd and
# stops them again at the end). Runs the .venv installation (CMBPREP_BIN); set
# CMBPREP_SIF=/path/cmbprep.sif to run the Apptainer image instead. Not part of `make test`.
# Environment: HPC_CHECK_DIR (default /tmp/cmbprep-hpc-check), HPC_CHECK_USER (default
# cmbprep-hpc, created if missing), HPC_CHECK_TIMEOUT (s, default 3600), HPC_CHECK_KEEP=1
# leaves SLURM running.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${HPC_CHECK_DIR:-/tmp/cmbprep-hpc-check}
user=${HPC_CHECK_USER:-cmbprep-hpc}
timeout=${HPC_CHECK_TIMEOUT:-3600}
export CMBPREP_BIN=${CMBPREP_BIN:-$repo/.venv/bin/cmbprep}
python=$repo/.venv/bin/python

say() { echo "hpc-check: $*"; }
fail() { echo "hpc-check: FAILED: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (configures and starts SLURM)"
[ -x "$CMBPREP_BIN" ] || [ -n "${CMBPREP_SIF:-}" ] || fail "$CMBPREP_BIN missing (make install)"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge
fi
id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /bin/bash "$user"
if [ -z "${CMBPREP_SIF:-}" ] && ! runuser -u "$user" -- "$CMBPREP_BIN" --version >/dev/null 2>&1; then
    # e.g. a .venv whose Python lives under /root: the jobs then run as root, and the
    # read-only input is checked by its modification times only
    say "$user cannot run $CMBPREP_BIN; the jobs run as root"
    user=root
fi

# --- a one-node cluster -------------------------------------------------------------
rm -rf "$dir"
mkdir -p "$dir"/slurm/{state,spool,log} "$dir"/home "$dir"/scratch "$dir"/out "$dir"/submit
host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
export SLURM_CONF=$dir/slurm/slurm.conf
cat > "$SLURM_CONF" <<EOF
ClusterName=cmbprep-check
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
MpiDefault=none
StateSaveLocation=$dir/slurm/state
SlurmdSpoolDir=$dir/slurm/spool
SlurmctldPidFile=$dir/slurm/slurmctld.pid
SlurmdPidFile=$dir/slurm/slurmd.pid
SlurmctldLogFile=$dir/slurm/log/slurmctld.log
SlurmdLogFile=$dir/slurm/log/slurmd.log
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/slurm/log/jobcomp.txt
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=600
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=check Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

started_munge=0
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key \
        && chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key; }
    runuser -u munge -- /usr/sbin/munged
    started_munge=1
fi
stop() {
    [ "${HPC_CHECK_KEEP:-0}" = 1 ] && { say "SLURM left running (SLURM_CONF=$SLURM_CONF)"; return; }
    for f in "$dir"/slurm/slurmd.pid "$dir"/slurm/slurmctld.pid; do
        [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    if [ "$started_munge" = 1 ] && [ -s /run/munge/munged.pid ]; then
        kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    fi
}
trap stop EXIT
/usr/sbin/slurmctld -i
/usr/sbin/slurmd
for _ in $(seq 60); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 1
done
[ "$state" = idle ] || fail "SLURM node not idle ($state); see $dir/slurm/log"
say "SLURM up: node $host, $cpus CPUs, ${mem_mb} MB ($(sinfo --version))"

# --- the demo dataset, read-only for the job user -------------------------------------
"$python" -m cmbprep.testing.phantom "$dir/bids" --example >/dev/null
chmod -R a-w "$dir/bids"
touch "$dir/bids-marker"
chown -R "$user" "$dir"/home "$dir"/scratch "$dir"/out "$dir"/submit

# --- the recipe: array job + group job ------------------------------------------------
as_user() {
    runuser -u "$user" -- env HOME="$dir/home" USER="$user" LOGNAME="$user" SLURM_CONF="$SLURM_CONF" \
        BIDS_DIR="$dir/bids" SCRATCH="$dir/scratch" CMBPREP_BIN="$CMBPREP_BIN" \
        CMBPREP_SIF="${CMBPREP_SIF:-}" "$@"
}
t0=$(date +%s)
ids=$(cd "$dir/submit" && as_user env OUT_DIR="$dir/out/array" \
    bash "$repo/benchmarks/hpc/submit.sh" --cpus-per-task=1 --mem=3G)
say "$ids"
array=$(echo "$ids" | awk '{ print $4 }')
group=$(echo "$ids" | awk '{ print $NF }')

wait_for() {  # job ids...
    local left
    while :; do
        left=$(squeue -h -j "$(IFS=,; echo "$*")" -o %i 2>/dev/null | wc -l)
        [ "$left" = 0 ] && return 0
        [ $(( $(date +%s) - t0 )) -lt "$timeout" ] || fail "jobs $* still queued after ${timeout} s"
        sleep 5
    done
}
wait_for "$array" "$group"
wall=$(( $(date +%s) - t0 ))

comp=$dir/slurm/log/jobcomp.txt
grep -E " ArrayJobId=$array |^JobId=$group " "$comp" \
    | awk '{ printf "hpc-check: job "; for (i = 1; i <= NF; i++) if ($i ~ /^(JobId|Name|JobState|StartTime|EndTime|ArrayTaskId)=/) printf "%s ", $i; print "" }'
n=$(wc -l < "$dir/submit/cmbprep-subjects.txt")
ok=$(grep -cE "JobState=COMPLETED .* ArrayJobId=$array ArrayTaskId=" "$comp" || true)
[ "$ok" = "$n" ] || fail "$ok of $n participant tasks COMPLETED (logs in $dir/submit)"
grep -qE "^JobId=$group .*JobState=COMPLETED" "$comp" || fail "group job $group did not complete"

out=$dir/out/array
for s in $(cat "$dir/submit/cmbprep-subjects.txt"); do
    [ -f "$out/sub-$s.html" ] || fail "no report $out/sub-$s.html"
    for f in desc-cmb_cmb.tsv desc-cmb_dseg.nii.gz desc-summary_cmb.json; do
        [ -f "$out/sub-$s/anat/sub-${s}_$f" ] || fail "no $out/sub-$s/anat/sub-${s}_$f"
    done
done
for f in group_cmb.html group_cmb.tsv dataset_description.json; do
    [ -f "$out/$f" ] || fail "no $out/$f"
done
[ -z "$(find "$dir/bids" -newer "$dir/bids-marker" -print -quit)" ] || fail "the input was written"
[ -z "$(ls -A "$dir/scratch/cmbprep-work" 2>/dev/null)" ] || fail "work dirs left in scratch"
say "array + group: $n participants, all jobs COMPLETED, outputs checked, ${wall} s wall"

# --- the Nipype-plugin alternative ----------------------------------------------------
if [ "${HPC_CHECK_PLUGIN:-1}" = 1 ] && [ -z "${CMBPREP_SIF:-}" ]; then
    t1=$(date +%s)
    (cd "$dir/submit" && as_user "$CMBPREP_BIN" "$dir/bids" "$dir/out/plugin" participant \
        -w "$dir/scratch/plugin-work" --use-plugin "$repo/benchmarks/hpc/slurm_plugin.yml") \
        > "$dir/submit/plugin.log" 2>&1 || fail "plugin run failed (see $dir/submit/plugin.log)"
    for s in $(cat "$dir/submit/cmbprep-subjects.txt"); do
        [ -f "$dir/out/plugin/sub-$s.html" ] || fail "plugin run: no report for sub-$s"
    done
    say "Nipype SLURM plugin (--use-plugin): participant level $(( $(date +%s) - t1 )) s wall," \
        "$(( $(wc -l < "$comp") - n - 1 )) node jobs"
fi
say "OK (logs: $dir/submit, SLURM: $dir/slurm/log)"
