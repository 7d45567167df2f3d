#!/usr/bin/env bash
# A two-node SLURM cluster on this machine, for rehearsing cluster jobs (docs/scaling.md, "Clusters").
#   sudo scripts/cluster/local_slurm.sh start    # install slurm-wlm + munge if missing, start, print sinfo
#   sudo scripts/cluster/local_slurm.sh status   # sinfo, exit 0 when both nodes answer, else 1
#   sudo scripts/cluster/local_slurm.sh stop     # stop the daemons this script started
# Nodes n1 and n2 are two slurmd processes on this host (loopback only, NodeAddr 127.0.0.1), one
# slurmctld manages them. Start is idempotent: a running cluster is left as it is.
# Settings (environment): LOCAL_SLURM_CTLD_PORT (6817), LOCAL_SLURM_NODE_PORT (17001; n2 uses the next
# port), LOCAL_SLURM_CPUS (CPUs each node offers; 1). Bad input: one "error: ..." line, exit 2.
set -euo pipefail

CTLD_PORT="${LOCAL_SLURM_CTLD_PORT:-6817}"
NODE_PORT="${LOCAL_SLURM_NODE_PORT:-17001}"
CPUS="${LOCAL_SLURM_CPUS:-1}"
CONF=/etc/slurm/slurm.conf
MARK="# written by imagelab scripts/cluster/local_slurm.sh"
STATE=/var/lib/imagelab-slurm
RUN=/run/imagelab-slurm
LOGS=/var/log/imagelab-slurm
NODES=(n1 n2)

die() { echo "error: $*" >&2; exit 2; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

cluster_up() {
  # both nodes registered and answering (idle, allocated or mixed; not down/unknown)
  local states
  states="$(timeout 10 sinfo -h -N -o '%N %T' 2>/dev/null)" || return 1
  for node in "${NODES[@]}"; do
    grep -Eq "^$node (idle|allocated|mixed|completing)" <<<"$states" || return 1
  done
}

need_root() {
  [[ "$(id -u)" == 0 ]] || die "local_slurm.sh $1 must run as root (it installs packages and starts daemons): sudo $0 $1"
}

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
  command -v apt-get >/dev/null || die "slurm-wlm and munge are not installed and apt-get is missing: install SLURM and munge with your package manager"
  echo "installing slurm-wlm and munge (apt-get, about a minute) ..."
  apt-get update -qq >/dev/null || die "apt-get update failed (no package registry reachable?)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null \
    || die "apt-get install slurm-wlm munge failed"
}

write_config() {
  if [[ -f "$CONF" ]] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; move it away to use the local cluster"
  fi
  local host
  host="$(hostname)"
  mkdir -p "$STATE" "$RUN" "$LOGS" /etc/slurm
  cat >"$CONF" <<CONFEOF
$MARK
ClusterName=imagelab-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
# one host runs both nodes: every per-node path contains %n, else the second slurmd ends the first
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd-%n.log
# no cgroups in containers: track processes through /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# no accounting database (sacct has nothing to read; submitit falls back to its own files)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmctldTimeout=30
SlurmdTimeout=30
# seconds between SIGTERM and SIGKILL at a time limit or scancel: SLURM's default, as most clusters keep it
KillWait=30
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=$NODE_PORT CPUs=$CPUS State=UNKNOWN
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=$((NODE_PORT + 1)) CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
CONFEOF
  mkdir -p "$STATE/ctld" "$STATE/n1" "$STATE/n2"
  grep -Eq '^[^#]*[[:space:]]n1([[:space:]]|$)' /etc/hosts || echo "127.0.0.1 n1 n2 $MARK" >>/etc/hosts
}

start_munge() {
  [[ -S /run/munge/munge.socket.2 ]] && munge -n >/dev/null 2>&1 && return
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  [[ -f /etc/munge/munge.key ]] || mungekey --create >/dev/null
  chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
  runuser -u munge -- munged || die "munged did not start (see /var/log/munge/munged.log)"
}

start() {
  need_root start
  install_packages
  if [[ -f "$CONF" ]] && grep -qF "$MARK" "$CONF" && cluster_up; then
    sinfo
    return
  fi
  write_config
  start_munge
  if ! pid_alive "$RUN/slurmctld.pid"; then
    port_busy "$CTLD_PORT" && die "port $CTLD_PORT (slurmctld) is in use; pick another with LOCAL_SLURM_CTLD_PORT=<port>"
    slurmctld || die "slurmctld did not start (see $LOGS/slurmctld.log)"
  fi
  local port=$NODE_PORT
  for node in "${NODES[@]}"; do
    if ! pid_alive "$RUN/slurmd-$node.pid"; then
      port_busy "$port" && die "port $port (slurmd $node) is in use; pick another with LOCAL_SLURM_NODE_PORT=<port>"
      slurmd -N "$node" || die "slurmd -N $node did not start (see $LOGS/slurmd-$node.log)"
    fi
    port=$((port + 1))
  done
  for _ in $(seq 60); do
    if cluster_up; then
      sinfo
      return
    fi
    sleep 0.5
  done
  scontrol update nodename=n1,n2 state=resume >/dev/null 2>&1 || true
  cluster_up || die "the nodes did not come up within 30 s (see $LOGS/)"
  sinfo
}

stop() {
  need_root stop
  for pidfile in "$RUN"/slurmd-*.pid "$RUN/slurmctld.pid"; do
    if pid_alive "$pidfile"; then
      kill "$(cat "$pidfile")"
    fi
  done
  for _ in $(seq 40); do
    compgen -G "$RUN/*.pid" >/dev/null || break
    local alive=0
    for pidfile in "$RUN"/*.pid; do pid_alive "$pidfile" && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.5
  done
  echo "local SLURM cluster stopped"
}

status() {
  if command -v sinfo >/dev/null && [[ -f "$CONF" ]] && cluster_up; then
    sinfo
  else
    echo "local SLURM cluster is not running (start it with: $0 start)"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
