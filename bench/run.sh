#!/usr/bin/env bash
# Vireo's benchmark: Vireo, QEMU (Debian's qemu-system-x86_64 -accel kvm) and a
# raw-KVM baseline (tests/src/bin/rawkvm.rs) on the same guests, in one go, on
# the same machine. Prints a table of medians, spreads and ratios and writes it
# (with every raw sample) to bench/results-<UTC date>.txt.
#
#   bash bench/run.sh
#
# What it measures (docs/PERFORMANCE.md has the goals and the last numbers):
#  1. Port-I/O exit cost: tiny/portio.bin (200000 `out 0x80`) against
#     tiny/portio-0.bin (0 of them), N runs each per system, interleaved.
#     a) process:  (median wall(portio) - median wall(portio-0)) / 200000,
#        wall = process start to exit;
#     b) in-guest: (median span(portio) - median span(portio-0)) / 200000,
#        span = arrival of the `PORTIO START` line to arrival of `PORTIO DONE`
#        on the serial pipe. It leaves out boot and teardown, whose noise (QEMU
#        runs SeaBIOS first, slow under PVM) is larger than the signal.
#     Vireo and rawkvm enter the 64-bit entry directly; QEMU `-M pc -kernel`
#     runs SeaBIOS, then the real-mode entry; QEMU -M microvm (qboot) the
#     real-mode entry too, span only (it has no power-off port at 0x604).
#     QEMU -M pc gets -nic none: Vireo's PC has no NIC either.
#  2. Start-up: process start to the first serial byte of portio-0.bin
#     (the same runs as 1).
#  3. RSS with the guest idle (VmRSS of the process, 128 MiB guest):
#     Vireo boots tiny/bootproto.bin with `noecho action=halt` (the guest
#     ends in cli; hlt); QEMU boots the same image with -kernel and
#     -no-shutdown (its real-mode entry prints a banner and powers off, which
#     -no-shutdown turns into a stopped, resident VM). Read 1 s after the
#     last line.
#  4. GRUB ISO to `halt`: grub/basic.iso on the CD, 256 MiB, SeaBIOS ->
#     GRUB -> lspci, cat, halt (ACPI power-off); wall time to exit.
#
# Knobs (environment): BENCH_N (default 11) runs per tiny case, BENCH_RSS_N
# (3), BENCH_GRUB_N (3, 0 skips), BENCH_MICROVM=0 leaves out QEMU -M microvm
# (start-up and in-guest exit cost), BENCH_QEMU_EXTRA (default "-nic none")
# extra QEMU -M pc arguments, BENCH_LINUX_N (0; needs hardware KVM and
# `assets/guests/build.sh linux`) Linux direct boots to `VIREO-LINUX-UP`
# and power-off, Vireo --kernel against QEMU -M pc -kernel, 256 MiB,
# BENCH_BUILD=0 skips the cargo build, VIREO/RAWKVM/QEMU the binaries,
# VIREO_GUEST_DIR the guests.
#
# No test asserts on these numbers; this is a measurement, not a gate.

set -u
export LC_ALL=C
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

N=${BENCH_N:-11}
RSS_N=${BENCH_RSS_N:-3}
GRUB_N=${BENCH_GRUB_N:-3}
MEM=128
LOOP=200000
VIREO=${VIREO:-$ROOT/target/release/vireo}
RAWKVM=${RAWKVM:-$ROOT/target/release/rawkvm}
QEMU=${QEMU:-qemu-system-x86_64}
# Vireo's PC has no network card unless asked; QEMU's pc gets an e1000 (and
# SeaBIOS runs its iPXE ROM) unless told otherwise. Same devices on both sides:
read -ra QX <<<"${BENCH_QEMU_EXTRA-"-nic none"}"
G=${VIREO_GUEST_DIR:-$ROOT/target/guests}

die() { echo "bench: $*" >&2; exit 1; }

if [ "${BENCH_BUILD:-1}" != 0 ]; then
    # Two builds, so each keeps its own feature set (and its cache).
    cargo build --release -p vireo >&2 || die "cargo build -p vireo failed"
    cargo build --release -p vireo-tests --bin rawkvm >&2 || die "cargo build of rawkvm failed"
    bash assets/guests/build.sh tiny grub >/dev/null || die "building the guests failed"
