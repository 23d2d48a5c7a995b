#!/usr/bin/env bash
# Build Vireo's test guests. See README.md next to this script for what each
# image does and the exact output it prints.
#
#   build.sh [tiny|grub|linux|minilinux|all]... (default: tiny grub)
#   build.sh grub-iso OUT.iso GRUB_CFG [EXTRA_DIR]
#
# Outputs go to ${VIREO_GUEST_DIR:-<repo>/target/guests}/<set>/. Each set has
# a stamp (<set>/.stamp) holding a hash of its inputs; an up-to-date set is
# not rebuilt. Concurrent callers serialize on <out>/.lock. Only Debian
# packages are used: nasm, grub-pc-bin, grub-common, xorriso, mtools, cpio,
# kmod (and, for the linux set, packages fetched with `apt-get download` and
# unpacked with `dpkg -x` into <out>/linux/cache, nothing installed).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${VIREO_GUEST_DIR:-$REPO/target/guests}
GRUB_PLATFORM_DIR=/usr/lib/grub/i386-pc
# The tiny portio benchmark's loop count.
PORTIO_COUNT=200000
# Modules the Linux initramfs carries (with their dependencies).
LINUX_MODULES="virtio_pci virtio_blk virtio_net ata_piix sd_mod sr_mod bochs isofs"
# env-disk.img: partition 1 starts at this byte offset (sector 2048).
ENV_PART_OFFSET=1048576

export MTOOLS_SKIP_CHECK=1

log() { echo "build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "missing tool '$tool' (install the Debian package that provides it)"
    done
}

