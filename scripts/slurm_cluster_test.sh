#!/usr/bin/env bash
# A real one-node Slurm cluster on loopback: installs slurmctld, slurmd and munge from Debian
# when missing, starts them on a private configuration (ports, key, state and logs in one
# temporary folder), and checks, with 2 tasks on a tiny random world:
#  1. the shipped templates (launch/slurm/align.sbatch: srun + PMIx; align-multinode.sbatch:
#     mpirun inside the allocation) give the adapter of a 1-rank run, bit for bit;
#  2. SIGKILL of rank 1 of a running align.sbatch job ends the job within 10 s, failed, and the
#     job's output names task 1;
#  3. a fatal error that only rank 1 meets (its data file is not JSON) ends a 2-task srun
#     within 10 s, non-zero, with the error line and task 1 named;
#  4. preemption: SIGUSR1 to the job's tasks (Slurm's --signal) saves a checkpoint and ends
#     the job COMPLETED; submitting the template again resumes it to the 1-rank adapter.
# Then it stops the daemons (on every exit path). Run as root:
#   bash scripts/slurm_cluster_test.sh [TVACCINE]   (default build/launch/tvaccine, built if absent)
# Exit 0: passed; 1: failed; 77: skipped (not root, or the packages are absent and cannot be
# installed). ctest runs it as `slurm_cluster`. Nothing outside its temporary folder changes
# (apart from installing the packages).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LIMIT_S=${SLURM_TEST_LIMIT_S:-200} # the whole test, daemons included, ends within this

skip() { echo "slurm-test [${SECONDS}s]: skipped: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (it starts slurmctld, slurmd and munged)"
[ "$(nproc --all)" -ge 2 ] || skip "needs 2 CPUs for its 2-task jobs"
packages=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "slurm-test [${SECONDS}s]: installing ${missing[*]}"
  { timeout 120 apt-get update -q && DEBIAN_FRONTEND=noninteractive timeout 300 \
      apt-get install -y -q "${missing[@]}"; } > /tmp/tv_slurm_apt.$$.log 2>&1 \
    || { tail -3 /tmp/tv_slurm_apt.$$.log; rm -f /tmp/tv_slurm_apt.$$.log;
         skip "${missing[*]} missing and apt-get could not install them"; }
  rm -f /tmp/tv_slurm_apt.$$.log
fi
if [ $# -ge 1 ]; then
  TV=$(readlink -f "$1")
else
  [ -x build/launch/tvaccine ] || bash scripts/build.sh
  TV=$ROOT/build/launch/tvaccine
fi
[ -x "$TV" ] || { echo "slurm-test [${SECONDS}s]: FAILED: no executable $TV"; exit 1; }

W=$(mktemp -d /tmp/tv_slurm.XXXXXX)
chmod 755 "$W" # munged runs as the munge user
export SLURM_CONF=$W/slurm.conf
pids=()
status=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "${watchdog:-}" ] && kill "$watchdog" 2>/dev/null || true
  # Jobs first (their tasks run under slurmd), then the daemons, each by its own pid.
  if [ -s "$W/slurmctld.pid" ]; then
    scancel --full -u root 2>/dev/null || true
    for _ in $(seq 50); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.2; done
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "$rc" -eq 0 ]; then rm -rf "$W"; else echo "slurm-test [${SECONDS}s]: work folder kept: $W"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "slurm-test [${SECONDS}s]: FAILED: interrupted"; exit 1' INT TERM
# A hard limit: the test ends (and its trap stops the daemons) even if Slurm hangs.
# (1-second sleeps with no output attached: killing it leaves nothing that holds ctest's pipe.)
( for _ in $(seq "$LIMIT_S"); do sleep 1 < /dev/null > /dev/null 2>&1; done
  echo "slurm-test [${SECONDS}s]: FAILED: no end after ${LIMIT_S}s"; kill -TERM $$ ) &
watchdog=$!

