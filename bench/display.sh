#!/usr/bin/env bash
# Vireo's display benchmark (issue #4), beside QEMU (Debian's
# qemu-system-x86_64 -accel kvm -vga std) on the same guest, in one run, on
# the same machine. Prints a table and writes it, with every raw sample, to
# bench/display-results-<UTC date>.txt.
#
#   bash bench/display.sh
#
# The guest: a GRUB rescue ISO (assets/guests/build.sh grub-iso) whose
# grub.cfg switches to gfxterm at 1920x1080x32 (SeaBIOS's
# vgabios-stdvga.bin lists 1920x1080 at 16, 24 and 32 bpp) and shows a
# menu with `set timeout=-1`: a static screen. Input stays on serial and
# the console; GRUB also echoes to COM1 (Vireo: its stdout, QEMU:
# -serial file:), which the results keep.
#
# For each system, one after the other (Vireo first, then QEMU):
#  1. Boot: `vireo run --cdrom ISO -m 256 --control SOCK` /
#     `qemu-system-x86_64 -accel kvm -M pc -m 256 -nodefaults -vga std
#     -display none -cdrom ISO -serial file:F -qmp unix:SOCK -name
#     X,debug-threads=on` (the last only names QEMU's threads, so that its
#     vCPU thread shows as `CPU 0/KVM`).
#     Wait for the menu on COM1 (its "second entry"), then poll
#     screenshots every BENCH_POLL_S seconds until two in a row are the same
#     bytes, the picture is at least 640x480 and not all one colour (GRUB
#     under PVM takes minutes: see docs/PERFORMANCE.md). Steadiness alone
#     is not enough: GRUB sits for tens of seconds on a screen showing only
#     its `echo` before it draws the menu.
#  2. Idle host CPU at the menu: utime+stime of every thread of the VMM
#     process (/proc/PID/task/*/stat) over BENCH_IDLE_WINDOWS consecutive
#     windows of BENCH_IDLE_S seconds, as % of one CPU, split into vCPU
#     threads (Vireo: `vcpuN`, QEMU: `CPU N/KVM`) and the rest; the same
#     from schedstat (ns) as a cross-check; VmRSS. The table shows the last
#     window (GRUB may still be blitting unchanged pixels right after the
#     menu appears); the raw samples have all of them.
#  3. Screenshot cost: BENCH_SHOTS screenshots back to back on one
#     connection (Vireo's control socket `screenshot`, QEMU's QMP
#     `screendump` with format png, ppm if QEMU refuses png); the wall time
#     from sending the request to reading the reply. Files go to the
#     mktemp directory.
# Then, with no VM running:
#  4. Conversion cost: tests/src/bin/fbconv.rs (release) sets
#     1920x1080x32 on Vireo's VGA adapter through its dispi ports and times
#     BENCH_CONV_N full renders (BGRX video memory -> RGBA frame), plus the
#     in-process PNG encode. QEMU has no counterpart to time: at 32 bpp its
#     display surface *is* video memory (a shared pixman surface), so a
#     refresh converts nothing; its per-frame cost shows up only inside
#     `screendump` (3).
#
# Knobs (environment): BENCH_IDLE_S (30) seconds per idle-CPU window,
# BENCH_IDLE_WINDOWS (3) windows, BENCH_KEEP (unset) a directory to keep
# the last two wait screenshots of each side in,
# BENCH_SHOTS (10) screenshots, BENCH_CONV_N (30) renders, BENCH_WAIT_S
# (900) longest wait for a steady menu, BENCH_POLL_S (5) seconds between
# polls, BENCH_GFXMODE (1920x1080x32) GRUB's gfxmode, BENCH_ONLY (both;
# `vireo` or `qemu` runs one side), BENCH_BUILD=0 skips the cargo builds,
# VIREO/FBCONV/QEMU the binaries.
#
# No test asserts on these numbers; this is a measurement, not a gate.

set -u
export LC_ALL=C
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

IDLE_S=${BENCH_IDLE_S:-30}
IDLE_WINDOWS=${BENCH_IDLE_WINDOWS:-3}
SHOTS=${BENCH_SHOTS:-10}
CONV_N=${BENCH_CONV_N:-30}
WAIT_S=${BENCH_WAIT_S:-900}
POLL_S=${BENCH_POLL_S:-5}
GFXMODE=${BENCH_GFXMODE:-1920x1080x32}
ONLY=${BENCH_ONLY:-both}
MEM=256
VIREO=${VIREO:-$ROOT/target/release/vireo}
FBCONV=${FBCONV:-$ROOT/target/release/fbconv}
QEMU=${QEMU:-qemu-system-x86_64}

