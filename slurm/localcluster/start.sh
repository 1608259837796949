#!/usr/bin/env bash
# Start a private single-node SLURM cluster (with accounting) on this machine, for tests.
#
#   slurm/localcluster/start.sh [DIR]        # DIR defaults to $VLAB_SLURM_DIR or /tmp/vlab-slurm
#   source DIR/env.sh                        # or: eval "$(slurm/localcluster/start.sh DIR)"
#
# Idempotent: daemons already running (per the pid files in DIR) are left alone; when all five
# run it only prints the environment. Progress goes to stderr, stdout carries only `export` lines.
# Stop with slurm/localcluster/stop.sh DIR. See README.md next to this script.
#
# Environment knobs (all optional):
#   VLAB_SLURM_DIR        private directory (when no argument is given)
#   VLAB_SLURM_PORT_BASE  first of 4 consecutive TCP ports: slurmctld, slurmd, slurmdbd, mariadb
#                         (default 16817; chosen away from SLURM's 6817-6819 and MySQL's 3306)
#   VLAB_SLURM_CPUS       CPUs advertised for the node (default: max(detected, 4), using
#                         SlurmdParameters=config_overrides); "detected" = exactly what slurmd -C sees
#   VLAB_SLURM_CLUSTER    cluster name (default vlab), VLAB_SLURM_PARTITION (default debug)
#   VLAB_SLURM_TIMEOUT    seconds to wait for each daemon (default 60)
set -euo pipefail

# A daemon that keeps a caller's pipe open makes a caller that captures our output
# (subprocess.run(capture_output=True), $(...), CI log capture) wait forever. So: close every
# inherited descriptor above 2, start daemons with stdio on files and 3>&-, and send messages
# to fd 3 (the original stderr), also from checks whose output is discarded.
for fd in "/proc/$$/fd"/*; do
  fd=${fd##*/}
  if ((fd > 2 && fd < 255)); then eval "exec $fd>&-"; fi
done
exec 3>&2
die() { echo "start.sh: error: $*" >&3; exit 1; }
log() { echo "start.sh: $*" >&3; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts munged/mariadb/slurm daemons as root)"

DIR=${1:-${VLAB_SLURM_DIR:-/tmp/vlab-slurm}}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd -P)
PORT_BASE=${VLAB_SLURM_PORT_BASE:-16817}
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))
CLUSTER=${VLAB_SLURM_CLUSTER:-vlab}
PARTITION=${VLAB_SLURM_PARTITION:-debug}
TIMEOUT=${VLAB_SLURM_TIMEOUT:-60}
HOST=$(hostname -s)

CONF=$DIR/slurm.conf
RUN=$DIR/run            # pid files of slurm daemons
LOGD=$DIR/log
MUNGE=$DIR/munge        # key, socket, pid, log of munged (owned by munge)
DB=$DIR/mysql           # MariaDB data dir, socket, pid (owned by mysql)
MUNGE_SOCK=$MUNGE/munge.socket.2
DB_SOCK=$DB/mysqld.sock

