#!/bin/sh
# flotilla-hello: busybox httpd on port 8080 whose only page, GET / (also
# /index.html), is this container's hostname and a newline.
mkdir -p /hello
hostname >/hello/index.html
httpd -f -p "${PORT:-8080}" -h /hello &
pid=$!
# httpd as PID 1 would ignore SIGTERM (the kernel drops signals that PID 1
# does not handle), so this shell stays PID 1 and stops it on SIGTERM/SIGINT.
trap 'kill "$pid" 2>/dev/null; exit 0' TERM INT
wait "$pid"
