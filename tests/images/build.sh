#!/usr/bin/env bash
# Builds the test images from local files only: there is no image registry to
# pull from, so everything comes from Debian's static busybox.
#
#   flotilla-busybox:latest   FROM scratch + busybox with every applet linked
#                             in /bin (sh, sleep, ping, httpd, wget, nc, ...)
#   flotilla-busybox:healthy  the same with a HEALTHCHECK that passes every 1 s
#   flotilla-hello:latest     flotilla-busybox + hello/: busybox httpd on TCP
#                             8080, GET / answers "<hostname>\n"
#   flotilla-udpecho:latest   flotilla-busybox + udpecho/: UDP 9999, each
#                             datagram answered with "<hostname> <payload>"
#   flotilla-udpfrom:latest   the same server as `udpecho -s`: each datagram
#                             answered with "<sender's address> <payload>"
#                             (its own image, so a worktree whose udpecho
#                             has no -s cannot replace it)
#                             (a static C program built here with gcc: this
#                             busybox has no UDP server applet)
# The hello and udpecho images keep every busybox applet (sh, wget, nslookup,
# hostname, ...), both have the UDP client `udpecho -c HOST PORT PAYLOAD`, and
# both stop at once on SIGTERM.
#
# Idempotent and quick: an image whose fingerprint label matches the busybox
# binary, this script and the image contexts is left alone. Set DOCKER_HOST to
# target another engine. Needs root (or a static busybox already installed)
# for apt-get, and gcc with a static libc (libc6-dev) for udpecho.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IMAGE=flotilla-busybox
HELLO=flotilla-hello:latest
UDPECHO=flotilla-udpecho:latest
UDPFROM=flotilla-udpfrom:latest
# In build order: the last three are built FROM $IMAGE:latest.
IMAGES=("$IMAGE:latest" "$IMAGE:healthy" "$HELLO" "$UDPECHO" "$UDPFROM")

# busybox-static ships a static /bin/busybox; the plain `busybox` package's
# binary is dynamic and would not run FROM scratch.
if ! dpkg -s busybox-static >/dev/null 2>&1; then
    echo "installing busybox-static" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q busybox-static >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q busybox-static >/dev/null; }
fi
BUSYBOX=$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -n1)
[ -x "$BUSYBOX" ] || { echo "no static busybox found" >&2; exit 1; }

# The busybox binary, this script and every file of the image contexts: any
# change to one of them rebuilds all the images.
sources_digest() {
    (cd "$HERE" && find build.sh hello udpecho -type f -print0 | LC_ALL=C sort -z \
        | xargs -0 sha256sum) | sha256sum | cut -c1-16
}
FINGERPRINT="$(sha256sum "$BUSYBOX" | cut -c1-16)-$(sources_digest)"
LABEL=com.flotilla.test-image.fingerprint

up_to_date() {
    local got
    got=$(docker image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null) || return 1
    [ "$got" = "$FINGERPRINT" ]
}
all_up_to_date() {
    local image
    for image in "${IMAGES[@]}"; do
        up_to_date "$image" || return 1
    done
}

if all_up_to_date; then
    exit 0
fi

# Tests run in parallel and each may call this script: one builds, the
# others wait for it and then find the images up to date.
exec 9>"${TMPDIR:-/tmp}/flotilla-test-images.lock"
flock 9
if all_up_to_date; then
    exit 0
fi

CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
# The classic builder is used because it is present in every engine; BuildKit
# needs the buildx plugin, which is not always installed.
build() {
    local old
    old=$(docker image inspect --format '{{.Id}}' "$1" 2>/dev/null) || old=
    # The classic builder warns that it is deprecated: show its output only
    # when the build fails.
    DOCKER_BUILDKIT=0 docker build -q --label "$LABEL=$FINGERPRINT" -t "$1" "$2" \
        >"$CTX/build.log" 2>&1 || { cat "$CTX/build.log" >&2; exit 1; }
    built+=("$1")
    [ -z "$old" ] || replaced=("$old" "${replaced[@]}")
}
built=()
replaced=()
# A fresh context directory for each build.
new_context() {
    rm -rf "$CTX/ctx"
    mkdir "$CTX/ctx"
    echo "$CTX/ctx"
}

# Each image is built only when out of date. All share one fingerprint, so
# an up-to-date derived image was built FROM the same base content.
if ! up_to_date "$IMAGE:latest"; then
    ctx=$(new_context)
    ROOT="$ctx/rootfs"
    mkdir -p "$ROOT/bin" "$ROOT/etc" "$ROOT/tmp" "$ROOT/root" "$ROOT/www"
    chmod 1777 "$ROOT/tmp"
    cp "$BUSYBOX" "$ROOT/bin/busybox"
    # Symlinks in the build context are copied as symlinks, so no RUN step
    # (and no particular builder) is needed.
    for applet in $("$BUSYBOX" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$ROOT/bin/$applet"
    done
    cat >"$ROOT/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
    cat >"$ROOT/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
    echo "flotilla" >"$ROOT/www/index.html"
    cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENV PATH=/bin
CMD ["sh"]
DOCKERFILE
    build "$IMAGE:latest" "$ctx"
fi

if ! up_to_date "$IMAGE:healthy"; then
    ctx=$(new_context)
    cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $IMAGE:latest
HEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD ["/bin/true"]
DOCKERFILE
    build "$IMAGE:healthy" "$ctx"
fi

# Both derived images carry udpecho: the server in one, and in both the
# UDP client (`udpecho -c`) that busybox lacks, for tests that exec into them.
if ! up_to_date "$HELLO" || ! up_to_date "$UDPECHO" || ! up_to_date "$UDPFROM"; then
    command -v gcc >/dev/null || { echo "gcc is needed to build udpecho" >&2; exit 1; }
    # Static glibc warns that getaddrinfo (used by `udpecho -c`) wants its
    # NSS libraries at run time; files and DNS lookups work without them.
    gcc -static -O2 -s -Wall -o "$CTX/udpecho" "$HERE/udpecho/udpecho.c" >"$CTX/gcc.log" 2>&1 \
        || { cat "$CTX/gcc.log" >&2; exit 1; }
fi

if ! up_to_date "$HELLO"; then
    ctx=$(new_context)
    cp -r "$HERE/hello/." "$ctx/"
    cp "$CTX/udpecho" "$ctx/"
    build "$HELLO" "$ctx"
fi

if ! up_to_date "$UDPECHO"; then
    ctx=$(new_context)
    cp -r "$HERE/udpecho/." "$ctx/"
    cp "$CTX/udpecho" "$ctx/"
    build "$UDPECHO" "$ctx"
fi

if ! up_to_date "$UDPFROM"; then
    ctx=$(new_context)
    cp "$CTX/udpecho" "$ctx/"
    cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM flotilla-busybox:latest
COPY udpecho /bin/udpecho
EXPOSE 9999/udp
CMD ["/bin/udpecho", "-s", "9999"]
DOCKERFILE
    build "$UDPFROM" "$ctx"
fi

# Drop the images just replaced, newest first so children go before their
# base. rmi without -f leaves any still tagged elsewhere or used by a
# container.
for old in "${replaced[@]}"; do
    docker rmi "$old" >/dev/null 2>&1 || true
done
echo "built ${built[*]}" >&2
