#!/usr/bin/env bash
# Installs the Debian packages the demo and the tests need, when they are missing.
# Usage: scripts/ensure-system-deps.sh BINARY... (the binary name is the package name,
# except where mapped below).
set -euo pipefail
missing=()
for bin in "$@"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
[ ${#missing[@]} -eq 0 ] && exit 0
pkgs=()
for bin in "${missing[@]}"; do
  case "$bin" in
    promtool) pkgs+=(prometheus) ;;
    redis-cli) pkgs+=(redis-tools) ;;  # `--cluster create` (the Cluster tests)
    *) pkgs+=("$bin") ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "queue-autoscaler needs these Debian packages: ${pkgs[*]}" >&2
  echo "install them with: sudo apt-get install -y --no-install-recommends ${pkgs[*]}" >&2
  exit 1
fi
echo "installing ${pkgs[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
