#!/usr/bin/env bash
# Installs the Debian 12 packages tvaccine builds against, when any is missing.
# Run as root (or with sudo available). Safe to run again: it does nothing when all are present.
set -euo pipefail
# slurmctld, slurmd, slurm-client and munge: the ctest slurm_cluster starts a one-node cluster.
packages=(build-essential cmake pkg-config libopenblas-openmp-dev libopenmpi-dev openmpi-bin
          libcjson-dev libpcre2-dev libhdf5-dev libcyaml-dev libyaml-dev
          gnuplot-nox  # gnuplot: the demo's plots (pngcairo and svg terminals, no X)
          slurmctld slurmd slurm-client munge)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}"
fi
