#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, to try profiles/slurm before a real cluster
# (docs/cluster.md). Debian/Ubuntu packages, run as root:
#   apt-get install -y slurm-wlm munge slurmdbd mariadb-server
#   profiles/slurm/local-cluster.sh start    # munge, MariaDB, slurmdbd, slurmctld, slurmd
#   profiles/slurm/local-cluster.sh status   # the daemons, sinfo, the accounting cluster
#   profiles/slurm/local-cluster.sh stop     # every daemon it started, by the pid it wrote
# The executor plugin asks `sacct` for job states, so accounting runs too: slurmdbd on a local
# MariaDB (no network port), with the cluster, an account and the calling user registered.
# Idempotent: start skips what runs, stop what does not. It writes /etc/slurm/slurm.conf and
# slurmdbd.conf while the cluster runs (refusing to replace files it did not write), keeps its state and logs under
# $OWL_SLURM_STATE (default /var/lib/owl-slurm) and never touches another daemon.
#
# OWL_SLURM_CPUS (default 2) cores are given to jobs, and slurmd runs under `nice`, so that the
# cluster's jobs yield to other work on a shared machine.
set -euo pipefail

CLUSTER=owl-local
PARTITION=owl-local
ACCOUNT=owl
NODE=$(hostname -s)
CPUS=${OWL_SLURM_CPUS:-2}
STATE=${OWL_SLURM_STATE:-/var/lib/owl-slurm}
CONF_DIR=/etc/slurm
MARK="# written by profiles/slurm/local-cluster.sh"
DB_SOCKET=$STATE/mysqld/mysqld.sock
JOB_USER=${SUDO_USER:-$(id -un)}

die() { echo "local-cluster.sh: $*" >&2; exit 1; }

# daemon name -> pid file (each daemon writes its own; stop kills exactly these pids)
declare -A PIDFILE=(
  [munged]=$STATE/munge/munged.pid
  [mariadbd]=$STATE/mysqld/mariadbd.pid
  [slurmdbd]=$STATE/run/slurmdbd.pid
  [slurmctld]=$STATE/run/slurmctld.pid
  [slurmd]=$STATE/run/slurmd.pid
)
ORDER=(munged mariadbd slurmdbd slurmctld slurmd)

running() {  # running <daemon>: its pid file names a live process of that name
  local pid
  pid=$(cat "${PIDFILE[$1]}" 2>/dev/null) || return 1
  [[ -n $pid && -d /proc/$pid ]] && [[ $(cat /proc/$pid/comm 2>/dev/null) == "$1"* ]]
}

