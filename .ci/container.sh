#!/usr/bin/env bash
# The container image, built from the Containerfile and run here with Debian's
# podman: no image registry is reached. The base image is Debian bookworm made
# by debootstrap from the mirror apt uses, with python3 from Debian; it is kept
# in this script's own podman storage between runs and rebuilt when missing.
# Then the image is run with /data on a volume and driven from outside with
# grpcurl: health, a walkthrough, not root, a restart keeps the data, SIGTERM
# ends it with 0 within the grace period.
#
#   .ci/container.sh          everything
#   .ci/container.sh base     only make sure the base image exists
#
# Settings (environment): FEEDBACK_CI_STATE (where podman's storage and config
# live; default /var/lib/feedback-service-ci), FEEDBACK_CI_PORT (default 21950).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$SECONDS

state=${FEEDBACK_CI_STATE:-/var/lib/feedback-service-ci}
port=${FEEDBACK_CI_PORT:-21950}
base=localhost/feedback-service-ci-base:bookworm
image=localhost/feedback-service:ci
container=feedback-service-ci
grace=5
host_ca=/etc/ssl/certs/ca-certificates.crt
logs=$state/logs

step() { printf '== container: %s (%ds)\n' "$*" $((SECONDS - started)); }
fail() { echo "container: $*" >&2; exit 1; }

install_tools() {
  local missing=()
  for tool in podman buildah debootstrap runc; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] && return
  step "installing ${missing[*]} from Debian"
  local log
  log=$(mktemp)
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    podman buildah debootstrap runc; } >"$log" 2>&1 || { tail -20 "$log" >&2; rm -f "$log"; fail "apt-get failed"; }
  rm -f "$log"
}

# This machine's podman settings, kept out of /etc and out of the Containerfile:
# vfs storage (no overlay here), runc (crun fails on hybrid cgroups here), and
# no default ulimits (setting RLIMIT_NOFILE is not permitted here).
configure_podman() {
  mkdir -p "$state" "$logs"
  cat >"$state/storage.conf" <<CONF
[storage]
driver = "vfs"
graphroot = "$state/storage"
runroot = "/run/feedback-service-ci"
CONF
  cat >"$state/containers.conf" <<CONF
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  # No short name ever resolves to a registry: every image here is local.
  cat >"$state/registries.conf" <<CONF
unqualified-search-registries = []
CONF
  export CONTAINERS_STORAGE_CONF=$state/storage.conf
  export CONTAINERS_CONF=$state/containers.conf
  export CONTAINERS_REGISTRIES_CONF=$state/registries.conf
}

# The first Debian mirror apt uses here for bookworm (deb822 .sources or .list).
debian_mirror() {
  local mirror
  mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '
    /^URIs:/ { uri = $2 } /^Suites:/ && / bookworm( |$)/ && uri { print uri; exit }')
  if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }')
  fi
  echo "${mirror:-http://deb.debian.org/debian}"
}

# A small Debian: minbase, without documentation (the copyright files stay),
# manual pages or translations, now or in what is installed later, as
# Debian's own slim images do.
slim_rootfs() {
  local rootfs=$1
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<CONF
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
CONF
  find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
  find "$rootfs/usr/share/doc" -type l -delete
  rm -rf "$rootfs/usr/share/man/"* "$rootfs/usr/share/info/"*
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  rm -rf "$rootfs/var/cache/apt/"*.bin "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
}

# What goes on top of minbase. This machine's pip trusts only the host's CA
# bundle: the base carries it and points pip at it (PIP_CERT). That belongs
# to this machine; the Containerfile knows nothing of it.
base_containerfile() {
  cat <<CONF
FROM $base-minbase
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      python3 python3-venv ca-certificates \\
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY host-ca-bundle.crt /etc/ssl/host-ca-bundle.crt
ENV PIP_CERT=/etc/ssl/host-ca-bundle.crt
CONF
}