# Hash of the files/directories given (paths and contents), plus this script.
inputs_hash() {
    {
        sha256sum "$HERE/build.sh"
        local p
        for p in "$@"; do
            if [ -d "$p" ]; then
                (cd "$p" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
            else
                sha256sum "$p"
            fi
        done
    } | sed "s#$HERE##g" | sha256sum | cut -d' ' -f1
}

# up_to_date SET HASH FILE...: the stamp matches and every output exists.
up_to_date() {
    local set=$1 hash=$2 f
    shift 2
    [ -f "$OUT/$set/.stamp" ] && [ "$(cat "$OUT/$set/.stamp")" = "$hash" ] || return 1
    for f in "$@"; do
        [ -s "$OUT/$set/$f" ] || return 1
    done
}

print_outputs() {
    local set=$1 f
    shift
    for f in "$@"; do
        echo "$OUT/$set/$f"
    done
}

# ---------------------------------------------------------------- grub-iso
# make_grub_iso OUT.iso GRUB_CFG [EXTRA_DIR]: a BIOS GRUB rescue ISO (hybrid:
# it also boots as a hard disk) with GRUB_CFG at /boot/grub/grub.cfg and
# EXTRA_DIR's contents at the root.
make_grub_iso() {
    local out=$1 cfg=$2 extra=${3:-}
    need grub-mkrescue xorriso
    [ -f "$cfg" ] || die "no such grub.cfg: $cfg"
    [ -z "$extra" ] || [ -d "$extra" ] || die "no such directory: $extra"
    [ -d "$GRUB_PLATFORM_DIR" ] || die "$GRUB_PLATFORM_DIR missing (Debian package grub-pc-bin)"
    local tree log tmp
    tree=$(mktemp -d "${TMPDIR:-/tmp}/vireo-grub-iso.XXXXXX")
    log=$tree.log
    mkdir -p "$tree/boot/grub" "$(dirname "$out")"
    if [ -n "$extra" ]; then
        cp -r "$extra/." "$tree/"
    fi
    cp "$cfg" "$tree/boot/grub/grub.cfg"
    tmp=$out.tmp.$$
    # --locales= and --themes= keep the image small; the unicode font stays
    # (gfxterm needs it).
    if ! grub-mkrescue -d "$GRUB_PLATFORM_DIR" --locales= --themes= -o "$tmp" "$tree" >"$log" 2>&1; then
        cat "$log" >&2
        rm -rf "$tree" "$log" "$tmp"
        die "grub-mkrescue failed for $out"
    fi
    mv -f "$tmp" "$out"
    rm -rf "$tree" "$log"
}

# Per-ISO cache for the grub-iso command: OUT.iso.stamp holds a hash of the
# cfg and extra dir.
cmd_grub_iso() {
    [ $# -ge 2 ] && [ $# -le 3 ] || die "usage: build.sh grub-iso OUT.iso GRUB_CFG [EXTRA_DIR]"
    local out=$1 cfg=$2 extra=${3:-} hash
    if [ -n "$extra" ]; then hash=$(inputs_hash "$cfg" "$extra"); else hash=$(inputs_hash "$cfg"); fi
    if [ -s "$out" ] && [ -f "$out.stamp" ] && [ "$(cat "$out.stamp")" = "$hash" ]; then
        echo "$out"
        return
    fi
    rm -f "$out.stamp"
    make_grub_iso "$out" "$cfg" "$extra"
    echo "$hash" >"$out.stamp"
    echo "$out"
}

# -------------------------------------------------------------------- tiny
TINY_OUTPUTS="bootproto.bin portio.bin portio-0.bin vga13.iso vgaplanar.iso"

build_tiny() {
    local src=$HERE/tiny dst=$OUT/tiny hash
    hash=$(inputs_hash "$src")
    if ! up_to_date tiny "$hash" $TINY_OUTPUTS; then
        need nasm
        log "building tiny guests"
        mkdir -p "$dst"
        rm -f "$dst/.stamp"
        nasm -f bin -I "$src/" -o "$dst/bootproto.bin" "$src/bootproto.asm"
        nasm -f bin -I "$src/" -DCOUNT=$PORTIO_COUNT -o "$dst/portio.bin" "$src/portio.asm"
        nasm -f bin -I "$src/" -DCOUNT=0 -o "$dst/portio-0.bin" "$src/portio.asm"
        # Boot-sector VGA guests as El Torito no-emulation CDs.
        need xorriso
        local name tree
        for name in vga13 vgaplanar; do
            tree=$(mktemp -d "${TMPDIR:-/tmp}/vireo-tiny-iso.XXXXXX")
            nasm -f bin -o "$tree/boot.bin" "$src/$name.asm"
            xorriso -as mkisofs -quiet -o "$dst/$name.iso" -b boot.bin -no-emul-boot \
                -boot-load-size 4 "$tree" 2>/dev/null
            rm -rf "$tree"
        done
        echo "$hash" >"$dst/.stamp"
    fi
    print_outputs tiny $TINY_OUTPUTS
}

# -------------------------------------------------------------------- grub
GRUB_OUTPUTS="basic.iso reboot.iso menu.iso menu-text.iso env.iso env-disk.img gfx.iso disk-boot.img"

# A little-endian u32 as printf escapes.
le32() {
    local v=$1
    printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((v & 255)) $(((v >> 8) & 255)) $(((v >> 16) & 255)) $(((v >> 24) & 255))
}

# env-disk.img: 32 MiB, MBR with one FAT16 partition (type 0x06) from sector
# 2048 to the end, holding a fresh 1 KiB GRUB environment block /grubenv.
# Not bootable: its MBR code only hands over to the next boot device.
make_env_disk() {
    local img=$1 tmpdir=$2
    local total=$((32 * 1024 * 1024 / 512)) start=$((ENV_PART_OFFSET / 512))
    local count=$((total - start))
    need mformat mcopy grub-editenv
    rm -f "$img"
    truncate -s $((total * 512)) "$img"
    # Partition entry 1 at 0x1BE: not active, CHS fields saturated (LBA
    # only), type 0x06, LBA start, sector count. Disk signature at 0x1B8.
    printf "\\x56\\x49\\x52\\x45" | dd of="$img" bs=1 seek=$((0x1B8)) conv=notrunc status=none
    printf "\\x00\\xfe\\xff\\xff\\x06\\xfe\\xff\\xff$(le32 $start)$(le32 $count)" |
        dd of="$img" bs=1 seek=$((0x1BE)) conv=notrunc status=none
    printf '\x55\xaa' | dd of="$img" bs=1 seek=510 conv=notrunc status=none
    # The signature makes SeaBIOS treat the disk as bootable (QEMU's default
    # boot order tries the hard disk before the CD), so the MBR code is
    # `int 0x18` (boot failed: SeaBIOS tries the next boot device), then
    # `cli; hlt` forever.
    printf '\xcd\x18\xfa\xf4\xeb\xfd' | dd of="$img" bs=1 seek=0 conv=notrunc status=none
    # FAT16 (mformat picks FAT16 for this size with 2 KiB clusters).
    mformat -i "$img@@$ENV_PART_OFFSET" -T $count -h 64 -s 32 -H $start -c 4 -v VIREOENV ::
    grub-editenv "$tmpdir/grubenv" create
    mcopy -i "$img@@$ENV_PART_OFFSET" "$tmpdir/grubenv" ::/grubenv
}

build_grub() {
    local src=$HERE/grub dst=$OUT/grub hash tmpdir name
    hash=$(inputs_hash "$src")
    if ! up_to_date grub "$hash" $GRUB_OUTPUTS; then
        log "building GRUB guests"
        mkdir -p "$dst"
        rm -f "$dst/.stamp"
        tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/vireo-grub.XXXXXX")
        mkdir -p "$tmpdir/basic"
        cp "$src/hello.txt" "$tmpdir/basic/hello.txt"
        make_grub_iso "$dst/basic.iso" "$src/basic.cfg" "$tmpdir/basic"
        for name in reboot menu menu-text env gfx; do
            make_grub_iso "$dst/$name.iso" "$src/$name.cfg"
        done
        # A hybrid rescue image boots from a hard disk as well as a CD.
        make_grub_iso "$dst/disk-boot.img" "$src/disk-boot.cfg"
        make_env_disk "$dst/env-disk.img" "$tmpdir"
        rm -rf "$tmpdir"
        echo "$hash" >"$dst/.stamp"
    fi
    print_outputs grub $GRUB_OUTPUTS
}

# ------------------------------------------------------------------- linux
LINUX_OUTPUTS="vmlinuz initramfs.img linux.iso"

# A newc cpio archive (with trailer) holding one character device node, made
# without mknod so no root is needed: cpio_chardev NAME MAJOR MINOR.
cpio_chardev() {
    local name=$1 major=$2 minor=$3
    cpio_entry "$name" $((0x2000 | 0600)) "$major" "$minor"
    cpio_entry "TRAILER!!!" 0 0 0
}

# cpio_entry NAME MODE RDEVMAJOR RDEVMINOR: one empty newc entry.
cpio_entry() {
    # magic ino mode uid gid nlink mtime filesize devmaj devmin rdevmaj rdevmin namesize check
    local n=$1 mode=$2 rmaj=$3 rmin=$4 ns=$((${#1} + 1))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        1 "$mode" 0 0 1 0 0 0 0 "$rmaj" "$rmin" "$ns" 0
    printf '%s\0' "$n"
    # header (110 bytes) + name padded to a multiple of 4
    local padn=$(((4 - (110 + ns) % 4) % 4))
    head -c $padn /dev/zero
}

# apt_download PKG...: into the current directory; apt-get update once if
# the first try fails.
apt_download() {
    if ! apt-get download "$@" >apt.log 2>&1; then
        log "apt-get download failed; running apt-get update and retrying"
        apt-get update >>apt.log 2>&1 || { cat apt.log >&2; die "apt-get update failed"; }
        apt-get download "$@" >>apt.log 2>&1 || { cat apt.log >&2; die "apt-get download $* failed"; }
    fi
}

build_linux() {
    local src=$HERE/linux dst=$OUT/linux hash
    hash=$(inputs_hash "$src")
    if up_to_date linux "$hash" $LINUX_OUTPUTS; then
        print_outputs linux $LINUX_OUTPUTS
        return
    fi
    need apt-get apt-cache dpkg depmod modprobe cpio gzip
    log "building the Linux guest"
    local cache=$dst/cache kpkg root kver
    mkdir -p "$cache"
    rm -f "$dst/.stamp"
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    if [ -z "$kpkg" ]; then
        (cd "$cache" && apt-get update >apt.log 2>&1) || true
        kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    fi
    [ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 to a versioned kernel package"
    kver=${kpkg#linux-image-}
    # The .debs stay in the cache; they are unpacked afresh (about 400 MiB,
    # removed again at the end) for each build.
    local debs=$cache/debs deb
    mkdir -p "$debs"
    if ! compgen -G "$debs/${kpkg}_*.deb" >/dev/null || ! compgen -G "$debs/busybox-static_*.deb" >/dev/null; then
        rm -f "$debs"/*.deb
        (cd "$debs" && apt_download "$kpkg" busybox-static)
    fi
    root=$cache/root
    rm -rf "$root" "$cache"/root-*
    mkdir -p "$root"
    for deb in "$debs/${kpkg}"_*.deb "$debs"/busybox-static_*.deb; do
        dpkg -x "$deb" "$root"
    done
    [ -x "$root/bin/busybox" ] || die "busybox-static has no /bin/busybox"
    [ -f "$root/boot/vmlinuz-$kver" ] || die "kernel package $kpkg has no /boot/vmlinuz-$kver"
    [ -d "$root/lib/modules/$kver" ] || die "kernel package $kpkg has no /lib/modules/$kver"
    # Debian generates modules.dep at install time; do it in the cache root.
    depmod -b "$root" "$kver"

    # Module load order: each module's dependencies first, each once.
    local order=() seen=" " line path m
    for m in $LINUX_MODULES; do
        while read -r kind path _; do
            [ "$kind" = insmod ] || continue
            case $seen in *" $path "*) continue ;; esac
            seen="$seen$path "
            order+=("$path")
        done < <(modprobe -d "$root" -S "$kver" --show-depends "$m")
    done
    [ ${#order[@]} -gt 0 ] || die "no modules resolved"

    local ird
    ird=$(mktemp -d "${TMPDIR:-/tmp}/vireo-initramfs.XXXXXX")
    mkdir -p "$ird"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,etc,root,lib/modules/"$kver"}
    cp "$root/bin/busybox" "$ird/bin/busybox"
    ln -s busybox "$ird/bin/sh"
    cp "$src/init" "$ird/init"
    chmod 755 "$ird/init"
    : >"$ird/etc/vireo-modules"
    for path in "${order[@]}"; do
        local rel=${path#"$root"} dest
        dest=$ird${rel%.xz}
        dest=${dest%.zst}
        mkdir -p "$(dirname "$dest")"
        case $path in
            *.ko.xz) xz -dc "$path" >"$dest" ;;
            *.ko.zst) zstd -qdc "$path" >"$dest" ;;
            *) cp "$path" "$dest" ;;
        esac
        echo "${dest#"$ird"}" >>"$ird/etc/vireo-modules"
    done
    {
        (cd "$ird" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0)
        cpio_chardev dev/console 5 1
    } | gzip -n -6 >"$dst/initramfs.img.tmp"
    mv -f "$dst/initramfs.img.tmp" "$dst/initramfs.img"
    rm -rf "$ird"
    cp "$root/boot/vmlinuz-$kver" "$dst/vmlinuz"

    local isotree
    isotree=$(mktemp -d "${TMPDIR:-/tmp}/vireo-linux-iso.XXXXXX")
    cp "$dst/vmlinuz" "$isotree/vmlinuz"
    cp "$dst/initramfs.img" "$isotree/initramfs.img"
    make_grub_iso "$dst/linux.iso" "$src/grub.cfg" "$isotree"
    rm -rf "$isotree" "$root"
    echo "$kver" >"$dst/kernel-version"
    echo "$hash" >"$dst/.stamp"
    print_outputs linux $LINUX_OUTPUTS
}

# --------------------------------------------------------------- minilinux
# A minimal kernel that boots under kvm_pvm (issue 17): Debian's
# linux-source-6.1, `make tinyconfig` plus minilinux/config, patched with
# minilinux/*.patch. The build (15-30 min on 2 loaded cores) is cached outside
# the checkout in ${XDG_CACHE_HOME:-~/.cache}/vireo/guests/minilinux-<hash>/,
# keyed by the recipe (minilinux/ and this function's text, not the rest of
# this script); <out>/minilinux/ gets copies of vmlinux (PVH) and bzImage.
# Needs: gcc make bc flex bison libelf-dev lz4 patch (see .ci/install-deps.sh).
MINILINUX_OUTPUTS="vmlinux bzImage config"

build_minilinux() {
    local src=$HERE/minilinux dst=$OUT/minilinux hash cache store
    hash=$({
        (cd "$src" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
        declare -f build_minilinux
    } | sha256sum | cut -c1-16)
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/vireo/guests
    store=$cache/minilinux-$hash
    if up_to_date minilinux "$hash" $MINILINUX_OUTPUTS; then
        print_outputs minilinux $MINILINUX_OUTPUTS
        return
    fi
    if ! [ -s "$store/vmlinux" ] || ! [ -s "$store/bzImage" ] || ! [ -s "$store/config" ]; then
        need apt-get dpkg tar gcc make bc flex bison patch lz4
        log "building the minimal Linux kernel (cache: $store)"
        local debs=$cache/debs tree deb line
        mkdir -p "$debs"
        if ! compgen -G "$debs/linux-source-6.1_*.deb" >/dev/null; then
            (cd "$debs" && apt_download linux-source-6.1)
        fi
        deb=$(ls "$debs"/linux-source-6.1_*.deb | tail -n1)
        # A failed build's tree (we hold the lock, so nobody else's).
        rm -rf "$cache"/minilinux-build.* "$cache"/minilinux-*.tmp
        tree=$(mktemp -d "$cache/minilinux-build.XXXXXX")
        dpkg -x "$deb" "$tree/pkg"
        tar -xaf "$tree"/pkg/usr/src/linux-source-6.1.tar.* -C "$tree"
        rm -rf "$tree/pkg"
        local k=$tree/linux-source-6.1 p
        for p in "$src"/*.patch; do
            patch -s -d "$k" -p1 <"$p" || die "patch $p does not apply to $deb"
        done
        make -s -C "$k" tinyconfig >"$tree/kconfig.log" 2>&1
        (cd "$k" && scripts/kconfig/merge_config.sh -m .config "$src/config") >>"$tree/kconfig.log" 2>&1
        make -s -C "$k" olddefconfig >>"$tree/kconfig.log" 2>&1
        # Every option the fragment asks for must have survived olddefconfig.
        while read -r line; do
            case $line in
                CONFIG_*=*) grep -qxF "$line" "$k/.config" || die "kernel config lost '$line' (a missing dependency?)" ;;
                "# CONFIG_"*" is not set")
                    line=${line#\# }
                    ! grep -q "^${line%% *}=" "$k/.config" || die "kernel config kept '${line%% *}' on" ;;
            esac
        done <"$src/config"
        if ! nice -n 10 make -C "$k" -j"$(nproc)" vmlinux bzImage >"$tree/make.log" 2>&1; then
            tail -n 40 "$tree/make.log" >&2
            die "kernel build failed (log: $tree/make.log)"
        fi
        mkdir -p "$store.tmp"
        cp "$k/vmlinux" "$store.tmp/vmlinux"
        cp "$k/arch/x86/boot/bzImage" "$store.tmp/bzImage"
        cp "$k/.config" "$store.tmp/config"
        rm -rf "$store"
        mv "$store.tmp" "$store"
        rm -rf "$tree"
    fi
    mkdir -p "$dst"
    rm -f "$dst/.stamp"
    local f
    for f in $MINILINUX_OUTPUTS; do
        cp "$store/$f" "$dst/$f.tmp"
        mv -f "$dst/$f.tmp" "$dst/$f"
    done
    echo "$hash" >"$dst/.stamp"
    print_outputs minilinux $MINILINUX_OUTPUTS
}

# -------------------------------------------------------------------- main
main() {
    if [ "${1:-}" = grub-iso ]; then
        shift
        cmd_grub_iso "$@"
        return
    fi
    local sets=("$@") s
    [ ${#sets[@]} -gt 0 ] || sets=(tiny grub)
    for s in "${sets[@]}"; do
        case $s in
            tiny | grub | linux | minilinux | all) ;;
            -h | --help)
                sed -n '2,13p' "$HERE/build.sh" | sed 's/^# \{0,1\}//'
                return
                ;;
            *) die "unknown set '$s' (expected tiny, grub, linux, minilinux, all or grub-iso)" ;;
        esac
    done
    mkdir -p "$OUT"
    exec 9>"$OUT/.lock"
    flock 9
    for s in "${sets[@]}"; do
        case $s in
            tiny) build_tiny ;;
            grub) build_grub ;;
            linux) build_linux ;;
            minilinux) build_minilinux ;;
            all) build_tiny && build_grub && build_linux && build_minilinux ;;
        esac
    done
}

main "$@"