wait_for() {  # wait_for <seconds> <what> <command...>
  local seconds=$1 what=$2; shift 2
  for _ in $(seq "$seconds"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  die "$what did not come up in ${seconds}s (logs: $STATE/log/)"
}

write_conf() {  # write_conf <path> <mode> <owner>, content on stdin; never replaces a foreign file
  local path=$1 mode=$2 owner=$3 tmp
  if [[ -e $path ]] && ! grep -qF "$MARK" "$path"; then
    die "$path exists and was not written by this script; move it away to use the local cluster"
  fi
  tmp=$(mktemp)
  cat >"$tmp"
  install -m "$mode" -o "$owner" -g "$owner" "$tmp" "$path"
  rm -f "$tmp"
}

memory_mb() {  # the node's memory for jobs: all of it less 1 GiB for the daemons and the system
  free -m | awk '/^Mem:/ {print $2 - 1024}'
}

configure() {
  for cmd in munged mungekey mariadbd mariadb slurmdbd slurmctld slurmd sacctmgr sbatch; do
    command -v "$cmd" >/dev/null || [[ -x /usr/sbin/$cmd ]] ||
      die "$cmd not found; install: apt-get install -y slurm-wlm munge slurmdbd mariadb-server"
  done
  mkdir -p "$STATE"/{log,run,slurmctld,slurmd,munge,mysqld} "$CONF_DIR"
  chown slurm:slurm "$STATE"/{log,run,slurmctld}
  chown munge:munge "$STATE/munge"
  chown mysql:mysql "$STATE/mysqld"
  chmod 0755 "$STATE/munge"  # munged: the socket's folder open to all
  if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
  fi
  # slurmdbd's database password: made once, readable by root and slurm only
  [[ -s $STATE/db.pass ]] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$STATE/db.pass")

  write_conf "$CONF_DIR/slurmdbd.conf" 0600 slurm <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=${PIDFILE[slurmdbd]}
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
# localhost: through the socket; MariaDB listens on no port
StorageHost=localhost
StorageUser=slurm
StoragePass=$(cat "$STATE/db.pass")
StorageLoc=slurm_acct_db
EOF

  # One node of CPUS cores; no cgroups (a container has no delegated cgroup tree):
  # processes are tracked through /proc and jobs are not confined (TaskPlugin none).
  write_conf "$CONF_DIR/slurm.conf" 0644 root <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=${PIDFILE[slurmctld]}
SlurmdPidFile=${PIDFILE[slurmd]}
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=300
SlurmdParameters=config_overrides
NodeName=$NODE CPUs=$CPUS RealMemory=$(memory_mb) State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  running munged && return
  runuser -u munge -- munged --pid-file="${PIDFILE[munged]}" --socket="$STATE/munge/munge.socket.2" \
    --log-file="$STATE/munge/munged.log"
  # the clients (sbatch, the daemons) look for the socket at its standard place
  mkdir -p /run/munge && chown munge:munge /run/munge
  ln -sfn "$STATE/munge/munge.socket.2" /run/munge/munge.socket.2
  wait_for 10 munged munge -n
}

start_mariadb() {
  if ! running mariadbd; then
    setsid mariadbd --user=mysql --datadir=/var/lib/mysql --skip-networking --socket="$DB_SOCKET" \
      --pid-file="${PIDFILE[mariadbd]}" --log-error="$STATE/mysqld/mariadb.log" \
      --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
      </dev/null >/dev/null 2>&1 &
    wait_for 30 MariaDB mariadb --socket="$DB_SOCKET" -e "SELECT 1"
  fi
  # slurmdbd's database and user (root logs in through the socket, as Debian sets it up)
  mariadb --socket="$DB_SOCKET" <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$(cat "$STATE/db.pass")';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
  # libmysqlclient's "localhost" means Debian's default socket path
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  ln -sfn "$DB_SOCKET" /run/mysqld/mysqld.sock
}

register() {  # the cluster, an account and the job user in the accounting database (idempotent)
  sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
  sacctmgr -i -Q add account "$ACCOUNT" Cluster="$CLUSTER" Description="OWL kit" Organization=owl >/dev/null 2>&1 || true
  sacctmgr -i -Q add user "$JOB_USER" Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null 2>&1 || true
  sacctmgr -i -Q modify user "$JOB_USER" set DefaultAccount="$ACCOUNT" >/dev/null 2>&1 || true
  [[ -n $(sacctmgr -n -P show assoc where user="$JOB_USER" account="$ACCOUNT" format=user) ]] ||
    die "could not register user $JOB_USER in account $ACCOUNT (sacctmgr; logs: $STATE/log/)"
}

start() {
  [[ $(id -u) == 0 ]] || die "run as root (it starts system daemons)"
  configure
  start_munge
  start_mariadb
  running slurmdbd || slurmdbd
  wait_for 30 slurmdbd sacctmgr -n show cluster
  register
  running slurmctld || slurmctld
  wait_for 30 slurmctld scontrol ping
  running slurmd || nice -n 10 slurmd
  wait_for 30 "node $NODE" bash -c "sinfo -h -n $NODE -o %T | grep -Eq '^(idle|mixed|allocated)'"
  status
}

stop() {
  local i daemon pid conf
  for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do
    daemon=${ORDER[i]}
    running "$daemon" || continue
    pid=$(cat "${PIDFILE[$daemon]}")
    kill "$pid"
    for _ in $(seq 30); do [[ -d /proc/$pid ]] || break; sleep 1; done
    [[ -d /proc/$pid ]] && die "$daemon (pid $pid) did not stop in 30 s"
    echo "stopped $daemon (pid $pid)"
  done
  # Without its daemons, a slurm.conf makes every SLURM client wait for a controller (the
  # executor plugin runs `scontrol show config` whenever snakemake starts): take ours away.
  for conf in "$CONF_DIR/slurm.conf" "$CONF_DIR/slurmdbd.conf"; do
    if [[ -e $conf ]] && grep -qF "$MARK" "$conf"; then rm -f "$conf"; fi
  done
}

status() {
  local daemon down=0
  for daemon in "${ORDER[@]}"; do
    if running "$daemon"; then echo "$daemon: running (pid $(cat "${PIDFILE[$daemon]}"))"
    else echo "$daemon: stopped"; down=1; fi
  done
  if ((down == 0)); then
    sinfo -o "%P %a %D %T %c %m %N"
    sacctmgr -n -P show assoc where cluster="$CLUSTER" format=cluster,account,user
  fi
  return $down
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
