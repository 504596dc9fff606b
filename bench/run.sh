#!/usr/bin/env bash
# Benchmarks riis against nginx on this machine, in one run.
#
#   bench/run.sh [SCENARIO ...]      scenarios: hello static noop (default: all)
#
# Each server is pinned to core 0 (nginx with one worker, riis with one worker
# thread), wrk to core 1. Two measures per scenario:
#   - keep-alive: requests per server CPU-second (requests served divided by the
#     CPU time the server process used, read from /proc), because on two cores
#     one wrk thread saturates near the server's rate;
#   - pipelined: requests per second with 16 requests per write (pipeline.lua),
#     where the server is the bottleneck.
# Results go to bench/results/<timestamp>.md and stdout.
#
# Needs: nginx, wrk, taskset (apt-get install nginx-light wrk util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
RIIS_PORT=${RIIS_PORT:-18181}
NGINX_PORT=${NGINX_PORT:-18182}
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(hello static noop)

for tool in nginx wrk taskset; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is not installed (apt-get install nginx-light wrk util-linux)" >&2; exit 2; }
done

cargo build --release -p riis >/dev/null
riis="$here/target/release/riis"
work=$(mktemp -d /tmp/riis-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/www"
head -c 1024 /dev/urandom | base64 -w 0 | head -c 1024 > "$work/www/1k.txt"
tick=$(getconf CLK_TCK)

# CPU seconds used so far by the given pids (utime + stime, all threads).
cpu_of() {
  local total=0 p f
  for p in "$@"; do
    f=$(cut -d' ' -f14,15 "/proc/$p/stat")
    total=$((total + ${f% *} + ${f#* }))
  done
  echo "$total"
}

# wrk against URL; prints "requests cpu_ticks" for the keep-alive run, or
# requests/s for the pipelined one.
measure() {
  local mode=$1 url=$2; shift 2
  local pids=("$@") before after out
  if [ "$mode" = pipelined ]; then
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s bench/pipeline.lua "$url")
    echo "$out" | awk '/^Requests\/sec/ {print $2}'
  else
    before=$(cpu_of "${pids[@]}")
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "$url")
    after=$(cpu_of "${pids[@]}")
    local reqs
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    echo "$reqs $((after - before))"
  fi
}

start_riis() {
  local config=$1
  taskset -c "$SERVER_CPU" "$riis" serve --config "$config" --listen "127.0.0.1:$RIIS_PORT" >"$work/riis.out" 2>"$work/riis.err" &
  riis_pid=$!
  for _ in $(seq 100); do grep -q "listening" "$work/riis.out" 2>/dev/null && return; sleep 0.05; done
  echo "bench: riis did not start:" >&2; cat "$work/riis.err" >&2; exit 1
}

stop_riis() { kill "$riis_pid"; wait "$riis_pid" 2>/dev/null || true; }

start_nginx() {
  local location=$1
  cat >"$work/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  types { text/plain txt; }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $work/www;
    $location
  }
}
NGX
  taskset -c "$SERVER_CPU" nginx -c "$work/nginx.conf" -p "$work" &
  nginx_master=$!
  for _ in $(seq 100); do [ -s "$work/nginx.pid" ] && break; sleep 0.05; done
  sleep 0.2
  nginx_pids=$(pgrep -P "$nginx_master" | tr '\n' ' ')
}

stop_nginx() { kill "$nginx_master"; wait "$nginx_master" 2>/dev/null || true; rm -f "$work/nginx.pid"; }

riis_config() {
  local modules=$1 handler=$2
  cat >"$work/riis.toml" <<TOML
[server]
worker_threads = 1
$modules
$handler
[[sites]]
name = "bench"
root = "$work/www"
bindings = ["127.0.0.1:$RIIS_PORT"]
TOML
  echo "$work/riis.toml"
}

static_modules='[[modules]]
name = "StaticFile"'
static_handler='[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
resource_type = "Either"
modules = ["StaticFile"]'

noop_modules=""
for i in $(seq 1 20); do noop_modules+=$'[[modules]]\nname = "NoOp'$i$'"\ntype = "NoOp"\n'; done

