#!/usr/bin/env bash
# Builds the mpp-proxy image with buildah (no daemon): `image/build.sh TAG`. The package index
# and CA bundle this machine's pip uses are handed to the build as secrets, never as layers.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:?usage: image/build.sh TAG}

image/base-image.sh

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip_setting() { python3 -m pip config get "global.$1" 2>/dev/null || true; }
index=${PIP_INDEX_URL:-$(pip_setting index-url)}
cert=${PIP_CERT:-$(pip_setting cert)}
{
    echo "[global]"
    # Only a network index means anything inside the build; local paths do not exist there.
    case "$index" in http://* | https://*) echo "index-url = $index" ;; esac
    if [ -n "$cert" ] && [ -f "$cert" ]; then echo "cert = /etc/ssl/pip-ca.crt"; fi
} >"$work/pip.conf"
if [ -n "$cert" ] && [ -f "$cert" ]; then cp "$cert" "$work/pip-ca.crt"; else : >"$work/pip-ca.crt"; fi

version=$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")
revision=$(git rev-parse HEAD 2>/dev/null || true)
buildah bud --isolation chroot --format docker --layers \
    --secret id=pip.conf,src="$work/pip.conf" \
    --secret id=pip-ca.crt,src="$work/pip-ca.crt" \
    --build-arg VERSION="$version" \
    --build-arg REVISION="$revision" \
    --build-arg SOURCE="${IMAGE_SOURCE:-}" \
    --tag "$tag" .
podman image inspect --format '{{.Size}}' "$tag" |
    awk -v tag="$tag" '{ printf "image %s: %.1f MB\n", tag, $1 / 1e6 }'