fail() { echo "slurm-test [${SECONDS}s]: FAILED: $*"; status=1; }
# Waits until none of the given jobs is in the queue (at most $1 seconds); 1 if one still is.
wait_jobs() {
  local limit=$1; shift
  local end=$(( $(date +%s) + limit ))
  while [ "$(date +%s)" -lt "$end" ]; do
    [ -z "$(squeue -h -j "$(IFS=,; echo "$*")" 2>/dev/null)" ] && return 0
    sleep 0.2
  done
  return 1
}
job_field() { { scontrol -o show job "$1" 2>/dev/null || true; } | tr ' ' '\n' | sed -n "s/^$2=//p"; }
# A TCP port nobody listens on.
free_port() {
  local p
  while :; do
    p=$(( $1 + RANDOM % 10000 ))
    ss -Htln 2>/dev/null | awk '{print $4}' | grep -q ":$p\$" || { echo "$p"; return; }
  done
}

# munge with its own key, socket and logs in $W.
mkdir -p "$W/munge"
dd if=/dev/urandom of="$W/munge/munge.key" bs=1024 count=1 status=none
chown -R munge:munge "$W/munge"
chmod 700 "$W/munge"
chmod 400 "$W/munge/munge.key"
MUNGE_SOCKET=$W/munge/munge.socket
runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$W/munge/munge.key" \
  --pid-file="$W/munge/munged.pid" --log-file="$W/munge/munged.log" \
  --seed-file="$W/munge/munged.seed" --force
pids+=("$(cat "$W/munge/munged.pid")")

HOST=$(hostname -s)
CPUS=$(nproc --all) # not nproc: it follows OMP_NUM_THREADS, which ctest sets to 1
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
mkdir -p "$W/state" "$W/spool"
cat > "$SLURM_CONF" <<EOF
ClusterName=tvtest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$(free_port 20000)
SlurmdPort=$(free_port 40000)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd.pid
SlurmctldLogFile=$W/slurmctld.log
SlurmdLogFile=$W/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=pmix
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobCompType=jobcomp/none
MinJobAge=600
KillWait=5
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
slurmctld -f "$SLURM_CONF" -i
for _ in $(seq 50); do [ -s "$W/slurmctld.pid" ] && break; sleep 0.2; done
[ -s "$W/slurmctld.pid" ] || { tail -5 "$W/slurmctld.log"; echo "slurm-test [${SECONDS}s]: FAILED: no slurmctld"; exit 1; }
pids+=("$(cat "$W/slurmctld.pid")")
slurmd -f "$SLURM_CONF"
for _ in $(seq 50); do [ -s "$W/slurmd.pid" ] && break; sleep 0.2; done
[ -s "$W/slurmd.pid" ] || { tail -5 "$W/slurmd.log"; echo "slurm-test [${SECONDS}s]: FAILED: no slurmd"; exit 1; }
pids+=("$(cat "$W/slurmd.pid")")
for _ in $(seq 100); do sinfo -h -o %T 2>/dev/null | grep -qE '^idle' && break; sleep 0.3; done
sinfo -h -o %T | grep -qE '^idle' || { sinfo; echo "slurm-test [${SECONDS}s]: FAILED: the node never came up"; exit 1; }
echo "slurm-test [${SECONDS}s]: one-node cluster up ($HOST, $CPUS CPUs)"

# The worlds: a random tiny one (no pretraining), 4 layers split over 2 tasks.
"$TV" synth --out "$W/world" --steps 0 --seed 3 > "$W/synth.log"
SET=(--max-steps 4 --threads 1 --save-every 2)
OMP_NUM_THREADS=1 "$TV" align --config "$W/world/align.yaml" --out "$W/one" "${SET[@]}" > "$W/one.log"
export TVACCINE=$TV OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
same_adapter() { cmp -s "$W/one/adapter/adapter_model.safetensors" "$1/adapter/adapter_model.safetensors"; }

# 1. The shipped templates, as a user submits them, 2 tasks each.
jobs=()
jobs+=("$(sbatch --parsable --ntasks=2 --cpus-per-task=1 --output="$W/srun-%j.out" \
  launch/slurm/align.sbatch "$W/world/align.yaml" "$W/srun" "${SET[@]}")")
