#!/usr/bin/env bash
# A single-node Slurm on this machine, for loradeck's Slurm tests and benchmarks.
#
#   scripts/slurm-dev-cluster.sh start    install (Debian 12 packages, as root), configure,
#                                         start munged, slurmctld and slurmd, wait until the
#                                         node is idle and a probe job has run. Idempotent:
#                                         a running cluster is left alone (about 0.1 s).
#   scripts/slurm-dev-cluster.sh stop     cancel every job, wait for them, then stop the
#                                         daemons by their pid files.
#   scripts/slurm-dev-cluster.sh status   say what runs; exit 0 when the cluster is up.
#
# Exit status: 0 done; 1 not running (status); 2 failed; 3 Slurm cannot be installed here
# (not root, no apt-get, or the packages could not be fetched): callers skip, not fail.
#
# The node fakes 4 GPUs (gres files that are symlinks to /dev/null) and declares 16 CPUs
# whatever the machine has (SlurmdParameters=config_overrides), so that GPUs, not cores,
# limit how many jobs run. No systemd: the daemons are started directly.
# State lives in $LORADECK_SLURM_DIR (default /var/lib/loradeck-slurm-dev); the config in
# /etc/slurm, which this script refuses to touch if it did not write it.
set -euo pipefail

DIR=${LORADECK_SLURM_DIR:-/var/lib/loradeck-slurm-dev}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
GRES_CONF=$CONF_DIR/gres.conf
MARKER="# written by loradeck scripts/slurm-dev-cluster.sh"
PACKAGES=(munge slurmctld slurmd slurm-client)
MUNGE_PID=/run/munge/munged.pid
CTLD_PID=$DIR/run/slurmctld.pid
SLURMD_PID=$DIR/run/slurmd.pid
OUR_MUNGED=$DIR/run/munged.started-here  # munged is stopped only if this script started it
GPUS=4
CPUS=16
HOST=$(hostname -s)

say() { printf 'slurm-dev-cluster: %s\n' "$*" >&2; }
die() { say "$1"; exit "${2:-2}"; }

# pid from a pid file if that process is alive and is the named program.
alive_pid() {
    local file=$1 program=$2 pid
    [ -r "$file" ] || return 1
    pid=$(tr -dc '0-9' < "$file")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$program" ] || return 1
    printf '%s\n' "$pid"
}

# Run a Slurm client command with a deadline: they hang for MessageTimeout when
# slurmctld is gone.
sl() { timeout 10 "$@"; }

node_state() { sl sinfo -h -n "$HOST" -o '%T' 2>/dev/null | head -n1 || true; }

wait_for() {  # wait_for SECONDS COMMAND...: status 0 once COMMAND succeeds, 1 at the deadline
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.2
    done
}

installed() {
    command -v sbatch >/dev/null 2>&1 && [ -x /usr/sbin/slurmctld ] \
        && [ -x /usr/sbin/slurmd ] && [ -x /usr/sbin/munged ]
}

install_packages() {
    installed && return 0
    [ "$(id -u)" = 0 ] || die "Slurm is not installed and installing it needs root" 3
    command -v apt-get >/dev/null 2>&1 || die "Slurm is not installed and there is no apt-get" 3
    say "installing ${PACKAGES[*]} (Debian packages)"
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        # Keep the packages from starting their services (there is no systemd here).
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local ok=1
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
        apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null || ok=0
    fi
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$ok" = 1 ] || die "apt-get could not install ${PACKAGES[*]}" 3
    installed || die "the packages installed, but slurmctld, slurmd, sbatch or munged is missing"
}

write_if_changed() {  # write_if_changed FILE (text on stdin); status 0 when it changed
    local file=$1 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat > "$tmp"
    if [ -f "$file" ] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        return 1
    fi
    chmod 644 "$tmp"
    mv -f "$tmp" "$file"
    return 0
}

configure() {  # status 0 when the configuration changed
    if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script; is this a real cluster? \
(remove it, or run the tests against that cluster instead)"
    fi
    mkdir -p "$CONF_DIR" "$DIR"/{state,slurmd,run,log,gpus}
    chmod 755 "$DIR"
    local i changed=1
    for ((i = 0; i < GPUS; i++)); do
        ln -sfn /dev/null "$DIR/gpus/nvidia$i"
    done
    write_if_changed "$CONF" <<EOF && changed=0
$MARKER
# A single-node development cluster; rewritten by "start". Do not use it in production.
ClusterName=loradeck-dev
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=128
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,default_queue_depth=1000,bf_interval=5
DependencyParameters=kill_invalid_depend
MinJobAge=600
ReturnToService=2
KillWait=5
MailProg=/bin/true
SlurmdParameters=config_overrides
GresTypes=gpu
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=16000 Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    write_if_changed "$GRES_CONF" <<EOF && changed=0
$MARKER
AutoDetect=off
Name=gpu File=$DIR/gpus/nvidia[0-$((GPUS - 1))]
EOF
    return "$changed"
}

start_munge() {
    alive_pid "$MUNGE_PID" munged >/dev/null && return 0
    if [ ! -s /etc/munge/munge.key ]; then
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --force >/dev/null
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged --force
    wait_for 10 alive_pid "$MUNGE_PID" munged >/dev/null || die "munged did not start"
    touch "$OUR_MUNGED"
}

