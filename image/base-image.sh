#!/usr/bin/env bash
# Puts the Dockerfile's base image (debian:bookworm-slim) into local container storage when it
# is not there, built from Debian's own packages: debootstrap, trimmed like Debian's slim image,
# imported under the same name. A machine that reaches a registry can pull the real one instead.
set -euo pipefail

name=${BASE_IMAGE:-docker.io/library/debian:bookworm-slim}
cache=${IMAGE_CACHE:-.tools/image}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if podman image exists "$name"; then
    exit 0
fi
mkdir -p "$cache"
tarball="$cache/bookworm-minbase.tar"
if [ ! -s "$tarball" ]; then
    root=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    echo "base image: debootstrap --variant=minbase bookworm ($mirror)"
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
        || { tail -20 "$cache/debootstrap.log"; exit 1; }
    # What Debian's slim image leaves out, and keeps out of later installs.
    cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
CFG
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$root"/usr/share/{man,info,lintian,locale}/* "$root"/var/cache/apt/* \
        "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/var/log/apt/*
    tar -C "$root" --numeric-owner -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
fi
podman import --change 'CMD ["bash"]' "$tarball" "$name" >/dev/null 2>&1
echo "base image: $name imported from $tarball"
