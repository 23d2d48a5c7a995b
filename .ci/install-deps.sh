#!/usr/bin/env bash
# Installs every Debian package Vireo's build, tests and guest recipes need.
# Idempotent; safe to run on a fresh Debian 12 machine as root.
set -euo pipefail
PKGS=(
  nasm xorriso mtools cpio kmod gzip dosfstools
  seabios qemu-system-x86 qemu-utils
  grub-pc-bin grub-common
  iproute2 bridge-utils
  xvfb imagemagick xdotool
  libegl1 libegl-mesa0 libgl1-mesa-dri mesa-vulkan-drivers libxkbcommon0 libxkbcommon-x11-0
  libx11-6 libxcursor1 libxrandr2 libxi6 libwayland-client0 libwayland-egl1
  fonts-dejavu-core
  # assets/guests/build.sh minilinux: a tinyconfig build of linux-source-6.1
  gcc make bc flex bison libelf-dev lz4 patch
)
missing() {
  local p
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
# Two passes: apt may remove a package that came from elsewhere (a backported
# qemu-utils, say) to satisfy another one in the list; the second pass puts
# Debian 12's own version back.
export DEBIAN_FRONTEND=noninteractive
updated=
for pass in 1 2; do
  mapfile -t todo < <(missing)
  ((${#todo[@]})) || break
  [ -n "$updated" ] || { apt-get update -qq; updated=1; }
  apt-get install -y -qq --no-install-recommends "${todo[@]}"
done
mapfile -t todo < <(missing)
if ((${#todo[@]})); then
  echo "install-deps.sh: still missing after install: ${todo[*]}" >&2
  exit 1
fi
