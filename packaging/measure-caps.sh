#!/bin/bash
# Measures the capability set the systemd unit gives the agent
# (`cargo xtask caps`): runs faultline-agent as root under a reduced bounding
# set with no_new_privs (what the unit's CapabilityBoundingSet= and
# NoNewPrivileges= do to a root service), starts one short experiment per
# fault kind (and scope) that arms with every capability, then drops each
# capability of the set in turn and reports which kinds break and how.
#
#   packaging/measure-caps.sh AGENT FAULTCTL [CAP,CAP,...]
#
# The set defaults to the unit's CapabilityBoundingSet. Output: a markdown
# table on stdout (progress on stderr); exit 1 if a kind that arms with every
# capability fails with the set, or if a capability of the set breaks nothing
# when dropped (then it is not needed and the set is not the smallest).
#
# Targets are what a real host has: a cgroup delegated to another user
# (owned by nobody, like a user session's), processes of another user, a
# filesystem whose directory belongs to that user. Everything is created here
# and removed on exit: a veth pair with no address (no packet leaves),
# a loop-mounted ext4 file system, cgroups, target processes.
set -euo pipefail

AGENT=${1:?usage: measure-caps.sh AGENT FAULTCTL [CAPS]}
FAULTCTL=${2:?usage: measure-caps.sh AGENT FAULTCTL [CAPS]}
HERE=$(cd "$(dirname "$0")" && pwd)
UNIT="$HERE/faultline-agent.service"
SET=${3:-$(sed -n 's/^CapabilityBoundingSet=//p' "$UNIT" | tr ' ' ',' | tr 'A-Z' 'a-z')}
[ "$(id -u)" = 0 ] || { echo "measure-caps.sh: must run as root" >&2; exit 2; }

WORK=$(mktemp -d /tmp/fl-caps-XXXXXX)
CGROOT=$(findmnt -n -t cgroup2 -o TARGET | head -1)
CG="$CGROOT/fl-caps-$$"
IFACE="flcaps$$"
IFACE=${IFACE:0:14}
MNT="$WORK/mnt"
PIDS=()
AGENT_PID=

log() { echo "measure-caps: $*" >&2; }