fi
for b in "$VIREO" "$RAWKVM"; do [ -x "$b" ] || die "$b is missing (run without BENCH_BUILD=0)"; done
command -v "$QEMU" >/dev/null || die "$QEMU not found (apt-get install qemu-system-x86)"
[ -w /dev/kvm ] || die "/dev/kvm is not usable by this user"
for f in tiny/portio.bin tiny/portio-0.bin tiny/bootproto.bin grub/basic.iso; do
    [ -f "$G/$f" ] || die "$G/$f is missing (bash assets/guests/build.sh tiny grub)"
done

if [ "${BENCH_LINUX_N:-0}" -gt 0 ]; then
    for f in linux/vmlinuz linux/initramfs.img; do
        [ -f "$G/$f" ] || die "$G/$f is missing (bash assets/guests/build.sh linux)"
    done
fi

WORK=$(mktemp -d /tmp/vireo-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
STAMP=$(date -u +%Y%m%d-%H%M%S)
RESULTS="$ROOT/bench/results-$STAMP.txt"
RAW="$WORK/raw.txt"
: >"$RAW"

now_us() { echo "${EPOCHREALTIME/./}"; }

# stamp T0: copies stdin to stdout, each line prefixed with the microseconds
# since T0 at which it was complete; the first byte gets a `@first` line.
stamp() {
    local t0=$1 c line
    IFS= read -r -N1 c || return 0
    echo "$(($(now_us) - t0)) @first"
    if [ "$c" != $'\n' ]; then
        IFS= read -r line
        line="$c$line"
    else
        line=""
    fi
    echo "$(($(now_us) - t0)) $line"
    while IFS= read -r line; do
        echo "$(($(now_us) - t0)) $line"
    done
}

# at FILE PATTERN: the time (us) of the first line matching PATTERN, or -1.
at() { awk -v p="$2" 'index($0, p) && $2 != "@first" { print $1; f = 1; exit } END { if (!f) print -1 }' "$1"; }

# timed NAME TIMEOUT CMD...: runs CMD (a binary, not a function) to its exit;
# appends "NAME rc=RC wall=US first=US" to $RAW; the stamped output is
# $WORK/NAME.out.
timed() {
    local name=$1 limit=$2 t0 rc t1 first
    shift 2
    t0=$(now_us)
    timeout "$limit" "$@" </dev/null 2>"$WORK/$name.err" | stamp "$t0" >"$WORK/$name.out"
    rc=${PIPESTATUS[0]}
    t1=$(now_us)
    first=$(awk '$2 == "@first" { print $1; exit }' "$WORK/$name.out")
    echo "$name rc=$rc wall=$((t1 - t0)) first=${first:--1}" >>"$RAW"
    return "$rc"
}

# resident NAME PATTERN MAXSEC CMD...: starts CMD, waits (up to MAXSEC) for a
# serial line containing PATTERN, waits 1 s more, records VmRSS/RssAnon/Pss in KiB
# and the time of the first byte, then kills CMD.
resident() {
    local name=$1 pat=$2 max=$3 t0 pid i rss anon pss first
    shift 3
    t0=$(now_us)
    "$@" </dev/null 2>"$WORK/$name.err" > >(stamp "$t0" >"$WORK/$name.out") &
    pid=$!
    for ((i = 0; i < max * 10; i++)); do
        grep -qF "$pat" "$WORK/$name.out" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    sleep 1
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
    anon=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
    pss=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null)
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    first=$(awk '$2 == "@first" { print $1; exit }' "$WORK/$name.out")
    echo "$name rss=${rss:--1} anon=${anon:--1} pss=${pss:--1} first=${first:--1}" >>"$RAW"
}

note() { echo "$*" >&2; }

