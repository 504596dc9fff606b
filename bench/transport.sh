#!/usr/bin/env bash
# Transport benchmarks, riis against nginx on this machine, in one run:
#
#   h2       HTTP/2 over TLS (ALPN): requests/s for a 1 KiB file, h2load with
#            32 connections x 16 concurrent streams
#   tls      new TLS connections: every request on a fresh connection (wrk,
#            Connection: close), full TLS 1.3 handshakes; reported per second
#            and per server CPU-second (wrk's own handshake work saturates
#            the load core first, so the second measure is the server's)
#   idle     memory per idle keep-alive connection: the server's RSS growth
#            with 10,000 connections open after one request each
#   idle-h2  the same for cleartext HTTP/2 connections (prior knowledge),
#            each after one request
#
#   bench/transport.sh [h2] [tls] [idle] [idle-h2]   (default: all four)
#
# Servers are pinned to core 0 (one worker each), the load to core 1. Each
# measure runs ROUNDS times alternating the two servers; medians are reported
# and appended to bench/results/<timestamp>-transport.md.
#
# Needs: nginx (with http_v2 and ssl), h2load (nghttp2-client), wrk, openssl,
# python3, taskset.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
RIIS_PORT=${RIIS_PORT:-18191}
NGINX_PORT=${NGINX_PORT:-18192}
IDLE=${IDLE:-10000}
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(h2 tls idle idle-h2)

for tool in nginx h2load wrk openssl python3 taskset; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is not installed" >&2; exit 2; }
done
# 10,000 connections need 10,000 descriptors on each side, and some more.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((IDLE + 1000)) ] || { echo "bench: ulimit -n must exceed $((IDLE + 1000))" >&2; exit 2; }

cargo build --release -p riis >/dev/null
riis="$here/target/release/riis"
work=$(mktemp -d /tmp/riis-transport.XXXXXX)
chmod 755 "$work"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/www"
head -c 768 /dev/urandom | base64 -w 0 > "$work/www/1k.txt"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 644 "$work/key.pem"

start_riis() { # SCHEME
  local scheme=$1 binding certificate=""
  binding="127.0.0.1:$RIIS_PORT"
  # A certificate without an https binding is a configuration error.
  if [ "$scheme" = https ]; then
    binding="https://$binding"
    certificate="certificate = \"$work/cert.pem\"
certificate_key = \"$work/key.pem\""
  fi
  cat >"$work/riis.toml" <<TOML
[server]
worker_threads = 1
[limits]
max_requests_per_connection = 0
[[modules]]
name = "StaticFile"
[[handlers]]
name = "StaticFile"
path = "*"
resource_type = "Either"
modules = ["StaticFile"]
[[sites]]
name = "bench"
root = "$work/www"
bindings = ["$binding"]
$certificate
TOML
  taskset -c "$SERVER_CPU" "$riis" serve --config "$work/riis.toml" >"$work/riis.out" 2>"$work/riis.err" &
  server_pids=$!
  for _ in $(seq 100); do grep -q "listening" "$work/riis.out" 2>/dev/null && return; sleep 0.05; done
  echo "bench: riis did not start:" >&2; cat "$work/riis.err" >&2; exit 1
}

start_nginx() { # SCHEME
  local scheme=$1 listen="listen 127.0.0.1:$NGINX_PORT;"
  # nginx 1.22 spells HTTP/2 on the listen line.
  [ "$scheme" = https ] && listen="listen 127.0.0.1:$NGINX_PORT ssl http2; ssl_protocols TLSv1.2 TLSv1.3; ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;"
  # Cleartext HTTP/2 with prior knowledge (riis answers both on one port).
  [ "$scheme" = h2c ] && listen="listen 127.0.0.1:$NGINX_PORT http2;"
  cat >"$work/nginx.conf" <<NGX
worker_processes 1;
worker_rlimit_nofile 30000;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 20000; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  keepalive_timeout 600s;
  http2_max_concurrent_streams 128;
  types { text/plain txt; }
  server {
    $listen
    root $work/www;
  }
}
NGX
  taskset -c "$SERVER_CPU" nginx -c "$work/nginx.conf" -p "$work" &
  nginx_master=$!
  for _ in $(seq 100); do [ -s "$work/nginx.pid" ] && break; sleep 0.05; done
  sleep 0.3
  server_pids=$(pgrep -P "$nginx_master" | tr '\n' ' ')
}

stop_server() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -f "$work/nginx.pid"; }

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

rss_kib() { # pids -> total VmRSS in KiB
  local total=0 p v
  for p in "$@"; do
    v=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status")
    total=$((total + v))
  done
  echo "$total"
}

stamp=$(date -u +%Y-%m-%dT%H%MZ)
mkdir -p bench/results
report="bench/results/$stamp-transport.md"
{
  echo "# riis vs nginx, transport, $stamp"
  echo
  echo "$(nproc) cores; $(nginx -v 2>&1); $(h2load --version | head -1); wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')."
  echo "Server on core $SERVER_CPU (one worker), load on core $CLIENT_CPU, ${DURATION}s runs, median of $ROUNDS alternating rounds."
  echo
  echo "| measure | riis | nginx | ratio |"
  echo "|---|---|---|---|"
} >"$report"

