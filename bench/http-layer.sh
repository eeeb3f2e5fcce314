#!/usr/bin/env bash
# Reproduces the HTTP-layer measurement recorded in ARCHITECTURE.md: Portcullis (epoll and
# io_uring drivers) against nginx proxy_pass, small response, keep-alive, 32 connections.
# Proxy pinned to CPU 1; upstream (nginx `return 200`) and wrk pinned to CPU 0.
# Needs: nginx, wrk (apt-get install -y nginx-light wrk). Superseded by `cargo xtask bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${DURATION:-6}
work=$(mktemp -d)
trap 'kill $(cat $work/up.pid $work/px.pid 2>/dev/null) 2>/dev/null || true; rm -rf $work' EXIT
cargo build --release -p portcullis
cat > $work/up.conf <<EOC
worker_processes 1; daemon off; pid $work/up.pid; error_log $work/up.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:18081 reuseport; keepalive_requests 1000000;
  location / { return 200 "hello world\n"; } } }
EOC
cat > $work/px.conf <<EOC
worker_processes 1; daemon off; pid $work/px.pid; error_log $work/px.err;
events { worker_connections 4096; }
http { access_log off; upstream u { server 127.0.0.1:18081; keepalive 64; }
  server { listen 127.0.0.1:18082; keepalive_requests 1000000;
    location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOC
mkdir -p $work/apps
echo '{"api_id":"b","active":true,"use_keyless":true,"proxy":{"listen_path":"/","target_url":"http://127.0.0.1:18081/"}}' > $work/apps/b.json
for d in epoll uring; do
  printf '[proxy]\nlisten = "127.0.0.1:18083"\nworkers = 1\nio_driver = "%s"\n[admin]\nlisten = "127.0.0.1:19093"\n[apps]\ndir = "%s/apps"\n[log]\nlevel = "warn"\n' $d $work > $work/p-$d.toml
done
taskset -c 0 nginx -c $work/up.conf & sleep 0.3
taskset -c 1 nginx -c $work/px.conf & sleep 0.3
ngx_worker=$(pgrep -P "$(cat $work/px.pid)")
for round in 1 2; do
  bench/measure.sh nginx 18082 "$ngx_worker" "$dur"
  for d in epoll uring; do
    taskset -c 1 target/release/portcullis run --config $work/p-$d.toml & pid=$!
    sleep 0.5
    bench/measure.sh portcullis-$d 18083 $pid "$dur"
    kill $pid; wait $pid 2>/dev/null || true
  done
done