# The base is labelled with a digest of the host's CA bundle and of the recipe
# above: a changed bundle or recipe makes a new base, else it is reused.
base_wanted() { { cat "$host_ca"; declare -f slim_rootfs base_containerfile; } | sha256sum | cut -c1-16; }

build_base() {
  local wanted have
  wanted=$(base_wanted)
  have=$(podman image inspect --format '{{ index .Labels "ci.base-recipe" }}' "$base" 2>/dev/null || true)
  if [ "$have" = "$wanted" ]; then
    step "base image $base is cached"
    return
  fi
  local work mirror
  work=$(mktemp -d /var/tmp/feedback-ci-base.XXXXXX)
  mirror=$(debian_mirror)
  step "debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$logs/debootstrap.log" 2>&1 ||
    { tail -20 "$logs/debootstrap.log" >&2; rm -rf "$work"; fail "debootstrap failed"; }
  slim_rootfs "$work/rootfs"
  step "podman import"
  tar -C "$work/rootfs" -c . | podman import --quiet - "$base-minbase" >/dev/null
  rm -rf "$work/rootfs"
  step "python3, python3-venv and ca-certificates in the base"
  mkdir -p "$work/context"
  cp "$host_ca" "$work/context/host-ca-bundle.crt"
  base_containerfile >"$work/context/Containerfile"
  podman build --pull=never --network host --label "ci.base-recipe=$wanted" -t "$base" \
    "$work/context" >"$logs/base.log" 2>&1 ||
    { tail -20 "$logs/base.log" >&2; rm -rf "$work"; fail "building the base failed"; }
  podman rmi "$base-minbase" >/dev/null
  rm -rf "$work"
}

max_size_mb=250

build_image() {
  local version
  version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
  step "podman build (BASE_IMAGE=$base)"
  # --layers=false: with vfs every cached layer is a full copy of the tree;
  # one commit at the end is quicker and leaves nothing behind.
  podman build --pull=never --layers=false --network host -f Containerfile -t "$image" \
    --build-arg BASE_IMAGE="$base" --build-arg VERSION="$version" \
    --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo NOASSERTION)" . >"$logs/build.log" 2>&1 ||
    { tail -40 "$logs/build.log" >&2; fail "podman build failed"; }
  local bytes
  bytes=$(podman image inspect --format '{{.Size}}' "$image")
  size_mb=$((bytes / 1000000))
  step "image $image is $size_mb MB ($bytes bytes)"
  [ "$size_mb" -le "$max_size_mb" ] || fail "the image is $size_mb MB, over $max_size_mb MB"
}

grpc() { "$root/.venv/bin/grpcurl" -plaintext -max-time 10 "$@"; }
address=127.0.0.1:$port

# Waits until the health service answers SERVING, failing early if the
# container has stopped.
wait_serving() {
  local deadline=$((SECONDS + 120))
  until grpc "$address" grpc.health.v1.Health/Check 2>/dev/null | grep -q '"SERVING"'; do
    if [ "$(podman inspect --format '{{.State.Running}}' "$container")" != true ]; then
      podman logs "$container" >&2 || true
      fail "the container stopped before serving"
    fi
    [ $SECONDS -lt $deadline ] || { podman logs "$container" >&2; fail "not SERVING after 120s"; }
    sleep 0.5
  done
}

# `expect_field JSON FIELD VALUE`: the response's field has that value.
expect_field() {
  local got
  got=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get(sys.argv[2]))' "$1" "$2")
  [ "$got" = "$3" ] || fail "expected $2=$3, got: $1"
}

cleanup() {
  podman rm -f -t 0 "$container" >/dev/null 2>&1 || true
  podman volume rm -f "$volume" >/dev/null 2>&1 || true
}