row() { # measure riis nginx
  local ratio
  ratio=$(awk -v a="$2" -v b="$3" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
  echo "| $1 | $2 | $3 | ${ratio}x |" | tee -a "$report"
}

h2_rate() { # PORT -> requests/s
  taskset -c "$CLIENT_CPU" h2load -D "$DURATION" -c 32 -m 16 -t 1 "https://127.0.0.1:$1/1k.txt" 2>/dev/null \
    | awk '/^finished in/ {gsub(",", "", $4); print $4}'
}

cpu_of() { # pids -> CPU ticks used so far
  local total=0 p f
  for p in "$@"; do
    f=$(cut -d' ' -f14,15 "/proc/$p/stat")
    total=$((total + ${f% *} + ${f#* }))
  done
  echo "$total"
}

tls_rate() { # PORT -> "new connections/s  connections per server CPU-second"
  local before after out
  before=$(cpu_of $server_pids)
  out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c 32 -d"${DURATION}s" -H "Connection: close" "https://127.0.0.1:$1/1k.txt")
  after=$(cpu_of $server_pids)
  echo "$out" | awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" \
    '/requests in/ {n = $1} /^Requests\/sec/ {r = $2} END {printf "%s %.0f\n", r, (ticks > 0 ? n / (ticks / hz) : 0)}'
}

idle_per_connection() { # PORT [h2] -> bytes of RSS per idle connection
  local before after
  sleep 0.5
  before=$(rss_kib $server_pids)
  taskset -c "$CLIENT_CPU" python3 - "$1" "$IDLE" "$work/idle.ready" "${2:-h1}" <<'PY' &
import socket, struct, sys, time
port, n, ready, proto = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]

def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

# HPACK: :method GET, :scheme http (static entries), :path and :authority
# as literals with indexed names, not indexed.
path, host = b"/1k.txt", b"bench.test"
block = bytes([0x82, 0x86, 0x04, len(path)]) + path + bytes([0x01, len(host)]) + host
h2_request = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 0x5, 1, block)

def h2_answered(got):
    # True once stream 1 ended (a frame of it with END_STREAM).
    at = 0
    while at + 9 <= len(got):
        length = int.from_bytes(got[at:at + 3], "big")
        kind, flags = got[at + 3], got[at + 4]
        stream = int.from_bytes(got[at + 5:at + 9], "big") & 0x7FFFFFFF
        if at + 9 + length > len(got):
            return False
        if stream == 1 and kind in (0, 1) and flags & 0x1:
            return True
        at += 9 + length
    return False

conns = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(h2_request if proto == "h2" else b"GET /1k.txt HTTP/1.1\r\nHost: bench.test\r\n\r\n")
    conns.append(s)
for s in conns:
    got = b""
    if proto == "h2":
        while not h2_answered(got):
            got += s.recv(65536)
    else:
        while b"\r\n\r\n" not in got:
            got += s.recv(4096)
open(ready, "w").close()
time.sleep(600)
PY
  local client=$!
  for _ in $(seq 600); do [ -e "$work/idle.ready" ] && break; sleep 0.1; done
  # riis parks a keep-alive connection (gives its parser's buffers back)
  # once it has been idle for one to two seconds; measure both servers
  # after that.
  sleep 3
  after=$(rss_kib $server_pids)
  kill "$client"; wait "$client" 2>/dev/null || true
  rm -f "$work/idle.ready"
  echo $(( (after - before) * 1024 / IDLE ))
}

for s in "${scenarios[@]}"; do
  r="" n="" rc="" nc=""
  for _ in $(seq "$ROUNDS"); do
    case $s in
      h2)
        start_riis https; r+=" $(h2_rate $RIIS_PORT)"; stop_server
        start_nginx https; n+=" $(h2_rate $NGINX_PORT)"; stop_server ;;
      tls)
        start_riis https; read -r a b <<<"$(tls_rate $RIIS_PORT)"; r+=" $a"; rc+=" $b"; stop_server
        start_nginx https; read -r a b <<<"$(tls_rate $NGINX_PORT)"; n+=" $a"; nc+=" $b"; stop_server ;;
      idle)
        start_riis http; r+=" $(idle_per_connection $RIIS_PORT)"; stop_server
        start_nginx http; n+=" $(idle_per_connection $NGINX_PORT)"; stop_server ;;
      idle-h2)
        start_riis http; r+=" $(idle_per_connection $RIIS_PORT h2)"; stop_server
        start_nginx h2c; n+=" $(idle_per_connection $NGINX_PORT h2)"; stop_server ;;
      *) echo "bench: unknown scenario $s" >&2; exit 2 ;;
    esac
  done
  case $s in
    h2) row "HTTP/2 over TLS, 1 KiB, 32 conns x 16 streams (req/s)" "$(median <<<"$r")" "$(median <<<"$n")" ;;
    tls)
      row "new TLS connections/s (one request each)" "$(median <<<"$r")" "$(median <<<"$n")"
      row "new TLS connections per server CPU-second" "$(median <<<"$rc")" "$(median <<<"$nc")" ;;
    idle) row "RSS bytes per idle keep-alive connection ($IDLE open)" "$(median <<<"$r")" "$(median <<<"$n")" ;;
    idle-h2) row "RSS bytes per idle HTTP/2 connection ($IDLE open)" "$(median <<<"$r")" "$(median <<<"$n")" ;;
  esac
done
echo
echo "results: $report"