jobs+=("$(sbatch --parsable --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --output="$W/mpirun-%j.out" \
  launch/slurm/align-multinode.sbatch "$W/world/align.yaml" "$W/mpirun" "${SET[@]}")")
echo "slurm-test [${SECONDS}s]: submitted jobs ${jobs[*]} (2 tasks each)"
wait_jobs 120 "${jobs[@]}" || fail "jobs ${jobs[*]} still queued after 120 s"
for run in srun mpirun; do
  if same_adapter "$W/$run"; then
    echo "slurm-test [${SECONDS}s]: ok: the 2-task $run job's adapter equals the 1-rank adapter, bit for bit"
  else
    echo "--- $run job output"; cat "$W/$run"-*.out
    fail "the 2-task $run job's adapter differs from the 1-rank adapter"
  fi
done

# The pid of task $2 of job $1 (its tvaccine process, told apart by SLURM_PROCID).
task_pid() {
  local pid
  for pid in $(pgrep -f "tvaccine align"); do
    tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "SLURM_JOB_ID=$1" || continue
    tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "SLURM_PROCID=$2" && { echo "$pid"; return 0; }
  done
  return 1
}
# Waits until run folder $1 has logged $2 steps (at most 60 s).
wait_steps() {
  for _ in $(seq 600); do
    [ -f "$1/log.jsonl" ] && [ "$(wc -l < "$1/log.jsonl")" -ge "$2" ] && return 0
    sleep 0.1
  done
  return 1
}

# 2. SIGKILL of rank 1 while align.sbatch's 2 tasks train.
job=$(sbatch --parsable --ntasks=2 --cpus-per-task=1 --output="$W/kill-%j.out" \
  launch/slurm/align.sbatch "$W/world/align.yaml" "$W/kill" --max-steps 100000 --threads 1)
if ! wait_steps "$W/kill" 2; then
  fail "the job to be killed never logged 2 steps"; cat "$W/kill-$job.out"
elif ! victim=$(task_pid "$job" 1); then
  fail "no task 1 of job $job found"
else
  t0=$(date +%s.%N)
  kill -KILL "$victim"
  wait_jobs 30 "$job" || true
  elapsed=$(echo "$(date +%s.%N) - $t0" | bc)
  state=$(job_field "$job" JobState) code=$(job_field "$job" ExitCode)
  echo "slurm-test [${SECONDS}s]: SIGKILL of task 1 (pid $victim): job $job ended in ${elapsed}s, $state, exit code $code"
  echo "$elapsed < 10" | bc | grep -q 1 || fail "job $job took ${elapsed}s (over 10 s) to end after SIGKILL of a rank"
  [ "$state" != COMPLETED ] && [ "${code%%:*}" != 0 ] || fail "job $job ended $state, exit code $code after a rank was killed"
  grep -m1 -E "task 1: Killed" "$W/kill-$job.out" | sed "s/^/  /" || fail "job $job's output does not name task 1"
fi

