#!/usr/bin/env bash
# Installs the real servers the controller tests start on loopback, and prints where they are:
#   Prometheus and etcd from Debian's packages (prometheus, etcd-server);
#   kube-apiserver and kube-controller-manager built from Debian's `kubernetes` *source* package
#   (Debian ships no binary of them), offline from its vendored modules, cached outside the repo
#   so only a fresh machine pays the build (~10 min on 2 cores, ~1.3 GB peak memory).
#
# The source comes through the machine's own apt configuration: a private apt directory whose
# sources list repeats the configured entries as deb-src. The system's apt files are not edited.
#
# usage: scripts/test_servers.sh           install what is missing, then print the paths
#        scripts/test_servers.sh --check   print the paths, or exit 1 naming what is missing
set -euo pipefail

KUBE_VERSION=1.20.2
CACHE="${CLUSTERGYM_SERVERS:-${XDG_CACHE_HOME:-$HOME/.cache}/clustergym/servers}"
# the suffix names the build recipe: a cached build from an older recipe is not reused
KUBE_BIN="$CACHE/kubernetes-$KUBE_VERSION-reflect2/bin"
PACKAGES=(prometheus etcd-server)
BUILD_PACKAGES=(golang-go rsync)

missing() {
    local out=()
    command -v prometheus >/dev/null || out+=(prometheus)
    command -v etcd >/dev/null || out+=(etcd)
    for b in kube-apiserver kube-controller-manager; do
        [ -x "$KUBE_BIN/$b" ] || out+=("$KUBE_BIN/$b")
    done
    echo "${out[@]:-}"
}

report() {
    echo "prometheus=$(command -v prometheus)"
    echo "etcd=$(command -v etcd)"
    echo "kube-apiserver=$KUBE_BIN/kube-apiserver"
    echo "kube-controller-manager=$KUBE_BIN/kube-controller-manager"
}

if [ "${1:-}" = "--check" ]; then
    m="$(missing)"
    if [ -n "$m" ]; then echo "missing: $m (run scripts/test_servers.sh)" >&2; exit 1; fi
    report; exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

apt_install() {
    # Debian's service scripts must not start the packaged daemons: the tests start their own.
    export DEBIAN_FRONTEND=noninteractive
    if ! $SUDO apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1; then
        $SUDO apt-get update -q >/dev/null
        $SUDO apt-get install -y -q --no-install-recommends "$@" >/dev/null
    fi
}

need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v etcd >/dev/null || need+=(etcd-server)
[ ${#need[@]} -eq 0 ] || { echo "installing ${need[*]} (apt)" >&2; apt_install "${need[@]}"; }

if [ ! -x "$KUBE_BIN/kube-apiserver" ] || [ ! -x "$KUBE_BIN/kube-controller-manager" ]; then
    command -v go >/dev/null && command -v rsync >/dev/null || apt_install "${BUILD_PACKAGES[@]}"
    work="$(mktemp -d "${TMPDIR:-/tmp}/clustergym-kube.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    apt_dir="$work/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/sources.list.d" "$work/src"
    # deb-src twins of the configured entries, in both apt formats
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] && sed 's/^Types:.*$/Types: deb-src/' "$f" > "$apt_dir/sources.list.d/$(basename "$f")"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -e "$f" ] && grep -E '^deb ' "$f" | sed 's/^deb /deb-src /' >> "$apt_dir/sources.list.d/src.list" || true
    done
    opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
          -o "Dir::State::Lists=$apt_dir/lists" -o APT::Sandbox::User=root)
    echo "fetching Debian's kubernetes source package" >&2
    apt-get -q "${opts[@]}" update >/dev/null
    (cd "$work/src" && apt-get -q "${opts[@]}" source --download-only kubernetes >/dev/null)
    dsc="$(ls "$work"/src/kubernetes_*.dsc)"
    dpkg-source --no-check -x "$dsc" "$work/src/kubernetes" >/dev/null
    tree="$work/src/kubernetes"
    grep -q "GitVersion.*v$KUBE_VERSION\|$KUBE_VERSION" "$tree/debian/changelog" \
        || { echo "the source package is not kubernetes $KUBE_VERSION" >&2; exit 1; }
    # Go >= 1.18 changed reflect.mapiterinit: the reflect2 v1.0.1 vendored by Kubernetes 1.20 then
    # crashes the API server (SIGSEGV in mapiterinit) whenever json-iterator encodes a map, i.e. on
    # every custom-resource write. reflect2 v1.0.2 (same API) has the fix: Debian packages it as
    # golang-github-modern-go-reflect2-dev; vendor it over v1.0.1.
    reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
    [ -f "$reflect2/go_above_118.go" ] || apt_install golang-github-modern-go-reflect2-dev
    rsync -a --delete "$reflect2/" "$tree/vendor/github.com/modern-go/reflect2/"
    echo "building kube-apiserver and kube-controller-manager $KUBE_VERSION (GOPATH mode, offline; ~10 min)" >&2
    mkdir -p "$tree/.go/src/k8s.io"
    ln -s ../../.. "$tree/.go/src/k8s.io/kubernetes"
    (cd "$tree" && env GOPATH="$tree/.go" GO111MODULE=off GOFLAGS=-mod=vendor GOPROXY=off CGO_ENABLED=0 \
        HOME="$work/home" PATH="/usr/lib/go/bin:$PATH" \
        KUBE_GIT_VERSION="v$KUBE_VERSION" KUBE_GIT_TREE_STATE=clean \
        make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$work/build.log" 2>&1) \
        || { tail -30 "$work/build.log" >&2; echo "build failed (log above)" >&2; exit 1; }
    mkdir -p "$KUBE_BIN.partial"
    cp "$tree/_output/bin/kube-apiserver" "$tree/_output/bin/kube-controller-manager" "$KUBE_BIN.partial/"
    rm -rf "$KUBE_BIN" && mv "$KUBE_BIN.partial" "$KUBE_BIN"
fi
report
