#!/usr/bin/env bash
# --help tells the truth: for each command whose options are run-config keys, the options its
# --help names (besides --help and --set) are exactly the keys of its section, as the error
# line of an unknown option lists them (one table behind both). Usage: cli_help_keys.sh TVACCINE
set -euo pipefail
TV=$1
fail() { echo "FAILED: $*"; exit 1; }
for cmd in demo synth bench export generate eval attack plan; do
  documented=$("$TV" "$cmd" --help | grep -o -- '--[a-z][a-z-]*' | sort -u | grep -vx -- '--help\|--set' \
    | tr '\n' ' ')
  if "$TV" "$cmd" --no-such-option > /dev/null 2> "${TMPDIR:-/tmp}/tv_help_keys.$$"; then
    fail "$cmd accepted --no-such-option"
  fi
  keys=$(sed 's/.*the keys //; s/; try.*//' "${TMPDIR:-/tmp}/tv_help_keys.$$" | tr ',' '\n' \
    | sed "s/^ *$cmd\./--/; s/_/-/g" | sort -u | tr '\n' ' ')
  rm -f "${TMPDIR:-/tmp}/tv_help_keys.$$"
  [ -n "$keys" ] || fail "$cmd: no keys listed"
  [ "$documented" = "$keys" ] || fail "$cmd: --help names [$documented], its keys are [$keys]"
done
echo "ok: each command's --help names exactly its section's keys"