die() { echo "display bench: $*" >&2; exit 1; }
note() { echo "$*" >&2; }

if [ "${BENCH_BUILD:-1}" != 0 ]; then
    cargo build --release -p vireo >&2 || die "cargo build -p vireo failed"
    cargo build --release -p vireo-tests --bin fbconv >&2 || die "cargo build of fbconv failed"
fi
for b in "$VIREO" "$FBCONV"; do [ -x "$b" ] || die "$b is missing (run without BENCH_BUILD=0)"; done
command -v "$QEMU" >/dev/null || die "$QEMU not found (apt-get install qemu-system-x86)"
command -v python3 >/dev/null || die "python3 not found"
[ -w /dev/kvm ] || die "/dev/kvm is not usable by this user"

WORK=$(mktemp -d /tmp/vireo-display-bench.XXXXXX)
PIDS=()
HELPER=
cleanup() {
    local p
    for p in $HELPER "${PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
STAMP=$(date -u +%Y%m%d-%H%M%S)
RESULTS="$ROOT/bench/display-results-$STAMP.txt"
RAW="$WORK/raw.txt"
: >"$RAW"

# The helper: screenshots over either socket, per-thread CPU, the report.
cat >"$WORK/client.py" <<'PY'
"""Display benchmark helper (stdlib only), written out by bench/display.sh.

  client.py wait  KIND SOCK DIR TIMEOUT_S INTERVAL_S SERIAL_FILE PATTERN
      waits until SERIAL_FILE holds PATTERN (GRUB drew its menu on COM1),
      then polls screenshots until two taken INTERVAL_S apart have the same
      bytes, the size of the last one is at least 640x480 and not all one
      colour; prints `steady waited_s=.. serial_s=.. width=.. height=..
      format=..` (seconds since the helper started).
  client.py shots KIND SOCK N DIR
      N screenshots, back to back, on one connection; prints
      `shots format=.. width=.. height=.. bytes=.. us=T1,T2,...`
      (wall time from sending the request to reading its reply).
  client.py cpu PID SECONDS VCPU_REGEX WINDOWS
      host CPU of all threads of PID over WINDOWS consecutive windows of
      SECONDS each (one line per window): utime+stime from
      /proc/PID/task/*/stat (clock ticks) and the run time from
      /proc/PID/task/*/schedstat (ns); threads whose name matches
      VCPU_REGEX count as vCPU threads.
  client.py report RAW
      the table of bench/display.sh from its raw samples.

KIND is `vireo` (Vireo's control socket, line-delimited JSON) or `qmp`
(QEMU's QMP). QEMU is asked for PNG and falls back to PPM if it refuses.
"""

import json
import os
import re
import socket
import struct
import sys
import time
import zlib


TIMEOUT_S = 120


class Client:
    def open(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(TIMEOUT_S)
        self.s.connect(path)
        self.f = self.s.makefile("rb")

    def close(self):
        # Both: the socket stays open while its file object is. QEMU's QMP
        # serves one client at a time.
        self.f.close()
        self.s.close()


class Vireo(Client):
    def __init__(self, path):
        self.open(path)
        self.n = 0
        self.fmt = "png"

    def call(self, req):
        self.n += 1
        req["id"] = self.n
        self.s.sendall((json.dumps(req) + "\n").encode())
        line = self.f.readline()
        if not line:
            raise RuntimeError("vireo: socket closed")
        rep = json.loads(line)
        if not rep.get("ok"):
            raise RuntimeError("vireo: %s" % rep.get("error"))
        return rep

    def screenshot(self, path):
        self.call({"cmd": "screenshot", "path": path})


class Qmp(Client):
    def __init__(self, path):
        self.open(path)
        self.f.readline()  # greeting
        self.call("qmp_capabilities")
        self.fmt = "png"
        try:
            self.call("screendump", {"filename": "/dev/null", "format": "png"})
        except RuntimeError:
            self.fmt = "ppm"

    def call(self, cmd, args=None):
        req = {"execute": cmd}
        if args:
            req["arguments"] = args
        self.s.sendall((json.dumps(req) + "\n").encode())
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError("qmp: socket closed")
            rep = json.loads(line)
            if "event" in rep:
                continue
            if "error" in rep:
                raise RuntimeError("qmp: %s" % rep["error"].get("desc"))
            return rep.get("return")

    def screenshot(self, path):
        args = {"filename": path}
        if self.fmt == "png":
            args["format"] = "png"
        self.call("screendump", args)


def connect(kind, path):
    return Vireo(path) if kind == "vireo" else Qmp(path)


def png_rows(data):
    """(width, height, bytes per pixel, iterator over unfiltered rows)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat = 8, []
    w = h = bpp = 0
    while pos + 8 <= len(data):
        n, typ = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if typ == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            if depth != 8 or ctype not in (2, 6):
                raise ValueError("PNG type %d depth %d not handled" % (ctype, depth))
            bpp = 4 if ctype == 6 else 3
        elif typ == b"IDAT":
            idat.append(body)
        pos += 12 + n
    raw = zlib.decompress(b"".join(idat))
    stride = w * bpp

    def rows():
        prev = bytearray(stride)
        for y in range(h):
            base = y * (stride + 1)
            ft = raw[base]
            cur = bytearray(raw[base + 1:base + 1 + stride])
            zero = not any(cur[bpp:])
            if ft == 0:
                pass
            elif ft == 2 and zero and not any(cur[:bpp]):
                cur = bytearray(prev)
            elif ft == 1 and zero:
                cur = bytearray(cur[:bpp] * w)
            else:
                for i in range(stride):
                    a = cur[i - bpp] if i >= bpp else 0
                    b = prev[i]
                    if ft == 1:
                        cur[i] = (cur[i] + a) & 255
                    elif ft == 2:
                        cur[i] = (cur[i] + b) & 255
                    elif ft == 3:
                        cur[i] = (cur[i] + ((a + b) >> 1)) & 255
                    elif ft == 4:
                        c = prev[i - bpp] if i >= bpp else 0
                        p = a + b - c
                        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                        pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                        cur[i] = (cur[i] + pr) & 255
            yield cur
            prev = cur

    return w, h, bpp, rows()


def image_info(path):
    """(format, width, height, one_colour) of a PNG or binary PPM."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"P6":
        m = re.match(rb"P6\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
        if not m:
            raise ValueError("bad PPM header")
        w, h = int(m.group(1)), int(m.group(2))
        px = data[m.end():]
        return "ppm", w, h, px == px[:3] * (len(px) // 3)
    w, h, bpp, rows = png_rows(data)
    first = None
    for row in rows:
        if first is None:
            first = bytes(row[:bpp])
        if row != first * w:
            return "png", w, h, False
    return "png", w, h, True


def wait_steady(kind, sock, d, timeout, interval, serial, pattern):
    t0 = time.monotonic()
    last = None
    err = None
    i = 0
    seen = None
    while time.monotonic() - t0 < timeout:
        if seen is None:
            try:
                with open(serial, "rb") as f:
                    if pattern.encode() in f.read():
                        seen = time.monotonic() - t0
            except OSError as e:
                err = e
            if seen is None:
                time.sleep(1)
                continue
        c = None
        try:
            c = connect(kind, sock)
            path = os.path.join(d, "wait-%d.%s" % (i % 2, c.fmt))
            c.screenshot(path)
            c.close()
            c = None
            with open(path, "rb") as f:
                cur = f.read()
            if last is not None and cur == last:
                fmt, w, h, one = image_info(path)
                if w >= 640 and h >= 480 and not one:
                    print("steady waited_s=%.1f serial_s=%.1f width=%d height=%d format=%s"
                          % (time.monotonic() - t0, seen, w, h, fmt))
                    return 0
            last = cur
            i += 1
        except (OSError, RuntimeError, ValueError, zlib.error) as e:
            err = e
            last = None
            if c is not None:
                c.close()
        time.sleep(interval)
    print("not-steady waited_s=%.1f serial_seen=%s last_error=%s"
          % (time.monotonic() - t0, seen is not None, str(err).replace(" ", "_")))
    return 1


def shots(kind, sock, n, d):
    c = connect(kind, sock)
    us = []
    for i in range(n):
        path = os.path.join(d, "shot-%d.%s" % (i, c.fmt))
        t0 = time.perf_counter_ns()
        c.screenshot(path)
        us.append((time.perf_counter_ns() - t0) // 1000)
    c.close()
    fmt, w, h, one = image_info(path)
    size = os.path.getsize(path)
    for i in range(n):
        os.unlink(os.path.join(d, "shot-%d.%s" % (i, c.fmt)))
    print("shots format=%s width=%d height=%d bytes=%d one_colour=%d us=%s"
          % (fmt, w, h, size, one, ",".join(map(str, us))))
    return 0


def thread_times(pid):
    out = {}
    base = "/proc/%d/task" % pid
    for tid in os.listdir(base):
        try:
            with open("%s/%s/stat" % (base, tid)) as f:
                st = f.read()
            with open("%s/%s/schedstat" % (base, tid)) as f:
                ns = int(f.read().split()[0])
        except OSError:
            continue
        name = st[st.index("(") + 1:st.rindex(")")]
        fields = st[st.rindex(")") + 2:].split()
        # fields[0] is field 3 (state); utime is field 14, stime 15.
        ticks = int(fields[11]) + int(fields[12])
        out[tid] = (name, ticks, ns)
    return out


def cpu(pid, seconds, vcpu_re, windows):
    for i in range(windows):
        cpu_window(pid, seconds, vcpu_re, i + 1)
    return 0


def cpu_window(pid, seconds, vcpu_re, window):
    hz = os.sysconf("SC_CLK_TCK")
    a = thread_times(pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    b = thread_times(pid)
    wall = time.monotonic() - t0
    rx = re.compile(vcpu_re)
    tot = {"vcpu": [0, 0], "other": [0, 0]}
    per = {}
    for tid, (name, ticks, ns) in b.items():
        _, t_a, ns_a = a.get(tid, (name, 0, 0))
        dt, dns = ticks - t_a, ns - ns_a
        k = "vcpu" if rx.search(name) else "other"
        tot[k][0] += dt
        tot[k][1] += dns
        p = per.setdefault(name, [0, 0])
        p[0] += dt
        p[1] += dns

    def pct(ticks):
        return 100.0 * ticks / hz / wall

    def pct_ns(ns):
        return 100.0 * ns / 1e9 / wall

    threads = ";".join("%s:%.2f" % (n.replace(" ", "_"), pct_ns(v[1]))
                       for n, v in sorted(per.items(), key=lambda kv: -kv[1][1]))
    print("cpu window=%d wall_s=%.2f total_pct=%.2f vcpu_pct=%.2f other_pct=%.2f "
          "total_sched_pct=%.2f vcpu_sched_pct=%.2f other_sched_pct=%.2f threads=%s"
          % (window, wall, pct(tot["vcpu"][0] + tot["other"][0]), pct(tot["vcpu"][0]),
             pct(tot["other"][0]), pct_ns(tot["vcpu"][1] + tot["other"][1]),
             pct_ns(tot["vcpu"][1]), pct_ns(tot["other"][1]), threads), flush=True)


def parse(path):
    """{(system, kind): {key: value}} from the raw-samples file."""
    out = {}
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) < 2:
                continue
            d = out.setdefault((p[0], p[1]), {})
            for kv in p[2:]:
                if "=" in kv:
                    k, v = kv.split("=", 1)
                    d[k] = v
    return out


def stats(csv):
    v = sorted(float(x) for x in csv.split(",") if x)
    if not v:
        return None
    n = len(v)
    med = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return med, v[0], v[-1], n


def report(path):
    r = parse(path)

    def get(sysname, kind, key):
        return r.get((sysname, kind), {}).get(key)

    def num(sysname, kind, key):
        v = get(sysname, kind, key)
        try:
            return float(v)
        except (TypeError, ValueError):
            return None

    def ratio(a, b):
        return "%.3f" % (a / b) if a is not None and b and b > 0 else "n/a"

    rows = []

    def row(name, v, q, rat):
        rows.append((name, v, q, rat))

    def mode(s):
        w, h = get(s, "steady", "width"), get(s, "steady", "height")
        return "%sx%s" % (w, h) if w else "not reached"

    row("mode at the GRUB menu", mode("vireo"), mode("qemu"), "")
    a, b = num("vireo", "steady", "waited_s"), num("qemu", "steady", "waited_s")
    row("VMM start to steady menu (polled)",
        "%.1f s" % a if a is not None else "n/a",
        "%.1f s" % b if b is not None else "n/a", ratio(a, b))
    for key, label in (("total_pct", "idle host CPU, all threads"),
                       ("vcpu_pct", "  vCPU thread(s)"),
                       ("other_pct", "  other threads"),
                       ("total_sched_pct", "  all threads (schedstat)")):
        a, b = num("vireo", "cpu", key), num("qemu", "cpu", key)
        row(label + " (% of 1 CPU)",
            "%.2f %%" % a if a is not None else "n/a",
            "%.2f %%" % b if b is not None else "n/a", ratio(a, b))
    sv, sq = get("vireo", "shots", "us"), get("qemu", "shots", "us")
    st_v, st_q = stats(sv) if sv else None, stats(sq) if sq else None

    def ms(s):
        return "%.1f ms [%.1f-%.1f] n=%d" % (s[0] / 1000, s[1] / 1000, s[2] / 1000, s[3]) if s else "n/a"

    row("screenshot, median [min-max]", ms(st_v), ms(st_q),
        ratio(st_v[0] if st_v else None, st_q[0] if st_q else None))
    row("screenshot, min", "%.1f ms" % (st_v[1] / 1000) if st_v else "n/a",
        "%.1f ms" % (st_q[1] / 1000) if st_q else "n/a",
        ratio(st_v[1] if st_v else None, st_q[1] if st_q else None))

    def fmt(s):
        f, b = get(s, "shots", "format"), get(s, "shots", "bytes")
        return "%s, %s bytes" % (f, b) if f else "n/a"

    row("screenshot file", fmt("vireo"), fmt("qemu"), "")
    a, b = num("vireo", "rss", "kib"), num("qemu", "rss", "kib")
    row("VmRSS at the menu",
        "%.1f MiB" % (a / 1024) if a else "n/a",
        "%.1f MiB" % (b / 1024) if b else "n/a", ratio(a, b))
    dims = get("fbconv", "info", "size") or "1920x1080x32"
    for key, label in (("render-changed", "conversion, frame changed"),
                       ("render-same", "conversion, frame unchanged"),
                       ("render-idle", "refresh, nothing dirty"),
                       ("png", "in-process PNG (snapshot+save)")):
        s = get("fbconv", key, "us")
        s = stats(s) if s else None
        row("%s (%s)" % (label, dims),
            "%.2f ms [%.2f-%.2f] n=%d" % (s[0] / 1000, s[1] / 1000, s[2] / 1000, s[3]) if s else "n/a",
            "-", "")
    w0 = max(len(x[0]) for x in rows) + 2
    w1 = max(max(len(x[1]) for x in rows), 8) + 2
    w2 = max(max(len(x[2]) for x in rows), 8) + 2
    print("%-*s%-*s%-*s%s" % (w0, "", w1, "vireo", w2, "qemu", "vireo/qemu"))
    for name, v, q, rat in rows:
        print("%-*s%-*s%-*s%s" % (w0, name, w1, v, w2, q, rat))
    return 0


def main(argv):
    cmd = argv[1]
    if cmd == "wait":
        return wait_steady(argv[2], argv[3], argv[4], float(argv[5]), float(argv[6]),
                           argv[7], argv[8])
    if cmd == "shots":
        return shots(argv[2], argv[3], int(argv[4]), argv[5])
    if cmd == "cpu":
        return cpu(int(argv[2]), float(argv[3]), argv[4], int(argv[5]))
    if cmd == "report":
        return report(argv[2])
    print("unknown command %s" % cmd, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
PY

cat >"$WORK/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
insmod all_video
insmod gfxterm
insmod font
loadfont unicode
set gfxmode=$GFXMODE
terminal_output gfxterm serial
echo VIREO-DISPLAY-BENCH
set timeout=-1
set default=0
menuentry "Vireo display benchmark: a static $GFXMODE menu" {
	halt
}
menuentry "second entry" {
	halt
}
EOF
ISO="$WORK/display.iso"
bash assets/guests/build.sh grub-iso "$ISO" "$WORK/grub.cfg" >/dev/null || die "building the GRUB ISO failed"

note "== machine: $(nproc) CPUs, load: $(cut -d' ' -f1-3 /proc/loadavg), kernel $(uname -r)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# helper ARGS...: runs client.py ARGS in the background and waits for it
# (a signal then reaches the trap at once); its output is in $WORK/helper.out.
helper() {
    python3 "$WORK/client.py" "$@" >"$WORK/helper.out" &
    HELPER=$!
    wait "$HELPER"
    HELPER=
}

# measure NAME VCPU_REGEX SOCKKIND SOCK SERIAL CMD...: boots CMD, waits for
# the menu on the serial file SERIAL and a steady screen, measures idle CPU,
# RSS and screenshots, stops CMD.
measure() {
    local name=$1 vre=$2 kind=$3 sock=$4 serial=$5 pid out load
    shift 5
    note "-- $name: booting ($(date -u +%H:%M:%S))"
    "$@" </dev/null >"$WORK/$name.stdout" 2>"$WORK/$name.err" &
    pid=$!
    PIDS+=("$pid")
    mkdir -p "$WORK/$name.shots"
    helper wait "$kind" "$sock" "$WORK/$name.shots" "$WAIT_S" "$POLL_S" "$serial" "second entry"
    out=$(<"$WORK/helper.out")
    echo "$name $out" >>"$RAW"
    note "   $out"
    if ! kill -0 "$pid" 2>/dev/null; then
        note "   $name exited early: $(tail -c 300 "$WORK/$name.err")"
        return
    fi
    case $out in steady*) ;; *)
        note "   $name: no steady menu; stopping it"
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        return
        ;;
    esac
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    helper cpu "$pid" "$IDLE_S" "$vre" "$IDLE_WINDOWS"
    while read -r out; do
        echo "$name $out load=${load// /,}" >>"$RAW"
        note "   $(echo "$out" | cut -c1-200)"
    done <"$WORK/helper.out"
    echo "$name rss kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")" >>"$RAW"
    if [ -n "${BENCH_KEEP:-}" ]; then
        mkdir -p "$BENCH_KEEP" && cp "$WORK/$name.shots"/wait-* "$BENCH_KEEP/" 2>/dev/null &&
            for f in "$BENCH_KEEP"/wait-*; do mv "$f" "$BENCH_KEEP/$name-${f##*/}"; done
    fi
    helper shots "$kind" "$sock" "$SHOTS" "$WORK/$name.shots"
    out=$(<"$WORK/helper.out")
    echo "$name $out" >>"$RAW"
    note "   $out"
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    # GRUB's echo on COM1.
    if grep -q VIREO-DISPLAY-BENCH "$serial"; then
        echo "$name serial marker=seen" >>"$RAW"
    else
        echo "$name serial marker=missing" >>"$RAW"
    fi
}

if [ "$ONLY" != qemu ]; then
    measure vireo 'vcpu[0-9]+' vireo "$WORK/vireo.sock" "$WORK/vireo.stdout" \
        "$VIREO" run --cdrom "$ISO" -m "$MEM" --control "$WORK/vireo.sock"
fi
if [ "$ONLY" != vireo ]; then
    measure qemu 'CPU [0-9]+/KVM' qmp "$WORK/qemu.qmp" "$WORK/qemu.serial" \
        "$QEMU" -accel kvm -M pc -m "$MEM" -nodefaults -vga std -display none -cdrom "$ISO" \
        -name vireo-display-bench,debug-threads=on \
        -serial "file:$WORK/qemu.serial" -qmp "unix:$WORK/qemu.qmp,server=on,wait=off"
fi

note "-- fbconv: $CONV_N renders of ${GFXMODE}"
if out=$("$FBCONV" "$CONV_N" 1920 1080 "$WORK" 2>&1); then
    echo "$out" | awk '{ print "fbconv", $0 }' >>"$RAW"
    note "$(echo "$out" | grep median)"
else
    note "   fbconv failed: $out"
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

{
    echo "Vireo display benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), bash bench/display.sh"
    echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), KVM: $(ls /sys/module 2>/dev/null | grep -E '^kvm_' | tr '\n' ' ')"
    echo "load average at start: $LOAD_START, at end: $LOAD_END"
    echo "QEMU: $("$QEMU" --version | head -1); guest: GRUB gfxterm, gfxmode=$GFXMODE, $MEM MiB"
    echo "idle CPU: $IDLE_WINDOWS windows of ${IDLE_S} s (table: the last); $SHOTS screenshots; $CONV_N renders in fbconv (1920x1080x32)"
    echo
    python3 "$WORK/client.py" report "$RAW"
    echo
    echo "raw samples (us = microseconds; cpu in % of one CPU; threads: name:% from schedstat):"
    cat "$RAW"
} >"$RESULTS"
cat "$RESULTS"
echo "written: $RESULTS" >&2