stamp=$(date -u +%Y-%m-%dT%H%MZ)
mkdir -p bench/results
report="bench/results/$stamp.md"
{
  echo "# riis vs nginx, $stamp"
  echo
  echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); $(nginx -v 2>&1); wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')."
  echo "Server on core $SERVER_CPU, wrk on core $CLIENT_CPU, $CONNECTIONS connections, ${DURATION}s per run."
  echo
  echo "| scenario | measure | riis | baseline | ratio |"
  echo "|---|---|---|---|---|"
} >"$report"

row() { # scenario measure riis baseline
  local ratio
  ratio=$(awk -v a="$3" -v b="$4" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
  echo "| $1 | $2 | $3 | $4 | ${ratio}x |" | tee -a "$report"
}

per_cpu_second() { # "requests ticks" -> requests per CPU-second
  awk -v t="$tick" '{ if ($2 > 0) printf "%.0f", $1 / ($2 / t); else print 0 }' <<<"$1"
}

for s in "${scenarios[@]}"; do
  case $s in
    hello)
      start_riis "$(riis_config $'[[modules]]\nname = "HelloWorld"' "")"
      r_ka=$(measure keepalive "http://127.0.0.1:$RIIS_PORT/" "$riis_pid")
      r_pl=$(measure pipelined "http://127.0.0.1:$RIIS_PORT/")
      stop_riis
      start_nginx 'location / { default_type text/plain; return 200 "Hello World!"; }'
      n_ka=$(measure keepalive "http://127.0.0.1:$NGINX_PORT/" $nginx_pids)
      n_pl=$(measure pipelined "http://127.0.0.1:$NGINX_PORT/")
      stop_nginx
      row "hello (HelloWorld vs return 200)" "keep-alive req/CPU-s" "$(per_cpu_second "$r_ka")" "$(per_cpu_second "$n_ka")"
      row "hello (HelloWorld vs return 200)" "pipelined x16 req/s" "$r_pl" "$n_pl"
      ;;
    static)
      start_riis "$(riis_config "$static_modules" "$static_handler")"
      r_ka=$(measure keepalive "http://127.0.0.1:$RIIS_PORT/1k.txt" "$riis_pid")
      r_pl=$(measure pipelined "http://127.0.0.1:$RIIS_PORT/1k.txt")
      stop_riis
      start_nginx ''
      n_ka=$(measure keepalive "http://127.0.0.1:$NGINX_PORT/1k.txt" $nginx_pids)
      n_pl=$(measure pipelined "http://127.0.0.1:$NGINX_PORT/1k.txt")
      stop_nginx
      row "static 1 KiB" "keep-alive req/CPU-s" "$(per_cpu_second "$r_ka")" "$(per_cpu_second "$n_ka")"
      row "static 1 KiB" "pipelined x16 req/s" "$r_pl" "$n_pl"
      ;;
    noop)
      start_riis "$(riis_config "$noop_modules$static_modules" "$static_handler")"
      m_ka=$(measure keepalive "http://127.0.0.1:$RIIS_PORT/1k.txt" "$riis_pid")
      m_pl=$(measure pipelined "http://127.0.0.1:$RIIS_PORT/1k.txt")
      stop_riis
      start_riis "$(riis_config "$static_modules" "$static_handler")"
      b_ka=$(measure keepalive "http://127.0.0.1:$RIIS_PORT/1k.txt" "$riis_pid")
      b_pl=$(measure pipelined "http://127.0.0.1:$RIIS_PORT/1k.txt")
      stop_riis
      row "20 NoOp modules vs none (static 1 KiB, riis only)" "keep-alive req/CPU-s" "$(per_cpu_second "$m_ka")" "$(per_cpu_second "$b_ka")"
      row "20 NoOp modules vs none (static 1 KiB, riis only)" "pipelined x16 req/s" "$m_pl" "$b_pl"
      ;;
    *) echo "bench: unknown scenario $s" >&2; exit 2 ;;
  esac
done
echo
echo "results: $report"
