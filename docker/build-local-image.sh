#!/bin/sh
# Build a Redis image for docker-compose.yml without pulling anything: a small root filesystem made
# of this machine's own redis-server and redis-cli (Debian: apt-get install redis-server), the
# shared libraries `ldd` lists for them, and busybox-static as /bin/sh and the tools the scripts in
# docker/ use (awk, sed, tr, timeout...), loaded with `docker import`. For machines that reach no
# image registry (CI); everyone else uses the pinned official image, the compose file's default.
#
# Usage: docker/build-local-image.sh [TAG]     (default: course-redis:local)
#   then: COURSE_DOCKER_REDIS_IMAGE=course-redis:local docker compose up -d --wait
#
# Settings (environment): REDIS_SERVER, REDIS_CLI, BUSYBOX: the binaries to copy (default: from PATH;
# BUSYBOX must be statically linked, e.g. Debian's busybox-static). Linux only (ldd).
#
# The image runs redis-server directly (no entrypoint script, as root), so every setting a service
# needs is on its command line in docker-compose.yml. Like the official image it works in /data, a
# volume, so a cluster node's nodes.conf survives a restart of its container.

set -eu

tag=${1:-course-redis:local}
server=$(command -v "${REDIS_SERVER:-redis-server}") || { echo "build-local-image: no redis-server on PATH" >&2; exit 1; }
cli=$(command -v "${REDIS_CLI:-redis-cli}") || { echo "build-local-image: no redis-cli on PATH" >&2; exit 1; }
busybox=$(command -v "${BUSYBOX:-busybox}") || { echo "build-local-image: no busybox on PATH (apt-get install busybox-static)" >&2; exit 1; }
if ldd "$busybox" >/dev/null 2>&1; then
    echo "build-local-image: $busybox is dynamically linked; install busybox-static" >&2
    exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

mkdir -p "$root/bin" "$root/usr/bin" "$root/data" "$root/tmp" "$root/etc"
chmod 1777 "$root/tmp"
# Copied under their own names: Debian's redis-server is a link to redis-check-rdb, and the binary
# picks its mode from the name it runs as.
cp -L "$server" "$root/usr/bin/redis-server"
cp -L "$cli" "$root/usr/bin/redis-cli"
# Every library either binary loads, and the dynamic loader, at the paths ldd reports.
for library in $(ldd "$server" "$cli" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | sort -u); do
    mkdir -p "$root$(dirname "$library")"
    cp -L "$library" "$root$library"
done
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

version=$("$server" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change 'WORKDIR /data' \
    --change 'VOLUME /data' \
    --change 'EXPOSE 6379' \
    --change 'CMD ["redis-server"]' \
    --message "redis-server $version and redis-cli from $server, busybox from $busybox" \
    - "$tag" >/dev/null
echo "build-local-image: $tag (redis-server $version, $(du -sh "$root" | cut -f1) unpacked)"