note "== machine: $(nproc) CPUs, load: $(cut -d' ' -f1-3 /proc/loadavg), kernel $(uname -r)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# 1 + 2: exit cost and start-up.
for ((r = 1; r <= N; r++)); do
    for img in portio-0 portio; do
        note "-- run $r/$N $img"
        timed "vireo.$img.$r" 300 "$VIREO" run --kernel "$G/tiny/$img.bin" -m "$MEM" --no-reboot ||
            note "   vireo $img failed (rc $?): $(tail -c 300 "$WORK/vireo.$img.$r.err")"
        timed "raw.$img.$r" 300 "$RAWKVM" "$G/tiny/$img.bin" "$MEM" ||
            note "   rawkvm $img failed (rc $?): $(tail -c 300 "$WORK/raw.$img.$r.err")"
        timed "qemu.$img.$r" 300 "$QEMU" -accel kvm -M pc "${QX[@]}" -m "$MEM" -kernel "$G/tiny/$img.bin" \
            -serial stdio -display none -no-reboot ||
            note "   qemu $img failed (rc $?): $(tail -c 300 "$WORK/qemu.$img.$r.err")"
        # QEMU -M microvm (qboot, no PCI) boots the same image but has no ACPI
        # PM at 0x604: the guest halts after `PORTIO DONE`, so the run is
        # stopped there and only its first byte and START->DONE span count.
        if [ "${BENCH_MICROVM:-1}" = 1 ]; then
            resident "microvm.$img.$r" "PORTIO DONE" 60 "$QEMU" -accel kvm -M microvm -m "$MEM" \
                -kernel "$G/tiny/$img.bin" -serial stdio -display none -no-reboot
        fi
        for s in vireo raw qemu microvm; do
            f="$WORK/$s.$img.$r.out"
            [ -f "$f" ] || continue
            st=$(at "$f" "PORTIO START")
            dn=$(at "$f" "PORTIO DONE")
            echo "$s.$img.$r start=$st done=$dn" >>"$RAW"
            [ "$st" -ge 0 ] && [ "$dn" -ge 0 ] || note "   $s $img: markers missing: $(head -c 300 "$f")"
        done
    done
done

# 3: RSS with the guest idle.
for ((r = 1; r <= RSS_N; r++)); do
    note "-- RSS $r/$RSS_N"
    resident "vireo.rss.$r" "e820 end" 300 \
        "$VIREO" run --kernel "$G/tiny/bootproto.bin" --append "console=ttyS0 noecho action=halt" -m "$MEM"
    resident "qemu.rss.$r" "VIREO-TINY realmode" 300 \
        "$QEMU" -accel kvm -M pc "${QX[@]}" -m "$MEM" -kernel "$G/tiny/bootproto.bin" -serial stdio \
        -display none -no-shutdown
done

# 4: GRUB ISO to halt.
for ((r = 1; r <= GRUB_N; r++)); do
    note "-- GRUB $r/$GRUB_N"
    timed "vireo.grub.$r" 600 "$VIREO" run --cdrom "$G/grub/basic.iso" -m 256 ||
        note "   vireo grub failed (rc $?)"
    timed "qemu.grub.$r" 600 "$QEMU" -accel kvm -M pc "${QX[@]}" -m 256 -cdrom "$G/grub/basic.iso" \
        -serial stdio -display none ||
        note "   qemu grub failed (rc $?)"
    for s in vireo qemu; do
        f="$WORK/$s.grub.$r.out"
        echo "$s.grub.$r ok=$(at "$f" VIREO-GRUB-OK) end=$(at "$f" VIREO-GRUB-END)" >>"$RAW"
    done
