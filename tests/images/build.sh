#!/usr/bin/env bash
# Builds the test images from local files only: there is no image registry to
# pull from, so everything comes from Debian's static busybox.
#
#   flotilla-busybox:latest   FROM scratch + busybox with every applet linked
#                             in /bin (sh, sleep, ping, httpd, wget, nc, ...)
#   flotilla-busybox:healthy  the same with a HEALTHCHECK that passes every 1 s
#
# Idempotent and quick: an image whose fingerprint label matches the busybox
# binary and this script is left alone. Set DOCKER_HOST to target another
# engine. Needs root (or a static busybox already installed) for apt-get.
set -euo pipefail

IMAGE=flotilla-busybox
# Bump when the image layout below changes, so old builds are replaced.
LAYOUT_VERSION=1

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

FINGERPRINT="$(sha256sum "$BUSYBOX" | cut -c1-16)-$LAYOUT_VERSION"
LABEL=com.flotilla.test-image.fingerprint

up_to_date() {
    local got
    got=$(docker image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null) || return 1
    [ "$got" = "$FINGERPRINT" ]
}

if up_to_date "$IMAGE:latest" && up_to_date "$IMAGE:healthy"; then
    exit 0
fi

# Tests run in parallel and each may call this script: one builds, the
# others wait for it and then find the images up to date.
exec 9>"${TMPDIR:-/tmp}/flotilla-test-images.lock"
flock 9
if up_to_date "$IMAGE:latest" && up_to_date "$IMAGE:healthy"; then
    exit 0
fi

CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
ROOT="$CTX/rootfs"
mkdir -p "$ROOT/bin" "$ROOT/etc" "$ROOT/tmp" "$ROOT/root" "$ROOT/www"
chmod 1777 "$ROOT/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
# Symlinks in the build context are copied as symlinks, so no RUN step (and
# no particular builder) is needed.
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

cat >"$CTX/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
ENV PATH=/bin
LABEL $LABEL=$FINGERPRINT
CMD ["sh"]
DOCKERFILE
# The classic builder is used because it is present in every engine; BuildKit
# needs the buildx plugin, which is not always installed.
build() {
    # The classic builder warns that it is deprecated: show its output only
    # when the build fails.
    DOCKER_BUILDKIT=0 docker build -q -t "$1" "$CTX" >"$CTX/build.log" 2>&1 \
        || { cat "$CTX/build.log" >&2; exit 1; }
}
build "$IMAGE:latest"

cat >"$CTX/Dockerfile" <<DOCKERFILE
FROM $IMAGE:latest
HEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD ["/bin/true"]
DOCKERFILE
rm -rf "$ROOT"
build "$IMAGE:healthy"
echo "built $IMAGE:latest and $IMAGE:healthy" >&2
