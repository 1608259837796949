#!/usr/bin/env bash
# Stop the private SLURM cluster started by start.sh in DIR ($1, $VLAB_SLURM_DIR or /tmp/vlab-slurm).
# Only the daemons named by the pid files in DIR are signalled (never by process name), in reverse
# start order: running jobs are cancelled first, then slurmd, slurmctld, slurmdbd, mariadbd, munged.
# Leftover slurmstepd processes of this cluster (their environment names our slurm.conf) and their
# children are killed last. Idempotent: nothing running -> nothing to do. Files in DIR are kept.
set -uo pipefail

log() { echo "stop.sh: $*" >&2; }
[[ $(id -u) -eq 0 ]] || { log "error: must run as root"; exit 1; }

DIR=${1:-${VLAB_SLURM_DIR:-/tmp/vlab-slurm}}
if [[ ! -d $DIR ]]; then
  log "no directory $DIR: nothing to stop"
  exit 0
fi
DIR=$(cd "$DIR" && pwd -P)
CONF=$DIR/slurm.conf
RUN=$DIR/run
TIMEOUT=${VLAB_SLURM_STOP_TIMEOUT:-20}

# pid_of PIDFILE COMM: print the pid if it names a live process whose command name is COMM.
pid_of() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(tr -cd '0-9' <"$1")
  [[ -n $pid && -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$2" ]] || return 1
  running "$pid" || return 1
  echo "$pid"
}

# running PID: the process exists and is not a zombie (our daemons are children of init, which
# may take its time to reap them).
running() {
  local stat
  stat=$(cat /proc/"$1"/stat 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

# stop_daemon NAME PIDFILE: TERM, wait up to TIMEOUT s, then KILL.
stop_daemon() {
  local name=$1 pidfile=$2 pid i
  if ! pid=$(pid_of "$pidfile" "$name"); then
    rm -f "$pidfile"
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < TIMEOUT * 10; i++)); do
    running "$pid" || break
    sleep 0.1
  done
  if running "$pid"; then
    log "$name did not exit after ${TIMEOUT}s; killing it"
    kill -KILL "$pid" 2>/dev/null
    sleep 0.2
  fi
  rm -f "$pidfile"
}

# Cancel jobs while slurmctld and slurmd still run, so job processes are cleaned up properly.
if [[ -f $CONF ]] && pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
  export SLURM_CONF=$CONF
  job_ids=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [[ -n $job_ids ]]; then
    log "cancelling jobs: $job_ids"
    # shellcheck disable=SC2086
    timeout 10 scancel $job_ids 2>/dev/null
    for ((i = 0; i < 150; i++)); do
      [[ -z $(timeout 5 squeue -h -o %A 2>/dev/null) ]] && break
      sleep 0.1
    done
  fi
fi

stop_daemon slurmd "$RUN/slurmd.pid"
stop_daemon slurmctld "$RUN/slurmctld.pid"
stop_daemon slurmdbd "$RUN/slurmdbd.pid"
stop_daemon mariadbd "$RUN/mariadbd.pid"
stop_daemon munged "$DIR/munge/munged.pid"

# slurmstepd daemonizes away from slurmd; find the ones belonging to this cluster by the
# SLURM_CONF in their environment (inherited from our slurmd) and kill them with their children.
descendants() {
  local p c
  # shellcheck disable=SC2013
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    echo "$c"
    descendants "$c"
  done
}
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  [[ $(cat "$p/comm" 2>/dev/null) == slurmstepd ]] || continue
  tr '\0' '\n' <"$p/environ" 2>/dev/null | grep -qx "SLURM_CONF=$CONF" || continue
  victims="$pid $(descendants "$pid" | tr "\n" " ")"
  log "killing leftover slurmstepd $pid and children: $victims"
  # shellcheck disable=SC2086
  kill -KILL $victims 2>/dev/null
done
exit 0