done
# 5 (hardware KVM only): Debian's kernel + busybox initramfs, direct boot.
for ((r = 1; r <= ${BENCH_LINUX_N:-0}; r++)); do
    note "-- Linux $r/$BENCH_LINUX_N"
    app="console=ttyS0 vireo.poweroff=1"
    timed "vireo.linux.$r" 300 "$VIREO" run --kernel "$G/linux/vmlinuz" --initrd "$G/linux/initramfs.img" \
        --append "$app" -m 256 --no-reboot || note "   vireo linux failed (rc $?)"
    timed "qemu.linux.$r" 300 "$QEMU" -accel kvm -M pc "${QX[@]}" -m 256 -kernel "$G/linux/vmlinuz" \
        -initrd "$G/linux/initramfs.img" -append "$app" -serial stdio -display none -no-reboot ||
        note "   qemu linux failed (rc $?)"
    for s in vireo qemu; do
        echo "$s.linux.$r up=$(at "$WORK/$s.linux.$r.out" VIREO-LINUX-UP)" >>"$RAW"
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# The report: medians with [min-max] over the runs, then ratios.
{
    echo "Vireo benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), bash bench/run.sh"
    echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), KVM: $(ls /sys/module 2>/dev/null | grep -E '^kvm_' | tr '\n' ' ')$(grep -qw -e vmx -e svm /proc/cpuinfo && echo '(vmx/svm in cpuinfo)')"
    echo "load average at start: $LOAD_START, at end: $LOAD_END"
    echo "QEMU: $("$QEMU" --version | head -1); runs: N=$N tiny, $RSS_N RSS, $GRUB_N GRUB; guest RAM $MEM MiB (GRUB 256); QEMU -M pc extra: ${QX[*]:-none}"
    echo
    awk -v loop="$LOOP" '
    function med(k,   n, i, j, t, a) {
        n = cnt[k]; if (n == 0) return -1
        for (i = 1; i <= n; i++) a[i] = v[k, i]
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        lo[k] = a[1]; hi[k] = a[n]
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function add(k, x) { if (x >= 0) { cnt[k]++; v[k, cnt[k]] = x } }
    function ms(k,   m) { m = med(k); return m < 0 ? "n/a" : sprintf("%9.1f ms [%.1f-%.1f] n=%d", m / 1000, lo[k] / 1000, hi[k] / 1000, cnt[k]) }
    function mib(k,   m) { m = med(k); return m < 0 ? "n/a" : sprintf("%7.1f MiB [%.1f-%.1f] n=%d", m / 1024, lo[k] / 1024, hi[k] / 1024, cnt[k]) }
    function ratio(a, b,   x, y) { x = med(a); y = med(b); return (x > 0 && y > 0) ? sprintf("%.3f", x / y) : "n/a" }
    function cost(s, kind,   a, b) { a = med(s ".portio." kind); b = med(s ".portio-0." kind); return (a < 0 || b < 0) ? -1 : (a - b) * 1000 / loop }
    function ns(x) { return x < 0 ? "n/a" : sprintf("%8.0f ns", x) }
    # paired(a, b, kind): the median over runs r of the exit cost of a in run r
    # over that of b in run r (runs are interleaved, so a pair shares the load).
    function paired(a, b, kind,   r, x, y, a0, b0, arr, k) {
        a0 = med(a ".portio-0." kind); b0 = med(b ".portio-0." kind)
        if (a0 < 0 || b0 < 0) return "n/a"
        k = "paired." a "." b "." kind; cnt[k] = 0
        for (r = 1; r <= 1000; r++) {
            x = (kind == "span") ? run_span[a ".portio." r] : run_wall[a ".portio." r]
            y = (kind == "span") ? run_span[b ".portio." r] : run_wall[b ".portio." r]
            if (x == "" || y == "" || y - b0 <= 0) continue
            add(k, (x - a0) / (y - b0))
        }
        x = med(k)
        return x < 0 ? "n/a" : sprintf("%.3f [%.3f-%.3f] n=%d", x, lo[k], hi[k], cnt[k])
    }
    function cr(x, y) { return (x > 0 && y > 0) ? sprintf("%.3f", x / y) : "n/a" }
    {
        split($1, p, ".")
        key = p[1] "." p[2]
        if ($2 ~ /^rc=/ && $2 != "rc=0") { bad[key]++; failed[$1] = 1 }
        if ($1 in failed) next
        for (i = 2; i <= NF; i++) {
            split($i, kv, "=")
            if (kv[1] == "wall") add(key ".wall", kv[2])
            if (kv[1] == "first") add(key ".first", kv[2])
            if (kv[1] == "start") st = kv[2]
            if (kv[1] == "done" && st >= 0 && kv[2] >= 0) { add(key ".span", kv[2] - st); run_span[$1] = kv[2] - st }
            if (kv[1] == "wall") run_wall[$1] = kv[2]
            if (kv[1] == "rss") add(key ".rss", kv[2])
            if (kv[1] == "anon") add(key ".anon", kv[2])
            if (kv[1] == "pss") add(key ".pss", kv[2])
            if (kv[1] == "ok") add(key ".ok", kv[2])
            if (kv[1] == "end") add(key ".end", kv[2])
            if (kv[1] == "up") add(key ".up", kv[2])
        }
    }
    END {
        printf "%-34s %-36s %-36s %-36s\n", "median [min-max]", "vireo", "raw KVM", "qemu -M pc"
        printf "%-34s %-36s %-36s %-36s\n", "portio-0 wall (start to exit)", ms("vireo.portio-0.wall"), ms("raw.portio-0.wall"), ms("qemu.portio-0.wall")
        printf "%-34s %-36s %-36s %-36s\n", "portio wall", ms("vireo.portio.wall"), ms("raw.portio.wall"), ms("qemu.portio.wall")
        printf "%-34s %-36s %-36s %-36s\n", "portio-0 START->DONE", ms("vireo.portio-0.span"), ms("raw.portio-0.span"), ms("qemu.portio-0.span")
        printf "%-34s %-36s %-36s %-36s\n", "portio START->DONE", ms("vireo.portio.span"), ms("raw.portio.span"), ms("qemu.portio.span")
        vw = cost("vireo", "wall"); rw = cost("raw", "wall"); qw = cost("qemu", "wall")
        vs = cost("vireo", "span"); rs = cost("raw", "span"); qs = cost("qemu", "span")
        printf "%-34s %-36s %-36s %-36s\n", "exit cost, process wall", ns(vw), ns(rw), ns(qw)
        printf "%-34s %-36s %-36s %-36s\n", "exit cost, in-guest span", ns(vs), ns(rs), ns(qs)
        printf "%-34s %-36s %-36s %-36s\n", "first serial byte (portio-0)", ms("vireo.portio-0.first"), ms("raw.portio-0.first"), ms("qemu.portio-0.first")
        if (cnt["microvm.portio-0.first"]) {
            printf "%-34s %-36s\n", "qemu microvm: first serial byte", ms("microvm.portio-0.first")
            printf "%-34s %-36s\n", "qemu microvm: portio START->DONE", ms("microvm.portio.span")
            ms_ = cost("microvm", "span")
            printf "%-34s %-36s\n", "qemu microvm: exit cost, span", ns(ms_)
        }
        printf "%-34s %-36s %-36s %-36s\n", "VmRSS, guest idle (128 MiB)", mib("vireo.rss.rss"), "-", mib("qemu.rss.rss")
        printf "%-34s %-36s %-36s %-36s\n", "  RssAnon", mib("vireo.rss.anon"), "-", mib("qemu.rss.anon")
        printf "%-34s %-36s %-36s %-36s\n", "  Pss", mib("vireo.rss.pss"), "-", mib("qemu.rss.pss")
        printf "%-34s %-36s %-36s %-36s\n", "GRUB basic.iso: VIREO-GRUB-OK", ms("vireo.grub.ok"), "-", ms("qemu.grub.ok")
        printf "%-34s %-36s %-36s %-36s\n", "GRUB basic.iso: wall to exit", ms("vireo.grub.wall"), "-", ms("qemu.grub.wall")
        if (cnt["vireo.linux.wall"] || cnt["qemu.linux.wall"]) {
            printf "%-34s %-36s %-36s %-36s\n", "Linux: VIREO-LINUX-UP", ms("vireo.linux.up"), "-", ms("qemu.linux.up")
            printf "%-34s %-36s %-36s %-36s\n", "Linux: wall to exit", ms("vireo.linux.wall"), "-", ms("qemu.linux.wall")
        }
        print ""
        print "ratios (goal)"
        printf "  exit cost vireo/raw,  in-guest span   %s  (<= 1.1)\n", cr(vs, rs)
        printf "  exit cost vireo/qemu, in-guest span   %s  (< 1)\n", cr(vs, qs)
        printf "  exit cost vireo/raw,  span, per-run pairs  %s\n", paired("vireo", "raw", "span")
        printf "  exit cost vireo/qemu, span, per-run pairs  %s\n", paired("vireo", "qemu", "span")
        if (cnt["microvm.portio.span"]) printf "  exit cost vireo/qemu microvm, span   %s  (< 1)\n", cr(vs, ms_)
        if (cnt["microvm.portio.span"]) printf "  exit cost vireo/qemu microvm, span, per-run pairs  %s\n", paired("vireo", "microvm", "span")
        printf "  exit cost vireo/raw,  process wall    %s  (<= 1.1)\n", cr(vw, rw)
        printf "  exit cost vireo/qemu, process wall    %s  (< 1)\n", cr(vw, qw)
        printf "  start-up vireo/qemu pc                %s  (<= 0.5)\n", ratio("vireo.portio-0.first", "qemu.portio-0.first")
        if (cnt["microvm.portio-0.first"]) printf "  start-up vireo/qemu microvm           %s  (<= 0.5)\n", ratio("vireo.portio-0.first", "microvm.portio-0.first")
        printf "  VmRSS vireo/qemu                      %s  (<= 0.25)\n", ratio("vireo.rss.rss", "qemu.rss.rss")
        printf "  GRUB to halt vireo/qemu               %s  (<= 1.0)\n", ratio("vireo.grub.wall", "qemu.grub.wall")
        if (cnt["vireo.linux.up"]) printf "  Linux boot to VIREO-LINUX-UP vireo/qemu %s\n", ratio("vireo.linux.up", "qemu.linux.up")
        for (k in bad) printf "  WARNING: %d failed run(s) of %s (left out)\n", bad[k], k
    }' "$RAW"
    echo
    echo "raw samples (times in us from process start; rss in KiB):"
    cat "$RAW"
} >"$RESULTS"
cat "$RESULTS"
echo "written: $RESULTS" >&2