cleanup() {
    set +e
    [ -f "$WORK/agent.pid" ] && kill -KILL "$(cat "$WORK/agent.pid")" 2>/dev/null
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    sleep 0.2
    mountpoint -q "$MNT" && umount "$MNT"
    ip link del "$IFACE" 2>/dev/null
    [ -d "$CG" ] && find "$CG" -depth -type d -exec rmdir {} \; 2>/dev/null
    [ -n "${KEEP_TRACE:-}" ] && cp "$WORK/trace-summary.txt" "$KEEP_TRACE" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- targets ---
ip link add "$IFACE" type veth peer name "${IFACE}p"
ip link set "$IFACE" up; ip link set "${IFACE}p" up
mkdir "$CG"
chown -R 65534:65534 "$CG"
# Another user's processes in another session (SIGCONT within a session
# needs no capability), as a service's are.
# (An array, not a function: $! is then the sleep itself, as setsid and
# setpriv exec in place.)
AS_NOBODY=(setsid setpriv --reuid=65534 --regid=65534 --clear-groups)
"${AS_NOBODY[@]}" sleep 3600 & PIDS+=($!); IN_CG=$!
echo "$IN_CG" > "$CG/cgroup.procs"
"${AS_NOBODY[@]}" sleep 3600 & PIDS+=($!); KILL_PID=$!
"${AS_NOBODY[@]}" sleep 3600 & PIDS+=($!); PAUSE_PID=$!
sleep 0.2
for p in "${PIDS[@]}"; do
    [ "$(stat -c %u /proc/$p)" = 65534 ] || { log "target $p is not nobody's process"; exit 2; }
done
truncate -s 1400M "$WORK/fs.img"
mkfs.ext4 -q -F "$WORK/fs.img"
mkdir "$MNT"
mount -o loop "$WORK/fs.img" "$MNT"
chown 65534:65534 "$MNT"
chmod 0755 "$MNT"

# One experiment per kind and scope: NAME|faultctl inject arguments.
D="--duration 30s"
CASES=(
    "syscall_error|syscall-error --syscall connect --errno ECONNREFUSED --port 9 --probability 1 --cgroup $CG $D"
    "syscall_signal|syscall-signal --syscall getppid --signal CONT --probability 1 --cgroup $CG $D"
    "packet_loss (cgroup)|packet-loss --probability 0.5 --cgroup $CG $D"
    "packet_loss (interface)|packet-loss --probability 0.5 --interface $IFACE $D"
    "blackhole (cgroup)|blackhole --direction both --cgroup $CG $D"
    "blackhole (interface)|blackhole --interface $IFACE $D"
    "duplicate|duplicate --probability 0.1 --interface $IFACE $D"
    "corrupt|corrupt --probability 0.1 --interface $IFACE $D"
    "bandwidth (cgroup)|bandwidth --rate 10mbit --cgroup $CG $D"
    "bandwidth (interface)|bandwidth --rate 10mbit --interface $IFACE $D"
    "latency|latency --delay 10ms --interface $IFACE $D"
    "dns_error (cgroup)|dns-error --domain example.invalid --cgroup $CG $D"
    "dns_error (interface)|dns-error --domain example.invalid --failure nxdomain --interface $IFACE $D"
    "cpu_pressure|cpu-pressure --load 5 --cpus 1 --cgroup $CG $D"
    "memory_pressure|memory-pressure --size 32MiB --cgroup $CG $D"
    "disk_fill|disk-fill --path $MNT --size 16MiB $D"
    "io_pressure|io-pressure --path $MNT --rate 1MiB/s --cgroup $CG $D"
    "process_kill|process-kill --signal WINCH --pid $KILL_PID $D"
    "process_pause (pid)|process-pause --pid $PAUSE_PID $D"
    "process_pause (cgroup)|process-pause --cgroup $CG $D"
)

# AGENT_PID is the agent, WAIT_PID what was started (strace, when traced).
stop_agent() {
    [ -n "$AGENT_PID" ] || return 0
    kill -TERM "$AGENT_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$AGENT_PID" 2>/dev/null || true
    wait "$WAIT_PID" 2>/dev/null || true
    AGENT_PID=
}

# start_agent CAPS|all: the agent under that bounding set, with no_new_privs.
start_agent() {
    local caps=$1 dir="$WORK/run-$2"
    mkdir -p "$dir"
    local wrap=(setpriv --no-new-privs)
    # The set's own run, traced: which system calls the agent (and its
    # children) made, for the check against the unit's SystemCallFilter.
    [ "$2" = set ] && wrap=(strace -f -qq -y -s 256 -o "$WORK/trace.txt" "${wrap[@]}")
    if [ "$caps" != all ]; then
        local b=-all
        [ -n "$caps" ] && b="-all,$(echo "$caps" | sed 's/\(^\|,\)cap_/\1+/g')"
        wrap+=(--bounding-set="$b" --inh-caps=-all)
    fi
    "${wrap[@]}" "$AGENT" --socket "$dir/agent.sock" --state-dir "$dir/state" --log info \
        >/dev/null 2>"$dir/agent.log" &
    AGENT_PID=$!
    WAIT_PID=$!
    if [ "$2" = set ]; then
        # strace's child, once it has exec'd the agent.
        for _ in $(seq 100); do
            AGENT_PID=$(pgrep -P "$WAIT_PID" | head -1) && [ -n "$AGENT_PID" ] &&
                [ "$(readlink /proc/$AGENT_PID/exe)" = "$(readlink -f "$AGENT")" ] && break
            AGENT_PID=
            sleep 0.05
        done
        [ -n "$AGENT_PID" ] || { kill -KILL "$WAIT_PID"; return 1; }
    fi
    echo "$AGENT_PID" > "$WORK/agent.pid"
    # Loading and verifying every program group takes seconds, more on a
    # busy machine.
    for _ in $(seq 1200); do
        grep -q "all program groups probed" "$dir/agent.log" 2>/dev/null && return 0
        kill -0 "$AGENT_PID" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}

# run_cases LABEL CAPS: prints "name<TAB>ok" or "name<TAB>error" per case.
run_cases() {
    local label=$1 caps=$2 dir="$WORK/run-$1" ids=()
    if ! start_agent "$caps" "$label"; then
        local why
        why=$(grep -v '^\s*$' "$dir/agent.log" | tail -1 | sed 's/\x1b\[[0-9;]*m//g')
        stop_agent
        for c in "${CASES[@]}"; do printf '%s\tagent does not start: %s\n' "${c%%|*}" "$why"; done
        return
    fi
    log "[$label] agent $AGENT_PID runs with $(capsh --decode="$(awk '/CapEff/ {print $2}' /proc/$AGENT_PID/status)" | sed 's/^.*=//')"
    grep -E ' (WARN|ERROR) ' "$dir/agent.log" | sed 's/\x1b\[[0-9;]*m//g; s/^/    agent: /' | cut -c1-400 >&2 || true
    local sock="$dir/agent.sock"
    for c in "${CASES[@]}"; do
        local name=${c%%|*} args=${c#*|} out
        # shellcheck disable=SC2086
        if out=$("$FAULTCTL" --socket "$sock" --output json inject $args 2>&1); then
            ids+=("$name|$(echo "$out" | jq -r .id)")
        else
            ids+=("$name|!$(echo "$out" | tr '\n' ' ' | sed 's/^error: //')")
        fi
    done
    sleep 2
    for e in "${ids[@]}"; do
        local name=${e%%|*} id=${e#*|}
        if [ "${id:0:1}" = '!' ]; then
            printf '%s\t%s\n' "$name" "${id:1}"
            continue
        fi
        local st
        st=$("$FAULTCTL" --socket "$sock" --output json status "$id")
        local state msg injected
        state=$(echo "$st" | jq -r .state)
        msg=$(echo "$st" | jq -r .message)
        injected=$(echo "$st" | jq -r '.injected // 0')
        if [ "$state" != running ]; then
            printf '%s\t%s: %s\n' "$name" "$state" "$msg"
        elif [[ "$name" == process_kill* || "$name" == "process_pause (pid)" ]] && [ "$injected" = 0 ]; then
            printf '%s\tarmed, but signalled nothing (matched %s, injected 0, no action recorded)\n' "$name" "$(echo "$st" | jq -r '.matched // 0')"
        else
            printf '%s\tok\n' "$name"
        fi
    done
    "$FAULTCTL" --socket "$sock" stop --all >/dev/null 2>&1 || true
    stop_agent
}

declare -A BASE
log "baseline: every capability"
while IFS=$'\t' read -r name res; do BASE[$name]=$res; done < <(run_cases all all)
LOADS=()
for c in "${CASES[@]}"; do
    name=${c%%|*}
    if [ "${BASE[$name]}" = ok ]; then LOADS+=("$name"); else log "not on this host: $name (${BASE[$name]})"; fi
done

status=0
log "the set: $SET"
declare -A WITH
while IFS=$'\t' read -r name res; do WITH[$name]=$res; done < <(run_cases set "$SET")
for name in "${LOADS[@]}"; do
    if [ "${WITH[$name]}" != ok ]; then
        log "FAIL: $name arms with every capability but not with the set: ${WITH[$name]}"
        status=1
    fi
done

# Every system call the agent made with the set, against the unit's
# allow-list (groups expanded by systemd-analyze), and every path it wrote,
# against what ProtectSystem=strict leaves writable: the state directory
# (here the run's directory, /run/faultline in the unit), /sys/fs/cgroup,
# /sys/fs/bpf, /proc (but not /proc/sys: ProtectKernelTunables), /dev
# (PrivateDevices' own) and the fill directory (a ReadWritePaths= drop-in).
expand() {
    local name
    for name in "$@"; do
        if [ "${name:0:1}" = @ ]; then
            # shellcheck disable=SC2046
            expand $(systemd-analyze syscall-filter "$name" | tail -n +2 | grep -v '^\s*#' | awk '{print $1}')
        else
            echo "$name"
        fi
    done
}
python3 "$HERE/trace-check.py" "$WORK/trace.txt" > "$WORK/trace-summary.txt"
sed -n 's/^call //p' "$WORK/trace-summary.txt" | sort -u > "$WORK/used.txt"
if command -v systemd-analyze >/dev/null; then
    # shellcheck disable=SC2046
    expand $(sed -n 's/^SystemCallFilter=//p' "$UNIT") | sort -u > "$WORK/allowed.txt"
    missing=$(comm -23 "$WORK/used.txt" "$WORK/allowed.txt" | paste -sd' ')
    if [ -n "$missing" ]; then
        log "FAIL: system calls the agent made that the unit's SystemCallFilter refuses: $missing"
        status=1
    fi
    echo "System calls the agent made with the set (strace -f, every case above): $(wc -l < "$WORK/used.txt"); outside the unit's SystemCallFilter: ${missing:-none}."
else
    echo "System calls not checked: no systemd-analyze to expand the unit's SystemCallFilter."
fi
outside=$(sed -n 's/^write //p' "$WORK/trace-summary.txt" |
    grep -v -E "^($WORK/run-set/|/sys/fs/cgroup/|/sys/fs/bpf/|/dev/|/proc/|$MNT/)" || true)
procsys=$(sed -n 's/^write //p' "$WORK/trace-summary.txt" | grep -E '^/proc/sys/' || true)
outside=$(printf '%s\n%s\n' "$outside" "$procsys" | sed '/^$/d')
nwrites=$(grep -c '^write ' "$WORK/trace-summary.txt" || true)
if [ -n "$outside" ]; then
    log "FAIL: paths the agent wrote that ProtectSystem=strict makes read-only: $(echo "$outside" | paste -sd' ')"
    status=1
fi
echo "Paths it wrote (opened for writing, created, removed, renamed): $nwrites; outside the unit's writable paths: $(echo "${outside:-none}" | paste -sd' ')."
echo
echo "Kinds that load on this host ($(uname -r)), each armed with the set \`$SET\`: $(IFS=,; echo "${LOADS[*]}" | sed 's/,/, /g')."
echo "Not on this host: $(for c in "${CASES[@]}"; do n=${c%%|*}; [ "${BASE[$n]}" = ok ] || printf '%s (%s) ' "$n" "${BASE[$n]:0:120}"; done)"
echo
echo "| capability dropped | kinds that break | how (the first error) |"
echo "|---|---|---|"
IFS=, read -ra CAPS <<< "$SET"
for cap in "${CAPS[@]}"; do
    rest=$(printf '%s\n' "${CAPS[@]}" | grep -vx "$cap" | paste -sd, -)
    log "without $cap"
    broke=() first=
    while IFS=$'\t' read -r name res; do
        [ "${BASE[$name]}" = ok ] || continue
        if [ "$res" != ok ]; then
            broke+=("$name")
            [ -n "$first" ] || first="$name: $res"
        fi
    done < <(run_cases "no-$cap" "$rest")
    if [ ${#broke[@]} = 0 ]; then
        log "FAIL: dropping $cap breaks nothing"
        status=1
        echo "| \`$cap\` | none | |"
    else
        first=$(echo "$first" | sed 's/|/\\|/g' | cut -c1-300)
        echo "| \`$cap\` | $(printf '%s, ' "${broke[@]}" | sed 's/, $//') | $first |"
    fi
done
exit $status
