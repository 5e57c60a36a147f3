#!/usr/bin/env bash
# hostile-selfcheck.sh -- proves tests/hostile/hostile.c makes REAL attempts.
#
# Compiles hostile.c and runs every non-destructive attempt UNCONFINED, as
# root, on this host, with the same kind of parameters tests/hostile.rs
# passes (a host file with a marker, a TCP/UDP/abstract/path listener, a
# victim process). Unconfined, nearly every attempt must print ESCAPED: an
# attempt that is BLOCKED here is either blocked by this host itself (listed
# with its reason) or is not a real attempt.
#
# Destructive attempts (kill_all, fork_bomb, mem_bomb, reboot, kexec_load,
# init_module, finit_module, delete_module, swapon, sysrq, core_pattern,
# clock_settime, sethostname) are NOT run: hostile.c refuses them anyway
# outside a warden sandbox (exit 3, "SKIPPED").
#
# Usage: sudo scripts/hostile-selfcheck.sh        (needs cc, python3, script)
# Exit: 0 when every attempt gave a well-formed verdict; 1 otherwise.
set -u

here=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
    echo "hostile-selfcheck: must run as root (it shows what an unconfined root process can do)" >&2
    exit 2
fi
for tool in cc python3; do
    command -v "$tool" >/dev/null || { echo "hostile-selfcheck: $tool is missing" >&2; exit 2; }
done

work=$(mktemp -d /tmp/hostile-selfcheck.XXXXXX)
pids=()
cleanup() {
    umount "$work/ro" 2>/dev/null
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT

cc -O1 -Wall -o "$work/hostile" "$here/tests/hostile/hostile.c" || { echo "compile failed" >&2; exit 1; }
H="$work/hostile"

# Host-side fixtures, as tests/hostile.rs sets them up.
marker="hostile-marker-$$-$RANDOM"
echo "secret $marker" >"$work/hostfile"
mkdir -p "$work/bundle" && echo '{}' >"$work/bundle/manifest.json"
abstract="warden-hostile-$$"
python3 - "$work" "$abstract" >"$work/ports" 2>"$work/listener.log" <<'EOF' &
import socket, sys, os, select
work, abstract = sys.argv[1], sys.argv[2]
t = socket.socket(); t.bind(("127.0.0.1", 0)); t.listen(8)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
a = socket.socket(socket.AF_UNIX); a.bind("\0" + abstract); a.listen(8)
p = socket.socket(socket.AF_UNIX); p.bind(os.path.join(work, "host.sock")); p.listen(8)
print(t.getsockname()[1], u.getsockname()[1], flush=True)
conns = []
while True:
    r, _, _ = select.select([t, u, a, p], [], [])
    for s in r:
        if s is u:
            u.recv(100); print("udp datagram received", file=sys.stderr, flush=True)
        else:
            conns.append(s.accept()[0]); print("connection accepted", file=sys.stderr, flush=True)
EOF
pids+=($!)
for _ in $(seq 50); do [ -s "$work/ports" ] && break; sleep 0.1; done
read -r tcp_port udp_port <"$work/ports"
sleep 300 &
victim=$!
pids+=($victim)

run() { # name args... ; prints the verdict line, records it
    local name=$1
    shift
    local out rc
    out=$("$H" "$name" "$@" 2>/dev/null)
    rc=$?
    record "$name" "$rc" "$out"
}
record() {
    local name=$1 rc=$2 out=$3
    case "$rc:$out" in
    "1:ESCAPED $name: "*) escaped+=("$name") ;;
    "0:BLOCKED $name: "*) blocked+=("$name") ;;
    *) bad+=("$name (exit $rc: $out)") ;;
    esac
    printf '%s\n' "$out"
}
escaped=() blocked=() bad=()

run read_shadow
run read_root
run read_home
run read_hostfile "$work/hostfile" "$marker"
run proc1_root
run open_by_handle
run proc_kcore
run write_root
run write_usr
run write_etc
run write_bundle "$work/bundle"
run write_exe
run proc_count 4
run proc_hostpid "$victim"
run ptrace_init
run ptrace_hostpid "$victim"
run ptrace_traceme
run process_vm_readv "$victim"
run signal_scope
run mount_tmpfs
run remount_rw /
# a read-only bind mount, like the sandbox's /usr
mkdir -p "$work/ro"
if mount --bind /usr "$work/ro" && mount -o remount,bind,ro "$work/ro"; then
    run remount_rw "$work/ro"
    umount "$work/ro"
else
    echo "note: could not make a read-only bind mount; remount_rw tried on / only"
fi
run unshare_user
run clone_newns
run clone_newnet
run clone_newuser_ns
run setns "$victim"
run chroot
run pivot_root
run fanotify
run raw_packet
run raw_icmp
run tcp_host "$tcp_port"
run tcp_public 1.1.1.1 80
run udp_send "$udp_port"
run abstract_unix "$abstract"
run unix_path "$work/host.sock"
run mknod
run dev_mem
run dev_kmsg
run dev_disk
# fd 0-2 on a pseudo-terminal, as for an operator running `warden run` by hand
if command -v script >/dev/null; then
    out=$(script -qec "$H tiocsti" /dev/null </dev/null 2>/dev/null | tr -d '\r' | sed 's/^[[:space:]]*//')
    case "$out" in ESCAPED*) rc=1 ;; BLOCKED*) rc=0 ;; *) rc=9 ;; esac
    record tiocsti "$rc" "$out"
else
    run tiocsti
fi
run iopl
run proc_sys_hostname # no NEWNAME: writes back the current hostname
run sys_write
run cgroup_release_agent
run add_key
run keyctl
run request_key
run bpf_map
run bpf_prog
run perf_event_open
run userfaultfd
run io_uring
run syslog
# a leaked descriptor, as a careless supervisor would pass it
out=$("$H" fds 5</etc/hostname 2>/dev/null); record fds $? "$out"
run env
run caps
run uid0
run setrlimit
run nice
run tmp_cap 4
# last: it kills the victim when it escapes
run kill_hostpid "$victim"
if kill -0 "$victim" 2>/dev/null; then echo "note: victim $victim still alive"; else echo "note: victim $victim was killed"; fi

echo
echo "not run (destructive; hostile.c refuses them outside a sandbox):"
"$H" list | awk -F'\t' '$2 == "destructive" { printf "  %s\n", $1 }'
echo
echo "listener log: $(sort "$work/listener.log" | uniq -c | tr '\n' ';')"
echo "summary: ${#escaped[@]} ESCAPED unconfined, ${#blocked[@]} BLOCKED unconfined, ${#bad[@]} malformed"
[ ${#blocked[@]} -eq 0 ] || echo "blocked even unconfined (host-specific, see their lines above): ${blocked[*]}"
if [ ${#bad[@]} -ne 0 ]; then
    printf 'malformed: %s\n' "${bad[@]}"
    exit 1
fi
exit 0