# Unix socket paths are limited to 107 bytes.
((${#MUNGE_SOCK} < 100)) || die "directory path too long for unix sockets: $DIR"

write_env() {
  cat >"$DIR/env.sh" <<EOF
export SLURM_CONF=$CONF
export VLAB_SLURM_DIR=$DIR
export VLAB_SLURM_PARTITION=$PARTITION
export VLAB_SLURM_CLUSTER=$CLUSTER
EOF
  cat "$DIR/env.sh"
}

# alive PIDFILE COMM: the pid file names a live (not zombie) process whose command name is COMM.
alive() {
  local pid stat
  [[ -s $1 ]] || return 1
  pid=$(tr -cd '0-9' <"$1")
  [[ -n $pid ]] && stat=$(cat /proc/"$pid"/stat 2>/dev/null) || return 1
  [[ $stat == "$pid ($2) "[^Z]* ]]
}

# wait_for SECONDS WHAT CMD...: retry CMD every 0.5 s until it succeeds.
wait_for() {
  local t=$1 what=$2 end
  shift 2
  end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || return 1
    sleep 0.5
  done
  log "$what ready"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

all_alive() {
  alive "$MUNGE/munged.pid" munged && alive "$RUN/mariadbd.pid" mariadbd &&
    alive "$RUN/slurmdbd.pid" slurmdbd && alive "$RUN/slurmctld.pid" slurmctld &&
    alive "$RUN/slurmd.pid" slurmd
}

if all_alive && [[ -f $CONF ]]; then
  log "cluster in $DIR already running"
  export SLURM_CONF=$CONF
  if sinfo -h >/dev/null 2>&1; then
    write_env
    exit 0
  fi
  die "daemons in $DIR run but sinfo does not answer; run stop.sh $DIR and start again (logs in $LOGD)"
fi

# ---------------------------------------------------------------- packages
PKGS=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]} (apt)"
  # Keep package maintainer scripts from starting daemons (policy-rc.d exit 101), restoring
  # whatever policy-rc.d was there before.
  POLICY=/usr/sbin/policy-rc.d
  SAVED=""
  if [[ -e $POLICY ]] && ! grep -qx 'exit 101' "$POLICY"; then
    SAVED=$POLICY.vlab-saved
    mv "$POLICY" "$SAVED"
  fi
  CREATED=""
  if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    CREATED=1
  fi
  restore_policy() {
    [[ -n $CREATED ]] && rm -f "$POLICY"
    [[ -n $SAVED ]] && mv "$SAVED" "$POLICY"
    CREATED="" SAVED=""
  }
  trap restore_policy EXIT
  export DEBIAN_FRONTEND=noninteractive
  # Wait for a concurrent apt/dpkg (e.g. another test session installing) instead of failing.
  APT_LOCK=(-o DPkg::Lock::Timeout=300)
  apt-get "${APT_LOCK[@]}" update -qq >&2 || die "apt-get update failed (no access to the Debian mirror?)"
  apt-get "${APT_LOCK[@]}" install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" >&2 || die "could not install packages: ${missing[*]}"
  restore_policy
  trap - EXIT
fi
for b in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sbatch sacct sacctmgr; do
  command -v "$b" >/dev/null || die "$b not found after installing packages"
done

# ---------------------------------------------------------------- host name
getent hosts "$HOST" >/dev/null || {
  log "adding '127.0.0.1 $HOST' to /etc/hosts (the node name must resolve)"
  echo "127.0.0.1 $HOST" >>/etc/hosts
}

# ---------------------------------------------------------------- directories
chmod 755 "$DIR"
mkdir -p "$RUN" "$LOGD" "$DIR/state" "$DIR/spool/slurmd" "$MUNGE" "$DB"
chmod 755 "$RUN" "$LOGD" "$MUNGE"
chmod 700 "$DIR/state" "$DIR/spool"
chown munge:munge "$MUNGE"
chown mysql:mysql "$DB"
for u in munge mysql; do
  runuser -u "$u" -- test -x "$DIR" ||
    die "user $u cannot enter $DIR (a parent directory is not world-searchable); use another directory"
done
cd "$DIR"

# ---------------------------------------------------------------- node layout
# slurmd -C: "NodeName=x CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
HW=$(SLURM_CONF=/dev/null slurmd -C 2>/dev/null | head -1)
hw() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$HW"; }
DET_CPUS=$(hw CPUs)
DET_MEM=$(hw RealMemory)
[[ -n $DET_CPUS && -n $DET_MEM ]] || die "cannot parse 'slurmd -C' output: $HW"
REAL_MEM=$((DET_MEM * 9 / 10)) # at most what slurmd detects, or the node is drained
WANT=${VLAB_SLURM_CPUS:-$((DET_CPUS > 4 ? DET_CPUS : 4))}
if [[ $WANT == detected || $WANT == "$DET_CPUS" ]]; then
  NODE_CPUS="CPUs=$DET_CPUS Boards=$(hw Boards) SocketsPerBoard=$(hw SocketsPerBoard) CoresPerSocket=$(hw CoresPerSocket) ThreadsPerCore=$(hw ThreadsPerCore)"
  CPUS=$DET_CPUS
else
  [[ $WANT =~ ^[1-9][0-9]*$ ]] || die "VLAB_SLURM_CPUS must be a positive integer or 'detected'"
  # One core per CPU so CR_Core hands out single CPUs; allowed by config_overrides.
  NODE_CPUS="CPUs=$WANT Boards=1 SocketsPerBoard=1 CoresPerSocket=$WANT ThreadsPerCore=1"
  CPUS=$WANT
fi

# ---------------------------------------------------------------- configuration
AUTHINFO="cred_expire=10,socket=$MUNGE_SOCK"
cat >"$CONF.new" <<EOF
# Generated by slurm/localcluster/start.sh: private single-node test cluster.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job may start again after 10 s instead of 120 s.
AuthInfo=$AUTHINFO
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGD/slurmctld.log
SlurmdLogFile=$LOGD/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# cgroup plugins start but every job step hangs in containers/sandboxes without cgroup access.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
# Cores are the consumable; memory is not (with CR_Core_Memory each job takes the whole node).
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
# Lets the node advertise more CPUs than slurmd detects (so 4 array tasks run at once).
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# For slurmdbd connections the munge socket is taken from AccountingStoragePass, not AuthInfo.
AccountingStoragePass=$MUNGE_SOCK
JobCompType=jobcomp/none
MailProg=/bin/true
NodeName=$HOST NodeAddr=127.0.0.1 NodeHostname=$HOST $NODE_CPUS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
mv "$CONF.new" "$CONF"
chmod 644 "$CONF"

if [[ ! -s $DIR/mysql.pass ]]; then
  (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DIR/mysql.pass")
fi
DB_PASS=$(<"$DIR/mysql.pass")
(
  umask 077
  cat >"$DIR/slurmdbd.conf" <<EOF
# Generated by slurm/localcluster/start.sh (must be mode 600, owned by SlurmUser).
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=$HOST
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGD/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
)
chown root:root "$DIR/slurmdbd.conf"
chmod 600 "$DIR/slurmdbd.conf"
export SLURM_CONF=$CONF # slurmdbd reads slurmdbd.conf from the directory of SLURM_CONF

check_port() {
  port_in_use "$1" && die "TCP port $1 ($2) is already in use; set VLAB_SLURM_PORT_BASE to another base"
  return 0
}

# ---------------------------------------------------------------- munged
if ! alive "$MUNGE/munged.pid" munged; then
  if [[ ! -s $MUNGE/munge.key ]]; then
    (umask 077 && dd if=/dev/urandom of="$MUNGE/munge.key" bs=1024 count=1 status=none)
  fi
  chown munge:munge "$MUNGE/munge.key"
  chmod 400 "$MUNGE/munge.key"
  log "starting munged"
  runuser -u munge -- munged --key-file="$MUNGE/munge.key" --socket="$MUNGE_SOCK" \
    --pid-file="$MUNGE/munged.pid" --log-file="$MUNGE/munged.log" --seed-file="$MUNGE/munged.seed" \
    </dev/null >>"$LOGD/munged.out" 2>&1 3>&- || die "munged failed to start; see $MUNGE/munged.log"
fi
munge_ok() { munge -S "$MUNGE_SOCK" -n | unmunge -S "$MUNGE_SOCK"; }
wait_for "$TIMEOUT" munged munge_ok || die "munged does not answer; see $MUNGE/munged.log"

# ---------------------------------------------------------------- mariadb
if ! alive "$RUN/mariadbd.pid" mariadbd; then
  check_port "$DB_PORT" mariadb
  if [[ ! -d $DB/data/mysql ]]; then
    log "initialising MariaDB in $DB/data"
    runuser -u mysql -- mkdir -p "$DB/data"
    mariadb-install-db --no-defaults --user=mysql --datadir="$DB/data" \
      --auth-root-authentication-method=socket --skip-test-db \
      >>"$LOGD/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $LOGD/mariadb-install.log"
  fi
  log "starting mariadbd"
  setsid mariadbd --no-defaults --user=mysql --datadir="$DB/data" --socket="$DB_SOCK" \
    --pid-file="$DB/mysqld.pid" --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
    --log-error="$DB/mariadb.err" --innodb-buffer-pool-size=32M --innodb-log-file-size=8M \
    --skip-log-bin --performance-schema=OFF \
    </dev/null >>"$LOGD/mariadb.out" 2>&1 3>&- &
  # setsid execs in place here (a background child is no process-group leader), so $! is
  # mariadbd. Record it ourselves: its own pid file comes late or never if it fails to start.
  echo $! >"$RUN/mariadbd.pid"
fi
mariadb_up() {
  local pid
  pid=$(<"$RUN/mariadbd.pid")
  [[ $(cat /proc/"$pid"/stat 2>/dev/null) == "$pid "*") "[^Z]* ]] || die "mariadbd exited; see $DB/mariadb.err"
  mariadb-admin --no-defaults --socket="$DB_SOCK" ping
}
wait_for "$TIMEOUT" mariadb mariadb_up || die "mariadb does not answer; see $DB/mariadb.err"
mariadb --no-defaults --socket="$DB_SOCK" -u root <<EOF || die "cannot create the slurm database/user"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF

# ---------------------------------------------------------------- slurmdbd
if ! alive "$RUN/slurmdbd.pid" slurmdbd; then
  check_port "$DBD_PORT" slurmdbd
  log "starting slurmdbd"
  slurmdbd </dev/null >>"$LOGD/slurmdbd.out" 2>&1 3>&- || die "slurmdbd failed to start; see $LOGD/slurmdbd.log"
fi
wait_for "$TIMEOUT" slurmdbd sacctmgr -n list cluster || die "slurmdbd does not answer; see $LOGD/slurmdbd.log"
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
  log "registering cluster $CLUSTER"
  sacctmgr -i add cluster "$CLUSTER" >&2 || die "sacctmgr add cluster failed"
fi

# ---------------------------------------------------------------- slurmctld, slurmd
if ! alive "$RUN/slurmctld.pid" slurmctld; then
  check_port "$CTLD_PORT" slurmctld
  log "starting slurmctld"
  slurmctld -i </dev/null >>"$LOGD/slurmctld.out" 2>&1 3>&- || die "slurmctld failed to start; see $LOGD/slurmctld.log"
fi
wait_for "$TIMEOUT" slurmctld scontrol ping || die "slurmctld does not answer; see $LOGD/slurmctld.log"
if ! alive "$RUN/slurmd.pid" slurmd; then
  check_port "$SLURMD_PORT" slurmd
  log "starting slurmd"
  slurmd </dev/null >>"$LOGD/slurmd.out" 2>&1 3>&- || die "slurmd failed to start; see $LOGD/slurmd.log"
fi

node_idle() {
  local st
  st=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null) || return 1
  case $st in
  idle | mixed | allocated) return 0 ;;
  *drain* | *invalid* | *fail*)
    die "node $HOST is $st: $(sinfo -h -R -o '%E') (see $LOGD/slurmd.log)" ;;
  esac
  return 1
}
end=$((SECONDS + TIMEOUT))
until node_idle; do
  ((SECONDS < end)) || die "node $HOST not idle after ${TIMEOUT}s ($(sinfo -h -N -o %T)); see $LOGD/slurmd.log"
  sleep 0.5
done
log "node $HOST ready ($CPUS CPUs advertised, $DET_CPUS detected)"
wait_for "$TIMEOUT" sacct sacct -n -X || die "sacct does not answer; see $LOGD/slurmdbd.log"

write_env