start_daemons() {  # status 0 when something had to be started
    local started=1
    if ! alive_pid "$CTLD_PID" slurmctld >/dev/null; then
        /usr/sbin/slurmctld || die "slurmctld did not start; see $DIR/log/slurmctld.log"
        started=0
    fi
    if ! wait_for 20 sh -c 'timeout 5 scontrol ping 2>/dev/null | grep -q UP'; then
        die "slurmctld does not answer; see $DIR/log/slurmctld.log"
    fi
    if ! alive_pid "$SLURMD_PID" slurmd >/dev/null; then
        /usr/sbin/slurmd || die "slurmd did not start; see $DIR/log/slurmd.log"
        started=0
    fi
    return "$started"
}

node_ready() {
    local state
    state=$(node_state)
    case "$state" in
        idle* | mixed* | allocated* | completing*) return 0 ;;
        drain* | down* | fail*)
            sl scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
            return 1
            ;;
        *) return 1 ;;
    esac
}

probe() {
    # The first job after a start waits for slurmctld's first scheduling pass. (sbatch
    # --wait would add its own polling delay of several seconds.)
    local t0=$SECONDS id
    id=$(sl sbatch --parsable -o /dev/null -J loradeck-probe --wrap true) \
        || die "the probe job was refused; see $DIR/log/slurmctld.log"
    id=${id%%;*}
    if ! wait_for 60 sh -c "timeout 10 scontrol show job -o $id 2>/dev/null \
            | grep -q 'JobState=COMPLETED'"; then
        die "the probe job $id did not complete; see $DIR/log/slurmctld.log"
    fi
    say "probe job ran ($((SECONDS - t0)) s)"
}

cmd_start() {
    if alive_pid "$CTLD_PID" slurmctld >/dev/null && alive_pid "$SLURMD_PID" slurmd >/dev/null \
        && alive_pid "$MUNGE_PID" munged >/dev/null && grep -qF "$MARKER" "$CONF" 2>/dev/null \
        && grep -q "^SlurmctldHost=$HOST(" "$CONF" && node_ready; then
        say "already running (node $HOST: $(node_state))"
        return 0
    fi
    install_packages
    [ "$(id -u)" = 0 ] || die "starting the dev cluster needs root (munged runs as munge)" 3
    if configure; then
        say "configuration written; restarting any daemons that run"
        stop_daemons
    fi
    start_munge
    local fresh=1
    start_daemons && fresh=0
    if ! wait_for 30 node_ready; then
        die "node $HOST is not idle (state: $(node_state)); see $DIR/log/slurmd.log"
    fi
    [ "$fresh" = 0 ] && probe
    say "running: node $HOST with $GPUS GPUs and $CPUS CPUs (state $(node_state))"
}

stop_pid() {  # stop_pid PIDFILE PROGRAM
    local pid
    pid=$(alive_pid "$1" "$2") || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    if ! wait_for 15 sh -c "! kill -0 $pid 2>/dev/null"; then
        say "$2 (pid $pid) ignored SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

stop_daemons() {
    stop_pid "$SLURMD_PID" slurmd
    stop_pid "$CTLD_PID" slurmctld
}

cancel_jobs() {
    alive_pid "$CTLD_PID" slurmctld >/dev/null || return 0
    local ids
    ids=$(sl squeue -h -t PENDING,RUNNING,SUSPENDED,CONFIGURING,COMPLETING -o '%A' 2>/dev/null \
        | tr '\n' ' ') || true
    [ -n "${ids// /}" ] || return 0
    say "cancelling jobs: $ids"
    # shellcheck disable=SC2086  # a list of numeric ids
    sl scancel $ids 2>/dev/null || true
    # Stopping slurmd does not end running job steps: wait until Slurm has ended them.
    if ! wait_for 30 sh -c \
        '[ -z "$(timeout 10 squeue -h -t RUNNING,COMPLETING,CONFIGURING,SUSPENDED -o %A)" ]'; then
        say "some jobs are still ending; stopping anyway"
    fi
}

cmd_stop() {
    if ! grep -qF "$MARKER" "$CONF" 2>/dev/null; then
        say "no dev cluster here ($CONF was not written by this script); nothing to stop"
        return 0
    fi
    cancel_jobs
    stop_daemons
    if [ -e "$OUR_MUNGED" ]; then
        stop_pid "$MUNGE_PID" munged
        rm -f "$OUR_MUNGED"
    fi
    say "stopped"
}

cmd_status() {
    local up=0 name file pid
    for name in munged slurmctld slurmd; do
        case $name in
            munged) file=$MUNGE_PID ;;
            slurmctld) file=$CTLD_PID ;;
            slurmd) file=$SLURMD_PID ;;
        esac
        if pid=$(alive_pid "$file" "$name"); then
            printf '%-10s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-10s not running\n' "$name"
            up=1
        fi
    done
    if [ "$up" = 0 ]; then
        sl sinfo -N -O 'NodeHost,StateLong,CPUsState,Gres,GresUsed' || up=1
    fi
    return "$up"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) die "usage: $0 start|stop|status" ;;
esac
