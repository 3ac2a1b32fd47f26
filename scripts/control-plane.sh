#!/usr/bin/env bash
# Build the real Kubernetes control plane the tests run against (tests/cluster/):
# kube-apiserver and kube-controller-manager from k8s.io/kubernetes, and etcd from
# go.etcd.io/etcd/server/v3 — all from source, through the Go module proxy only.
#
# Idempotent: a warm cache returns at once. The last line printed is the bin directory.
#
#   scripts/control-plane.sh            # build if needed, print the bin directory
#   KUBE_VERSION=v1.37.2 scripts/control-plane.sh
#
# Why etcd from source and not Debian's etcd-server: Debian 12 ships etcd 3.4.23, and
# kube-apiserver 1.37 supports etcd 3.5.x and newer only (its storage layer relies on
# the 3.5+ client API and progress-notify semantics). etcd 3.6 is on the module proxy.
#
# Why a consumer module: k8s.io/kubernetes requires its staging modules (k8s.io/api,
# k8s.io/client-go, ...) at v0.0.0 with replace directives to ./staging, which only
# apply inside its own repository. A module that depends on it must replace each
# staging module with its published tag, v0.<minor>.<patch>.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/queue-autoscaler/control-plane/${KUBE_VERSION}"
BIN="$CACHE/bin"
BINARIES=(kube-apiserver kube-controller-manager etcd)

log() { printf 'control-plane: %s\n' "$*" >&2; }

have_all() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
}

if have_all; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed (needed to build the control plane)"; exit 2; }
mkdir -p "$BIN" "$CACHE/src/kube" "$CACHE/src/etcd"
export GOFLAGS="-mod=mod -buildvcs=false -trimpath"
export CGO_ENABLED=0
start=$(date +%s)

build_kube() {
  local dir="$CACHE/src/kube"
  cd "$dir"
  if [[ ! -f go.mod ]] || ! grep -q "k8s.io/kubernetes $KUBE_VERSION" go.mod; then
    rm -f go.mod go.sum
    go mod init queue-autoscaler.io/control-plane >/dev/null 2>&1
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
    {
      echo "require k8s.io/kubernetes $KUBE_VERSION"
      echo "replace ("
      sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$gomod" |
        while read -r mod; do echo "	$mod => $mod $STAGING_VERSION"; done
      echo ")"
    } >>go.mod
    cat >tools.go <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
EOF
  fi
  log "building kube-apiserver and kube-controller-manager $KUBE_VERSION (cold: tens of minutes on 2 cores)"
  go build -tags tools -ldflags="-s -w" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
}

build_etcd() {
  local dir="$CACHE/src/etcd"
  cd "$dir"
  if [[ ! -f go.mod ]] || ! grep -q "go.etcd.io/etcd/server/v3 $ETCD_VERSION" go.mod; then
    rm -f go.mod go.sum
    go mod init queue-autoscaler.io/etcd >/dev/null 2>&1
    echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION" >>go.mod
    cat >main.go <<'EOF'
// etcd's own main, as in go.etcd.io/etcd/v3 (whose module cannot be installed directly).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  fi
  log "building etcd $ETCD_VERSION"
  go build -ldflags="-s -w" -o "$BIN/etcd" .
}

[[ -x "$BIN/etcd" ]] || build_etcd
[[ -x "$BIN/kube-apiserver" && -x "$BIN/kube-controller-manager" ]] || build_kube
have_all || { log "build finished but binaries are missing in $BIN"; exit 1; }
log "ready in $(($(date +%s) - start)) s"
echo "$BIN"