run_checks() {
  volume=feedback-service-ci-data
  cleanup
  trap cleanup EXIT
  local platform jwt
  platform=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
  jwt=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
  podman volume create "$volume" >/dev/null
  step "podman run on $address, /data on volume $volume"
  # Settings by environment, as a deployment would give them. The host's
  # network, on a loopback port: no port publishing needed. The root
  # filesystem is read-only, with no tmpfs either: /data is all it writes.
  podman run -d --name "$container" --network host -v "$volume:/data" \
    --read-only --read-only-tmpfs=false \
    -e FEEDBACK_LISTEN="$address" \
    -e FEEDBACK_SERVICE_TOKENS="platform=$platform" \
    -e FEEDBACK_JWT_SECRET="$jwt" \
    -e FEEDBACK_SHUTDOWN_GRACE_S="$grace" \
    -e FEEDBACK_LOG_FORMAT=json \
    "$image" >/dev/null
  wait_serving

  step "walkthrough with grpcurl"
  local out token
  grpc -H "x-service-token: $platform" -d '{"thread_id": "t1", "owner_user_id": "alice"}' \
    "$address" feedback.v1.ThreadRegistry/RegisterThread >/dev/null
  grpc -H "x-service-token: $platform" -d '{"thread_id": "t1", "run_id": "r1"}' \
    "$address" feedback.v1.ThreadRegistry/RegisterRun >/dev/null
  token=$(podman exec "$container" feedback-service token alice)
  out=$(grpc -H "authorization: Bearer $token" \
    -d '{"thread_id": "t1", "run_id": "r1", "rating": 1, "comment": "helpful"}' \
    "$address" feedback.v1.FeedbackService/CreateFeedback)
  expect_field "$out" userId alice
  out=$(grpc -H "authorization: Bearer $token" -d '{"thread_id": "t1", "run_id": "r1"}' \
    "$address" feedback.v1.FeedbackService/GetFeedbackStats)
  expect_field "$out" positive 1
  # An error: a second feedback on the same run is ALREADY_EXISTS, not stored.
  if out=$(grpc -H "authorization: Bearer $token" -d '{"thread_id": "t1", "run_id": "r1", "rating": -1}' \
    "$address" feedback.v1.FeedbackService/CreateFeedback 2>&1); then
    fail "a second CreateFeedback on the same run succeeded: $out"
  fi
  grep -q 'Code: AlreadyExists' <<<"$out" || fail "expected AlreadyExists, got: $out"

  step "the server is not root"
  # The server's own process, as the kernel sees it: real, effective, saved
  # and filesystem uids are all the image's user.
  local pid uids
  pid=$(podman inspect --format '{{.State.Pid}}' "$container")
  uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$pid/status")
  [ "$uids" = "10001 10001 10001 10001" ] || fail "the server runs with uids $uids, not 10001"
  [ "$(podman exec "$container" id -u)" = 10001 ] || fail "podman exec runs as root"

  step "restart: the feedback is still there"
  podman restart -t $((grace + 5)) "$container" >/dev/null
  wait_serving
  out=$(grpc -H "authorization: Bearer $token" -d '{"thread_id": "t1", "run_id": "r1"}' \
    "$address" feedback.v1.FeedbackService/GetFeedbackStats)
  expect_field "$out" positive 1
  expect_field "$out" total 1

  step "SIGTERM: exit 0 within FEEDBACK_SHUTDOWN_GRACE_S=${grace}s"
  local sent=$SECONDS code
  podman kill --signal TERM "$container" >/dev/null
  code=$(timeout "$grace" podman wait "$container") ||
    { podman logs "$container" >&2; fail "still running ${grace}s after SIGTERM"; }
  [ "$code" = 0 ] || { podman logs "$container" >&2; fail "exit code $code after SIGTERM"; }
  step "stopped with exit 0 after $((SECONDS - sent))s"
}

# The image this run replaced is left untagged: remove it, and keep the base.
prune() {
  podman image prune -f >/dev/null
}

main() {
  install_tools
  configure_podman
  build_base
  [ "${1:-}" = base ] && return
  build_image
  run_checks
  prune
  step "done: image $size_mb MB, $((SECONDS - started))s in all"
}

main "$@"
