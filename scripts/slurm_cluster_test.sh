#!/usr/bin/env bash
# A real one-node Slurm cluster on loopback: installs slurmctld, slurmd and munge from Debian
# when missing, starts them on a private configuration, submits the 2-task alignment template
# (launch/slurm/align.sbatch, srun + PMIx), checks that its adapter equals a 1-rank run of the
# same config, and stops the daemons. Run as root: bash scripts/slurm_cluster_test.sh
# Nothing outside its temporary folder is changed except the munge key (created if absent).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

packages=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "slurm-test: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
[ -x build/launch/tvaccine ] || bash scripts/build.sh
TV=$ROOT/build/launch/tvaccine

W=$(mktemp -d /tmp/tv_slurm.XXXXXX)
chmod 755 "$W" # munged runs as the munge user
pids=()
stop_daemons() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_daemons EXIT

# munge: the key is the only file outside $W; an existing key is kept.
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  if command -v mungekey > /dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
  else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
fi
mkdir -p "$W/munge" && chown munge:munge "$W/munge" 2>/dev/null || true
MUNGE_SOCKET=$W/munge/munge.socket
runuser -u munge -- munged --socket="$MUNGE_SOCKET" --pid-file="$W/munge/munged.pid" \
  --log-file="$W/munge/munged.log" --seed-file="$W/munge/munged.seed" --force
pids+=("$(cat "$W/munge/munged.pid")")

HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
mkdir -p "$W/state" "$W/spool"
cat > "$W/slurm.conf" <<EOF
ClusterName=tvtest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$(( 20000 + RANDOM % 20000 ))
SlurmdPort=$(( 40001 + RANDOM % 20000 ))
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
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
export SLURM_CONF=$W/slurm.conf
slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF"
for _ in $(seq 50); do [ -s "$W/slurmctld.pid" ] && [ -s "$W/slurmd.pid" ] && break; sleep 0.2; done
pids+=("$(cat "$W/slurmctld.pid")" "$(cat "$W/slurmd.pid")")
for _ in $(seq 100); do sinfo -h -o %T 2>/dev/null | grep -qE '^idle' && break; sleep 0.3; done
sinfo

# The job: a random tiny world (no pretraining), 4 layers split over 2 tasks.
"$TV" synth --out "$W/world" --steps 0 --seed 3 > "$W/synth.log"
SET=(--max-steps 4 --threads 1 --save-every 2)
OMP_NUM_THREADS=1 "$TV" align --config "$W/world/align.yaml" --out "$W/one" "${SET[@]}" > "$W/one.log"

# The shipped templates, as a user submits them: srun (align.sbatch) and mpirun inside the
# allocation (align-multinode.sbatch, here on this one node), 2 tasks each.
export TVACCINE=$TV OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
jobs=()
jobs+=("$(sbatch --parsable --ntasks=2 --cpus-per-task=1 --output="$W/srun-%j.out" \
  launch/slurm/align.sbatch "$W/world/align.yaml" "$W/srun" "${SET[@]}")")
jobs+=("$(sbatch --parsable --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --output="$W/mpirun-%j.out" \
  launch/slurm/align-multinode.sbatch "$W/world/align.yaml" "$W/mpirun" "${SET[@]}")")
echo "slurm-test: submitted jobs ${jobs[*]} (2 tasks each)"
for _ in $(seq 1200); do
  [ -z "$(squeue -h -j "$(IFS=,; echo "${jobs[*]}")" 2>/dev/null)" ] && break
  sleep 0.5
done
status=0
for run in srun mpirun; do
  echo "--- $run job output"
  cat "$W/$run"-*.out
  if cmp -s "$W/one/adapter/adapter_model.safetensors" "$W/$run/adapter/adapter_model.safetensors"; then
    echo "slurm-test: the 2-task $run job's adapter equals the 1-rank adapter, bit for bit"
  else
    echo "slurm-test: FAILED: the 2-task $run job's adapter differs from the 1-rank adapter"
    status=1
  fi
done
[ $status -eq 0 ] || { echo "slurm-test: work folder kept: $W"; exit 1; }
rm -rf "$W"
