#!/usr/bin/env bash
# Build (once) a Debian 13 "trixie" minbase root for the newer-clients e2e
# tests and print its path. Inside it run apt 3.0 (which verifies with sqv)
# and rpm 4.20, entered with plain chroot.
#
# Usage: tests/tools/trixie-root.sh DIR
#
# - Idempotent: a marker file written last says the root is complete and which
#   packages it holds; when it is present and current the script only prints
#   DIR. An incomplete root (no marker, or an older package list) is removed
#   and built again from scratch.
# - The package mirror is read at run time from the system's apt sources
#   (deb822 URIs: in /etc/apt/sources.list.d/*.sources, else the one-line
#   /etc/apt/sources.list) so no host name is written into the project.
# - Nothing stays mounted: /proc is mounted only around the in-root apt-get
#   install (dpkg's maintainer scripts expect it) and unmounted after.
# - Concurrent callers (two tests, or CI and a developer) serialise on
#   DIR.lock, so a root is never built twice at once.
# Needs root and debootstrap.
set -euo pipefail

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
root_dir=$(realpath -m -- "$1")
if [ "$root_dir" = "/" ]; then
  echo "$0: refusing to use / as the trixie root" >&2
  exit 2
fi

# What the tests run inside the root: rpm (rpmkeys 4.20) and dpkg-dev
# (dpkg-source, which `apt-get source` unpacks with). Changing this list makes
# the next run rebuild a cached root.
root_packages="rpm dpkg-dev"
marker="$root_dir/.caprepo-trixie-root-complete"
marker_text="caprepo trixie root v1; packages: $root_packages"

if [ "$(cat -- "$marker" 2>/dev/null)" = "$marker_text" ]; then
  echo "$root_dir"
  exit 0
fi

for tool in debootstrap chroot flock mount umount; do
  if ! command -v "$tool" >/dev/null; then
    echo "$0: $tool is missing (apt-get install debootstrap)" >&2
    exit 1
  fi
done
if [ "$(id -u)" -ne 0 ]; then
  echo "$0: debootstrap and chroot need root" >&2
  exit 1
fi

mkdir -p -- "$(dirname -- "$root_dir")"
exec 9>"$root_dir.lock"
flock 9
# Another caller may have finished the root while this one waited.
if [ "$(cat -- "$marker" 2>/dev/null)" = "$marker_text" ]; then
  echo "$root_dir"
  exit 0
fi

# The main Debian archive apt already uses: the first URI of a "deb" entry
# whose suite has no "-" (bookworm, not bookworm-security or -updates).
debian_mirror() {
  local file
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    awk '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && main_suite && uri != "") { print uri; found = 1; exit }
        types = ""; uri = ""; main_suite = 0
      }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]*#/ { next }
      tolower($1) == "types:" { types = ""; for (i = 2; i <= NF; i++) types = types " " $i; types = types " " }
      tolower($1) == "uris:" { uri = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i !~ /-/) main_suite = 1 }
      tolower($1) == "enabled:" && tolower($2) == "no" { types = "" }
      END { if (!found) flush() }
    ' "$file" | head -n 1
  done
  if [ -f /etc/apt/sources.list ]; then
    # deb [options] URI SUITE COMPONENTS...
    awk '$1 == "deb" {
      i = 2; if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
      if ($(i + 1) !~ /-/) { print $i; exit }
    }' /etc/apt/sources.list
  fi
}
mirror=$(debian_mirror | head -n 1)
if [ -z "$mirror" ]; then
  echo "$0: found no Debian mirror in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list" >&2
  exit 1
fi

unmount_proc() {
  if mountpoint -q "$root_dir/proc" 2>/dev/null; then
    umount "$root_dir/proc"
  fi
}
trap unmount_proc EXIT

# Start from nothing: a half-built root (interrupted debootstrap or apt) is
# not worth repairing. --one-file-system keeps rm out of anything a crashed
# run left mounted.
unmount_proc
rm -rf --one-file-system -- "$root_dir"

echo "building the trixie root in $root_dir (debootstrap --variant=minbase)" >&2
debootstrap --variant=minbase trixie "$root_dir" "$mirror" >&2

echo "installing $root_packages inside the root with its own apt" >&2
mount -t proc proc "$root_dir/proc"
chroot "$root_dir" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 \
  apt-get update -qq >&2
# shellcheck disable=SC2086 # the package list is meant to split into words
chroot "$root_dir" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 \
  apt-get install -y -qq --no-install-recommends $root_packages >&2
chroot "$root_dir" apt-get clean
unmount_proc

printf '%s\n' "$marker_text" >"$marker.tmp"
mv -- "$marker.tmp" "$marker"
echo "$root_dir"
