#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the `slurm` tests and for trying the SLURM
# executor without a real cluster: Debian's slurm-wlm + munge, started without systemd.
#
#   sudo scripts/slurm_local.sh start    # install (apt) when absent, start, wait until idle
#   sudo scripts/slurm_local.sh status   # daemons and sinfo; exit 0 when the nodes answer
#   sudo scripts/slurm_local.sh stop     # stop the daemons this script started
#
# Two partitions, both on this host (two slurmd daemons, one per node name):
#   cpu  (default)  node <host>      no GRES
#   gpu             node <host>-gpu  Gres=gpu:2, backed by DUMMY device files
#                   /dev/llmscale-dummy-gpu{0,1} (character devices with /dev/null's numbers).
# The GPU partition exercises the scheduler side only (the --gpus request, the GRES in the
# sbatch script, CUDA_VISIBLE_DEVICES set by SLURM): there is no GPU behind it, and torch sees
# none. Accounting is off (no slurmdbd), as on many small clusters: `sacct` fails.
#
# Idempotent: a running cluster with the same slurm.conf is left as it is (drained nodes are
# resumed). It refuses to replace an /etc/slurm/slurm.conf that it did not write.
# Environment: SLURM_LOCAL_CPUS (CPUs per node; default: this machine's), SLURM_LOCAL_WAIT_S
# (how long to wait for the nodes; default 90).
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
GRES_CONF=$CONF_DIR/gres.conf
MARK="# llmscale one-node test cluster (scripts/slurm_local.sh)"
STATE=/var/spool/llmscale-slurm
RUN=/run/llmscale-slurm
LOGS=/var/log/llmscale-slurm
HOST=$(hostname -s)
GPU_NODE="$HOST-gpu"
GPU_PORT=6820
WAIT_S=${SLURM_LOCAL_WAIT_S:-90}

say() { echo "slurm_local: $*" >&2; }
die() { say "$*"; exit 1; }

need_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages, writes $CONF and starts daemons); try: sudo $0 $1"
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurm-wlm)
    command -v munged >/dev/null || missing+=(munge)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them (Debian/Ubuntu only)"
    say "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}

write_config() {
    local cpus mem
    cpus=${SLURM_LOCAL_CPUS:-$(nproc)}
    # Leave the OS some memory; RealMemory is checked against the hardware at registration.
    mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 9 / 10 ))
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; refusing to replace a real cluster's configuration"
    fi
    mkdir -p "$CONF_DIR" "$STATE" "$RUN" "$LOGS"
    local new
    new=$(cat <<EOF
$MARK
ClusterName=llmscale
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job may start again only after the credential lifetime (default 120 s); short here
# so the requeue tests do not idle for minutes. Long enough for a local launch.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd-%n.log
# No systemd, no cgroups here: track processes by parentage, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Accept the node as configured even where the hardware reports less (the same cores serve both
# node names), and bring a node that went down back on its own.
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
# A job at its time limit gets SIGTERM, then SIGKILL after KillWait seconds.
KillWait=10
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Feature=llmscale State=UNKNOWN
NodeName=$GPU_NODE NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$GPU_PORT CPUs=$cpus RealMemory=$mem Gres=gpu:2 Feature=llmscale State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$GPU_NODE MaxTime=INFINITE State=UP
EOF
)
    local gres
    gres=$(printf '%s\n%s\n' "$MARK" \
        "NodeName=$GPU_NODE Name=gpu File=/dev/llmscale-dummy-gpu[0-1] AutoDetect=off")
    CHANGED=0
    if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$new" ]; then
        printf '%s\n' "$new" >"$CONF.tmp" && mv "$CONF.tmp" "$CONF"
        CHANGED=1
    fi
    if [ ! -f "$GRES_CONF" ] || [ "$(cat "$GRES_CONF")" != "$gres" ]; then
        printf '%s\n' "$gres" >"$GRES_CONF.tmp" && mv "$GRES_CONF.tmp" "$GRES_CONF"
        CHANGED=1
    fi
    # The dummy GPUs: device files SLURM can stat (it records their major/minor numbers).
    for i in 0 1; do
        [ -c /dev/llmscale-dummy-gpu$i ] || mknod -m 666 /dev/llmscale-dummy-gpu$i c 1 3
    done
}

# /proc, not kill -0: status works for users who may not signal root's daemons
alive() { [ -f "$1" ] && [ -d "/proc/$(cat "$1")" ]; }

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    [ -f /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key; }
    runuser -u munge -- munged || die "munged failed to start (see /var/log/munge/munged.log)"
    local i
    for i in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "munged started but munge -n | unmunge fails (see /var/log/munge/munged.log)"
}

start_daemons() {
    if [ "$CHANGED" = 1 ] && alive "$RUN/slurmctld.pid"; then
        say "slurm.conf changed: restarting the daemons"
        stop_daemons
    fi
    if ! alive "$RUN/slurmctld.pid"; then
        # -c: a fresh test cluster; jobs of an earlier session died with it.
        slurmctld -c || die "slurmctld failed to start (see $LOGS/slurmctld.log)"
    fi
    local node
    for node in "$HOST" "$GPU_NODE"; do
        alive "$RUN/slurmd-$node.pid" || slurmd -N "$node" \
            || die "slurmd -N $node failed to start (see $LOGS/slurmd-$node.log)"
    done
}

stop_daemons() {
    local pidfile pid i
    for pidfile in "$RUN"/slurmd-*.pid "$RUN/slurmctld.pid"; do
        alive "$pidfile" || continue
        pid=$(cat "$pidfile")
        kill "$pid"
        for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        rm -f "$pidfile"
    done
    return 0
}

# Wait until every node answers and is idle (or running jobs); resume nodes left drained or
# invalid by an earlier configuration.
wait_idle() {
    local deadline=$((SECONDS + WAIT_S)) states line name state
    while [ $SECONDS -lt $deadline ]; do
        states=$(sinfo -h -N -o '%N %t' 2>/dev/null | sort -u) || states=""
        if [ -n "$states" ]; then
            local ready=1
            while read -r name state; do
                case "$state" in
                    idle|mix|alloc|comp) ;;
                    drain*|drng|inval|down*|fail*)
                        ready=0
                        scontrol update nodename="$name" state=resume 2>/dev/null || true ;;
                    *) ready=0 ;;
                esac
            done <<<"$states"
            if [ $ready = 1 ]; then
                say "cluster up: $(echo "$states" | tr '\n' ' ')"
                return 0
            fi
        fi
        sleep 1
    done
    say "nodes not ready after ${WAIT_S}s:"
    sinfo -N -l >&2 || true
    die "see $LOGS/"
}

status() {
    local ok=0 pidfile
    for pidfile in "$RUN/slurmctld.pid" "$RUN/slurmd-$HOST.pid" "$RUN/slurmd-$GPU_NODE.pid"; do
        if alive "$pidfile"; then echo "$(basename "$pidfile" .pid): running (pid $(cat "$pidfile"))"
        else echo "$(basename "$pidfile" .pid): not running"; ok=1; fi
    done
    command -v sinfo >/dev/null && sinfo -N -o '%N %P %t %c %G' 2>&1 || ok=1
    return $ok
}

case "${1:-}" in
    start)
        need_root start
        install_packages
        write_config
        start_munge
        start_daemons
        wait_idle ;;
    stop)
        need_root stop
        stop_daemons
        say "stopped" ;;
    status)
        status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2 ;;
esac
