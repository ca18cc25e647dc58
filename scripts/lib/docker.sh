# Sourced by the scripts: a Docker engine, an image registry and offline base images for the tests.
#
# Installs Debian's docker.io, docker-registry, busybox-static and debootstrap when missing;
# starts `dockerd` (own socket, data-root and bridge `liminal0`, never the host's docker0) and
# the registry on 127.0.0.1:5055 when they do not answer; builds, once, the base images no
# registry can give here: liminal/busybox:test (busybox-static FROM scratch) and
# liminal/python-base:bookworm (debootstrap of Debian with python3 and pip, then docker import).
# `liminal_docker_down` stops only what this script started.
# Exports DOCKER_HOST, LIMINAL_TEST_REGISTRY, LIMINAL_TEST_BASE_IMAGE, LIMINAL_TEST_BUSYBOX_IMAGE.
set -euo pipefail

LIMINAL_DOCKER_SOCK="${LIMINAL_DOCKER_SOCK:-/run/liminal-docker.sock}"
LIMINAL_DOCKER_ROOT="${LIMINAL_DOCKER_ROOT:-/var/lib/liminal-docker}"
LIMINAL_REGISTRY_ADDR="${LIMINAL_REGISTRY_ADDR:-127.0.0.1:5055}"
LIMINAL_BUSYBOX_IMAGE="liminal/busybox:test"
LIMINAL_PYTHON_BASE="liminal/python-base:bookworm"
_liminal_started_pids=()

liminal_docker_down() {
  for pid in "${_liminal_started_pids[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${_liminal_started_pids[@]:-}"; do
    [ -n "$pid" ] && for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  done
  _liminal_started_pids=()
}

_liminal_docker_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v curl >/dev/null || missing+=(curl)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing ${missing[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" ca-certificates >/dev/null
  fi
}

# A Linux bridge without an address of its own takes the lowest of its ports' MAC addresses and
# changes it when that container goes: the containers' ARP entry for the gateway goes stale and
# every connection through the published ports stalls for ~30 s (Docker gives the bridges it
# makes a fixed address for this reason). Ours gets one too, also when it exists already.
_liminal_bridge_address() {
  ip link set liminal0 address 02:42:ac:1f:d5:01 2>/dev/null || true
}

_liminal_dockerd() {
  export DOCKER_HOST="unix://$LIMINAL_DOCKER_SOCK"
  if ip link show liminal0 >/dev/null 2>&1; then _liminal_bridge_address; fi
  if docker version >/dev/null 2>&1; then return; fi
  echo "== starting dockerd on $DOCKER_HOST"
  if ! ip link show liminal0 >/dev/null 2>&1; then
    ip link add liminal0 type bridge
    ip addr add 172.31.213.1/24 dev liminal0
  fi
  _liminal_bridge_address
  ip link set liminal0 up
  mkdir -p "$LIMINAL_DOCKER_ROOT" /run/liminal-docker
  dockerd --host "$DOCKER_HOST" --data-root "$LIMINAL_DOCKER_ROOT" --exec-root /run/liminal-docker \
    --pidfile /run/liminal-docker/dockerd.pid --bridge liminal0 --storage-driver overlay2 \
    >/tmp/liminal-dockerd.log 2>&1 &
  _liminal_started_pids+=("$!")
  for _ in $(seq 1 60); do docker version >/dev/null 2>&1 && return; sleep 0.5; done
  echo "dockerd did not start; see /tmp/liminal-dockerd.log" >&2
  tail -20 /tmp/liminal-dockerd.log >&2
  return 1
}

_liminal_registry() {
  if curl -fsS "http://$LIMINAL_REGISTRY_ADDR/v2/" >/dev/null 2>&1; then return; fi
  echo "== starting the image registry on $LIMINAL_REGISTRY_ADDR"
  mkdir -p /var/lib/liminal-registry
  cat >/run/liminal-docker/registry.yml <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/liminal-registry
  delete:
    enabled: true
http:
  addr: $LIMINAL_REGISTRY_ADDR
EOF
  docker-registry serve /run/liminal-docker/registry.yml >/tmp/liminal-registry.log 2>&1 &
  _liminal_started_pids+=("$!")
  for _ in $(seq 1 40); do curl -fsS "http://$LIMINAL_REGISTRY_ADDR/v2/" >/dev/null 2>&1 && return; sleep 0.25; done
  echo "the registry did not start; see /tmp/liminal-registry.log" >&2
  return 1
}

_liminal_base_images() {
  if ! docker image inspect "$LIMINAL_BUSYBOX_IMAGE" >/dev/null 2>&1; then
    echo "== building $LIMINAL_BUSYBOX_IMAGE (busybox-static, FROM scratch)"
    local dir
    dir="$(mktemp -d)"
    mkdir -p "$dir/bin" "$dir/tmp"
    cp /bin/busybox "$dir/bin/busybox"
    for applet in $("$dir/bin/busybox" --list); do [ "$applet" = busybox ] || ln -s busybox "$dir/bin/$applet"; done
    tar -C "$dir" -c . | docker import --change 'ENV PATH=/bin' - "$LIMINAL_BUSYBOX_IMAGE" >/dev/null
    rm -rf "$dir"
  fi
  # the recipe label changes when the recipe does: an image built by an older recipe is rebuilt
  if [ "$(docker image inspect -f '{{index .Config.Labels "io.liminal-gitops.recipe"}}' "$LIMINAL_PYTHON_BASE" 2>/dev/null)" != 3 ]; then
    echo "== building $LIMINAL_PYTHON_BASE (debootstrap of Debian bookworm with python3 and pip; about a minute, once)"
    local root
    root="$(mktemp -d)"
    debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates bookworm "$root" \
      http://deb.debian.org/debian >/tmp/liminal-debootstrap.log 2>&1 || {
      tail -20 /tmp/liminal-debootstrap.log >&2
      return 1
    }
    # the host's own CAs (a proxy's, a company's) as local CAs of the image: pip reaches PyPI through
    # the same proxy, and apt's ca-certificates trigger in a later build keeps them
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
      cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
      chroot "$root" update-ca-certificates >/dev/null 2>&1
    fi
    # the image is ours: pip may install into its system Python (PEP 668 marker removed)
    rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
      --change 'LABEL io.liminal-gitops.recipe=3' \
      - "$LIMINAL_PYTHON_BASE" >/dev/null
    rm -rf "$root"
  fi
}

_liminal_docker_packages
_liminal_dockerd
_liminal_registry
_liminal_base_images
export LIMINAL_TEST_REGISTRY="$LIMINAL_REGISTRY_ADDR"
export LIMINAL_TEST_BASE_IMAGE="$LIMINAL_PYTHON_BASE"
export LIMINAL_TEST_BUSYBOX_IMAGE="$LIMINAL_BUSYBOX_IMAGE"