# 3. Ranks that see different files under the same relative data path (srun --multi-prog
# runs each task in its own folder): a. other bytes on rank 1: one error line naming rank 1
# (rank 0 finds it and ends the job); b. no file on rank 1: an error only rank 1 meets ends the
# job too, within 10 s, non-zero, and the output names task 1.
data=$(sed -n 's/^data: *//p' "$W/world/align.yaml" | tr -d '"')
case "$data" in /*) ;; *) data="$W/world/$data" ;; esac
mkdir -p "$W/fa" "$W/fb"
cp "$data" "$W/fa/data.json"
for t in 0 1; do
  echo "$t bash -c 'cd $W/f$( [ $t = 0 ] && echo a || echo b) && exec $TV align --config $W/world/align.yaml --set data=data.json --out $W/fatal --overwrite --max-steps 4 --threads 1'"
done > "$W/fatal.conf"
# Runs the 2 tasks of fatal.conf into $1 (at most 30 s; in the background, so that a signal
# to this script is handled at once); sets rc and elapsed.
srun_fatal() {
  local t0 pid
  t0=$(date +%s.%N)
  rc=0
  OMP_NUM_THREADS=1 timeout 30 srun --kill-on-bad-exit=1 --ntasks=2 --cpus-per-task=1 \
    --multi-prog "$W/fatal.conf" > "$1" 2>&1 &
  pid=$!
  wait "$pid" || rc=$?
  elapsed=$(echo "$(date +%s.%N) - $t0" | bc)
}
check_fatal() { # $1 output, $2 what happened; rc and elapsed from srun_fatal
  echo "slurm-test [${SECONDS}s]: $2: srun ended in ${elapsed}s with status $rc"
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || { cat "$1"; fail "$2: srun ended with status $rc"; }
  echo "$elapsed < 10" | bc | grep -q 1 || fail "$2: srun took ${elapsed}s (over 10 s) to end"
}
head -c 100 "$data" > "$W/fb/data.json" # the same rows cut short
srun_fatal "$W/fatal-a.out"
check_fatal "$W/fatal-a.out" "other data bytes on task 1"
n=$(grep -c "tvaccine: error: align: data.json: rank 1 reads different bytes from rank 0" "$W/fatal-a.out" || true)
[ "$n" -eq 1 ] || { cat "$W/fatal-a.out"; fail "other data bytes on task 1: $n lines naming rank 1 and data.json, not 1"; }
rm "$W/fb/data.json"
srun_fatal "$W/fatal-b.out"
check_fatal "$W/fatal-b.out" "no data file on task 1"
grep -q "tvaccine: error: .*data.json" "$W/fatal-b.out" \
  || { cat "$W/fatal-b.out"; fail "no data file on task 1: no error line naming data.json"; }
grep -qE "task 1: Exited with exit code|MPI_ABORT was invoked on rank 1" "$W/fatal-b.out" \
  || { cat "$W/fatal-b.out"; fail "no data file on task 1: the output does not name task 1"; }
grep -hE "tvaccine: error|task 1: Exited|invoked on rank 1" "$W/fatal-b.out" | sed 's/^/  /'

# 4. Preemption: Slurm's --signal sends SIGUSR1 to the tasks; both save the last completed step
# and exit 0 (job COMPLETED); the template submitted again resumes from the checkpoint.
export TVACCINE_TEST_STEP_STALL_S=1
job=$(sbatch --parsable --ntasks=2 --cpus-per-task=1 --output="$W/preempt-%j.out" \
  launch/slurm/align.sbatch "$W/world/align.yaml" "$W/preempt" "${SET[@]}")
if wait_steps "$W/preempt" 1; then
  scancel --signal=USR1 "$job"
  wait_jobs 30 "$job" || fail "job $job still queued 30 s after SIGUSR1"
  state=$(job_field "$job" JobState)
  saved=$(ls "$W/preempt/checkpoints" 2>/dev/null | tr '\n' ' ')
  steps=$(wc -l < "$W/preempt/log.jsonl")
  echo "slurm-test [${SECONDS}s]: SIGUSR1 after step $steps: job $job $state, checkpoints: $saved"
  [ "$state" = COMPLETED ] || { cat "$W/preempt-$job.out"; fail "preempted job $job ended $state"; }
  [ "$steps" -lt 4 ] || fail "the preempted job finished all 4 steps: SIGUSR1 came too late to test"
  unset TVACCINE_TEST_STEP_STALL_S
  job=$(sbatch --parsable --ntasks=2 --cpus-per-task=1 --output="$W/resume-%j.out" \
    launch/slurm/align.sbatch "$W/world/align.yaml" "$W/preempt" "${SET[@]}")
  wait_jobs 120 "$job" || fail "resumed job $job still queued after 120 s"
  if same_adapter "$W/preempt"; then
    echo "slurm-test [${SECONDS}s]: ok: preempted under srun and resumed: the 1-rank adapter, bit for bit"
  else
    cat "$W/resume-$job.out"; fail "preempted and resumed: the adapter differs from the 1-rank run"
  fi
else
  cat "$W/preempt-$job.out"; fail "the job to be preempted never logged a step"
fi
unset TVACCINE_TEST_STEP_STALL_S

[ "$status" -eq 0 ] && echo "slurm-test [${SECONDS}s]: passed"
exit "$status"
