#!/usr/bin/env bash
# Builds the strait image with podman (or buildah) from a binary built on
# this machine, pulling nothing: the image is FROM scratch and holds the
# binary, the shared libraries `ldd` says it links, and /etc/passwd and
# /etc/group naming the nonroot user 65532.
#
#   deploy/image/build.sh [BINARY] [TAG]
#
# BINARY defaults to target/release/strait (cargo build --release -p
# strait), TAG to strait:VERSION. Prints the image's size at the end.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
binary="${1:-target/release/strait}"
[ -x "$binary" ] || { echo "build.sh: no executable at $binary (cargo build --release -p strait)" >&2; exit 2; }
version="$("$binary" --version | awk '{print $2}')"
tag="${2:-strait:$version}"
builder="${BUILDER:-podman}"
command -v "$builder" >/dev/null || { echo "build.sh: $builder not found (Debian package podman)" >&2; exit 2; }

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
root="$context/rootfs"
install -D -m 0755 "$binary" "$root/usr/local/bin/strait"
# The release profile keeps debug information for profiling; the image
# does not need it (the Dockerfile strips too).
if command -v strip >/dev/null; then strip "$root/usr/local/bin/strait"; fi
# The dynamic loader and every library, at the paths the binary asks for.
ldd "$binary" | awk '/=> \// {print $3} /^[[:space:]]*\// {print $1}' | sort -u |
  while read -r lib; do
    install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  done
mkdir -p "$root/etc" "$root/tmp"
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
cp "$here/Containerfile" "$context/Containerfile"
"$builder" build --quiet -t "$tag" -f "$context/Containerfile" "$context" >/dev/null
size="$("$builder" image inspect --format '{{.Size}}' "$tag")"
echo "$tag: $((size / 1024 / 1024)) MiB ($size bytes)"
