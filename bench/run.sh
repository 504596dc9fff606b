#!/usr/bin/env bash
# Benchmarks riis against nginx on this machine, in one run.
#
#   bench/run.sh [SCENARIO ...]      scenarios: hello static noop metrics logged static100k
#                                    static10m defaultdoc gzip100k php proxy
#                                    platform webdav hyper
#                                    (default: hello static noop)
#
# `hyper` runs the bare hyper server of crates/riis/examples/bare_hyper.rs
# (no riis) against nginx's `return 200`: the floor under `hello`.
#
# Each server is pinned to core 0 (nginx with one worker, riis with one worker
# thread), wrk to core 1. Two measures per scenario:
#   - keep-alive: requests per server CPU-second (requests served divided by the
#     CPU time the server process used, read from /proc), because on two cores
#     one wrk thread saturates near the server's rate;
#   - pipelined: requests per second with 16 requests per write (pipeline.lua),
#     where the server is the bottleneck.
# Each measured run follows WARMUP seconds (default 2) of the same load.
# The machine is shared and noisy, so each scenario runs ROUNDS times with the
# two servers alternating, and the median of each column is reported.
# Results go to bench/results/<timestamp>.md and stdout.
#
# `php` puts the same php-fpm (on core 1, with wrk) behind both servers: riis's
# FastCgi and nginx's fastcgi_pass, with a connection per request (both
# defaults) and with four kept connections (upstream keepalive), running a
# script that echoes 12 bytes. Both check that the script exists first (riis's
# handler with resource_type = "File", nginx's `try_files $uri =404`, which
# nginx's PHP guides prescribe), so both stat it per request. Its keep-alive figure is the server's own CPU
# per PHP request; its pipelined figure is bounded by PHP on the other core.
#
# `proxy` puts the same backend (a second nginx, one worker, on core 1 with
# wrk, serving the 1 KiB file) behind both servers: riis's ReverseProxy with
# its defaults (32 kept connections, client's Host, X-Forwarded-For/-Proto/
# -Host) and nginx's proxy_pass set to do the same work (upstream keepalive
# 32, HTTP/1.1, the same four headers). Its pipelined figure is bounded by the
# backend on the other core.
#
# `platform` runs a Node.js program answering "Hello World!" behind both
# servers: riis starts it itself (HttpPlatformHandler, then ReverseProxy with
# its defaults), nginx proxies to the same program started by this script
# (proxy_pass as in `proxy`). Both programs run on core 1 with wrk (riis
# starts its own through `taskset`). Its pipelined figure is bounded by
# Node.js on the other core. A second pair compares riis with itself: the
# program riis runs against the one nginx uses, named in ReverseProxy's
# `servers`, so what HttpPlatformHandler adds per request shows; a third,
# AspNetCoreModule against HttpPlatformHandler with the same program, shows
# what the pairing token and the header check add.
#
# `webdav` PUTs a 4 KiB file over and over to the same URL: riis's WebDav
# against nginx's dav_methods. Both write the body to a temporary file and
# rename it over the old one.
#
# Needs: nginx, wrk, taskset (apt-get install nginx-light wrk util-linux),
# php-fpm for `php`, node for `platform` (apt-get install nodejs).
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
RIIS_PORT=${RIIS_PORT:-18181}
NGINX_PORT=${NGINX_PORT:-18182}
BACKEND_PORT=${BACKEND_PORT:-18183}
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(hello static noop)

for tool in nginx wrk taskset; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is not installed (apt-get install nginx-light wrk util-linux)" >&2; exit 2; }
done

cargo build --release -p riis >/dev/null
riis="$here/target/release/riis"
bare_hyper="$here/target/release/examples/bare_hyper"
if [[ " ${scenarios[*]} " == *" hyper "* ]]; then
  cargo build --release -p riis --example bare_hyper >/dev/null
fi
work=$(mktemp -d /tmp/riis-bench.XXXXXX)
# nginx's workers run as an unprivileged user: they must be able to enter it.
chmod 755 "$work"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/www"
# 768 random bytes are exactly 1,024 base64 characters (no pipe cut short,
# which pipefail would turn into a silent exit).
head -c 768 /dev/urandom | base64 -w 0 > "$work/www/1k.txt"
# Text that compresses like real pages do (repeated words, some variety).
awk 'BEGIN { for (i = 1; i <= 3000; i++) print "line " i ": the quick brown fox jumps over the lazy dog" }' > "$work/www/100k.txt"
truncate -s 102400 "$work/www/100k.txt"
gzip -9 -k "$work/www/100k.txt"
head -c 10485760 /dev/urandom > "$work/www/10m.bin"
mkdir -p "$work/www/docs"
head -c 768 /dev/urandom | base64 -w 0 > "$work/www/docs/index.html"
WRK_ARGS=()
CURL_ARGS=()
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
  # Connections opened, caches and allocator pools filled: only the steady
  # state is measured.
  [ "$WARMUP" -gt 0 ] && taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "${WRK_ARGS[@]}" "$url" >/dev/null
  if [ "$mode" = pipelined ]; then
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "${WRK_ARGS[@]}" -s bench/pipeline.lua "$url")
    echo "$out" | awk '/^Requests\/sec/ {print $2}'
  else
    before=$(cpu_of "${pids[@]}")
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "${WRK_ARGS[@]}" "$url")
    after=$(cpu_of "${pids[@]}")
    local reqs
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    echo "$reqs $((after - before))"
  fi
}

start_riis() { # CONFIG, or bare-hyper for the example server
  local config=$1
  if [ "$config" = bare-hyper ]; then
    taskset -c "$SERVER_CPU" "$bare_hyper" "127.0.0.1:$RIIS_PORT" >"$work/riis.out" 2>"$work/riis.err" &
  else
    taskset -c "$SERVER_CPU" "$riis" serve --config "$config" --listen "127.0.0.1:$RIIS_PORT" >"$work/riis.out" 2>"$work/riis.err" &
  fi
  riis_pid=$!
  for _ in $(seq 100); do grep -q "listening" "$work/riis.out" 2>/dev/null && return; sleep 0.05; done
  echo "bench: riis did not start:" >&2; cat "$work/riis.err" >&2; exit 1
}

stop_riis() { kill "$riis_pid"; wait "$riis_pid" 2>/dev/null || true; }

start_nginx() { # SERVER-BLOCK-LINES [HTTP-BLOCK-LINES]
  local location=$1 http_extra=${2:-}
  cat >"$work/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  types { text/plain txt; text/html html; application/octet-stream bin; }
  default_type application/octet-stream;
  $http_extra
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $work/www;
    index index.html;
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

riis_config() { # MODULES HANDLERS NAME -> path of the file
  local modules=$1 handler=$2 name=$3
  cat >"$work/$name.toml" <<TOML
[server]
worker_threads = 1
# nginx runs with keepalive_requests 1000000: neither server may end
# connections every 1,000 requests, or reconnects would be measured.
[limits]
max_requests_per_connection = 0
$modules
$handler
[[sites]]
name = "bench"
root = "$work/www"
bindings = ["127.0.0.1:$RIIS_PORT"]
TOML
  echo "$work/$name.toml"
}

static_modules='[[modules]]
name = "StaticFile"'
static_handler='[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
resource_type = "Either"
modules = ["StaticFile"]'
static_dd_modules='[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"'
static_dd_handler='[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
resource_type = "Either"
modules = ["StaticFile", "DefaultDocument"]'

noop_modules=""
for i in $(seq 1 20); do noop_modules+=$'[[modules]]\nname = "NoOp'$i$'"\ntype = "NoOp"\n'; done

stamp=$(date -u +%Y-%m-%dT%H%MZ)
mkdir -p bench/results
report="bench/results/$stamp.md"
{
  echo "# riis vs nginx, $stamp"
  echo
  echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); $(nginx -v 2>&1); wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')."
  echo "Server on core $SERVER_CPU, wrk on core $CLIENT_CPU, $CONNECTIONS connections, ${DURATION}s per run after ${WARMUP}s of warm-up, median of $ROUNDS alternating rounds."
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

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Fails the run unless URL answers 200 with the same body size as the other
# server did: a benchmark of error pages measures nothing.
check() { # URL -> "status size"
  local got
  got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "${CURL_ARGS[@]}" "$1")
  case $got in
    200\ *) echo "${got#* }" ;;
    *) echo "bench: $1 answered $got, not 200" >&2; exit 1 ;;
  esac
}

# run_pair NAME RIIS_CONFIG RIIS_PATH BASELINE(nginx-location|riis:CONFIG) BASE_PATH
# (NGINX_HTTP: lines for nginx's http block)
run_pair() {
  local name=$1 rconf=$2 rpath=$3 base=$4 bpath=$5
  local r_ka="" r_pl="" b_ka="" b_pl="" round
  for round in $(seq "$ROUNDS"); do
    start_riis "$rconf"
    r_size=$(check "http://127.0.0.1:$RIIS_PORT$rpath")
    r_ka+=" $(per_cpu_second "$(measure keepalive "http://127.0.0.1:$RIIS_PORT$rpath" "$riis_pid")")"
    r_pl+=" $(measure pipelined "http://127.0.0.1:$RIIS_PORT$rpath")"
    stop_riis
    if [[ $base == riis:* ]]; then
      start_riis "${base#riis:}"
      b_ka+=" $(per_cpu_second "$(measure keepalive "http://127.0.0.1:$RIIS_PORT$bpath" "$riis_pid")")"
      b_pl+=" $(measure pipelined "http://127.0.0.1:$RIIS_PORT$bpath")"
      stop_riis
    else
      start_nginx "$base" "${NGINX_HTTP:-}"
      n_size=$(check "http://127.0.0.1:$NGINX_PORT$bpath")
      [ -n "$n_size" ] || exit 1
      # Encoded bodies may differ by a few bytes; plain ones must not.
      if [ ${#CURL_ARGS[@]} -eq 0 ] && [ "$n_size" != "$r_size" ]; then
        echo "bench: riis sent $r_size bytes, nginx $n_size" >&2; exit 1
      fi
      # shellcheck disable=SC2086
      b_ka+=" $(per_cpu_second "$(measure keepalive "http://127.0.0.1:$NGINX_PORT$bpath" $nginx_pids)")"
      b_pl+=" $(measure pipelined "http://127.0.0.1:$NGINX_PORT$bpath")"
      stop_nginx
    fi
  done
  row "$name" "keep-alive req/CPU-s" "$(median <<<"$r_ka")" "$(median <<<"$b_ka")"
  row "$name" "pipelined x16 req/s" "$(median <<<"$r_pl")" "$(median <<<"$b_pl")"
}

for s in "${scenarios[@]}"; do
  case $s in
    hello)
      hello_conf=$(riis_config $'[[modules]]\nname = "HelloWorld"' "" hello)
      run_pair "hello: HelloWorld vs nginx return 200" "$hello_conf" / \
        'location / { default_type text/plain; return 200 "Hello World!"; }' /
      ;;
    static)
      static_conf=$(riis_config "$static_modules" "$static_handler" static)
      run_pair "static 1 KiB file vs nginx" "$static_conf" /1k.txt '' /1k.txt
      ;;
    noop)
      noop_conf=$(riis_config "$noop_modules$static_modules" "$static_handler" noop)
      static_conf=$(riis_config "$static_modules" "$static_handler" static)
      run_pair "static 1 KiB, 20 NoOp modules vs none (riis only)" "$noop_conf" /1k.txt "riis:$static_conf" /1k.txt
      ;;
    metrics)
      metrics_conf=$(riis_config $'[[modules]]\nname = "Metrics"\n'"$static_modules" "$static_handler" metrics)
      static_conf=$(riis_config "$static_modules" "$static_handler" static)
      run_pair "static 1 KiB, with Metrics vs without (riis only)" "$metrics_conf" /1k.txt "riis:$static_conf" /1k.txt
      ;;
    static100k)
      static_conf=$(riis_config "$static_modules" "$static_handler" static)
      run_pair "static 100 KiB file vs nginx" "$static_conf" /100k.txt '' /100k.txt
      ;;
    static10m)
      static_conf=$(riis_config "$static_modules" "$static_handler" static)
      run_pair "static 10 MiB file vs nginx (ratio = bytes ratio)" "$static_conf" /10m.bin '' /10m.bin
      ;;
    defaultdoc)
      dd_conf=$(riis_config "$static_dd_modules" "$static_dd_handler" defaultdoc)
      run_pair "default document (1 KiB index.html) vs nginx index" "$dd_conf" /docs/ '' /docs/
      ;;
    logged)
      log_conf=$(riis_config $'[[modules]]\nname = "HttpLogging"\n'"$static_modules"$'\n[http_logging]\ndirectory = "'"$work"'/logs"' "$static_handler" logged)
      run_pair "static 1 KiB, access log: HttpLogging vs nginx access_log buffer=64k flush=1s" "$log_conf" /1k.txt \
        "access_log $work/access.log combined buffer=64k flush=1s;" /1k.txt
      ;;
    gzip100k)
      gz_conf=$(riis_config "$static_modules"$'\n[[modules]]\nname = "StaticCompression"\n[static_compression]\ndirectory = "'"$work"'/gz"' "$static_handler" gzip)
      WRK_ARGS=(-H "Accept-Encoding: gzip")
      CURL_ARGS=(-H "Accept-Encoding: gzip")
      run_pair "gzip 100 KiB text: StaticCompression vs nginx gzip_static" "$gz_conf" /100k.txt 'gzip_static on;' /100k.txt
      WRK_ARGS=()
      CURL_ARGS=()
      ;;
    php)
      fpm=$(compgen -G '/usr/sbin/php-fpm*' | sort | tail -1 || true)
      [ -n "$fpm" ] || { echo "bench: php-fpm is not installed (apt-get install php-fpm)" >&2; exit 2; }
      printf '<?php echo "Hello World!";' > "$work/www/hello.php"
      # nginx's workers are not root: the socket must be open to them.
      cat >"$work/php-fpm.conf" <<FPM
[global]
error_log = $work/php-fpm.log
daemonize = no
[www]
listen = $work/php.sock
listen.mode = 0666
pm = static
pm.max_children = 8
FPM
      taskset -c "$CLIENT_CPU" setsid "$fpm" --nodaemonize --fpm-config "$work/php-fpm.conf" --allow-to-run-as-root &
      fpm_pid=$!
      for _ in $(seq 100); do [ -S "$work/php.sock" ] && break; sleep 0.05; done
      php_handler=$'[[handlers]]\nname = "PHP"\npath = "*.php"\nresource_type = "File"\nmodules = ["FastCgi"]'
      php_location="location ~ \\.php\$ { try_files \$uri =404; include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name; fastcgi_pass php; fastcgi_keep_conn on; }"
      # Both servers' defaults: a connection per request.
      php_conf=$(riis_config $'[[modules]]\nname = "FastCgi"\n[fastcgi]\naddress = "unix:'"$work"'/php.sock"' "$php_handler" php)
      NGINX_HTTP="upstream php { server unix:$work/php.sock; }"
      run_pair "PHP via php-fpm, a connection per request: FastCgi vs nginx fastcgi_pass" "$php_conf" /hello.php "$php_location" /hello.php
      # Four kept connections each (php-fpm has eight workers).
      php_conf=$(riis_config $'[[modules]]\nname = "FastCgi"\n[fastcgi]\naddress = "unix:'"$work"$'/php.sock"\nkept_connections = 4' "$php_handler" phpkept)
      NGINX_HTTP="upstream php { server unix:$work/php.sock; keepalive 4; }"
      run_pair "PHP via php-fpm, 4 kept connections: FastCgi vs nginx upstream keepalive" "$php_conf" /hello.php "$php_location" /hello.php
      NGINX_HTTP=""
      kill -TERM -- "-$fpm_pid" 2>/dev/null || true
      wait "$fpm_pid" 2>/dev/null || true
      ;;
    proxy)
      cat >"$work/backend.conf" <<NGX
worker_processes 1;
daemon off;
pid $work/backend.pid;
error_log $work/backend-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  types { text/plain txt; }
  server { listen 127.0.0.1:$BACKEND_PORT; root $work/www; }
}
NGX
      taskset -c "$CLIENT_CPU" nginx -c "$work/backend.conf" -p "$work" &
      backend_pid=$!
      for _ in $(seq 100); do [ -s "$work/backend.pid" ] && break; sleep 0.05; done
      proxy_conf=$(riis_config $'[[modules]]\nname = "ReverseProxy"\n[proxy]\nservers = ["http://127.0.0.1:'"$BACKEND_PORT"$'"]' \
        $'[[handlers]]\nname = "Proxy"\npath = "*"\nmodules = ["ReverseProxy"]' proxy)
      NGINX_HTTP="upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 32; }"
      run_pair "reverse proxy to a 1 KiB file: ReverseProxy vs nginx proxy_pass (keepalive 32)" "$proxy_conf" /1k.txt \
        'location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host; }' /1k.txt
      NGINX_HTTP=""
      kill "$backend_pid" 2>/dev/null || true
      wait "$backend_pid" 2>/dev/null || true
      ;;
    platform)
      node=$(command -v node || command -v nodejs || true)
      [ -n "$node" ] || { echo "bench: node is not installed (apt-get install nodejs)" >&2; exit 2; }
      cat >"$work/app.js" <<'JS'
require("http")
  .createServer((request, response) => {
    response.writeHead(200, { "Content-Type": "text/plain", "Content-Length": 12 });
    response.end("Hello World!");
  })
  .listen(Number(process.env.HTTP_PLATFORM_PORT || process.env.ASPNETCORE_PORT), "127.0.0.1");
JS
      HTTP_PLATFORM_PORT=$BACKEND_PORT taskset -c "$CLIENT_CPU" "$node" "$work/app.js" &
      node_pid=$!
      for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$BACKEND_PORT/" && break; sleep 0.05; done
      platform_conf=$(riis_config $'[[modules]]\nname = "HttpPlatformHandler"\n[[modules]]\nname = "ReverseProxy"\n[http_platform]\nprocess_path = "'"$(command -v taskset)"$'"\narguments = ["-c", "'"$CLIENT_CPU"'", "'"$node"'", "'"$work"$'/app.js"]' \
        $'[[handlers]]\nname = "Application"\npath = "*"\nmodules = ["HttpPlatformHandler", "ReverseProxy"]' platform)
      NGINX_HTTP="upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 32; }"
      run_pair "Node.js app: HttpPlatformHandler + ReverseProxy vs nginx proxy_pass (keepalive 32)" "$platform_conf" /hello \
        'location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host; }' /hello
      NGINX_HTTP=""
      # What running the program costs riis per request: the same requests
      # to the program nginx's went to, named in ReverseProxy's `servers`.
      listed_conf=$(riis_config $'[[modules]]\nname = "ReverseProxy"\n[proxy]\nservers = ["http://127.0.0.1:'"$BACKEND_PORT"$'"]' \
        $'[[handlers]]\nname = "Proxy"\npath = "*"\nmodules = ["ReverseProxy"]' listed)
      run_pair "Node.js app: HttpPlatformHandler + ReverseProxy vs ReverseProxy to the same program (riis only)" "$platform_conf" /hello "riis:$listed_conf" /hello
      # What AspNetCoreModule adds to HttpPlatformHandler's work per
      # request: the client's MS-ASPNETCORE-* headers looked for, the
      # pairing token set (the program ignores it).
      core_conf=$(riis_config $'[[modules]]\nname = "AspNetCoreModule"\n[[modules]]\nname = "ReverseProxy"\n[asp_net_core]\nprocess_path = "'"$(command -v taskset)"$'"\narguments = ["-c", "'"$CLIENT_CPU"'", "'"$node"'", "'"$work"$'/app.js"]' \
        $'[[handlers]]\nname = "Application"\npath = "*"\nmodules = ["AspNetCoreModule", "ReverseProxy"]' aspnetcore)
      run_pair "Node.js app: AspNetCoreModule + ReverseProxy vs HttpPlatformHandler + ReverseProxy (riis only)" "$core_conf" /hello "riis:$platform_conf" /hello
      kill "$node_pid" 2>/dev/null || true
      wait "$node_pid" 2>/dev/null || true
      ;;
    webdav)
      # The file exists before the first PUT, so both answer 204 and the
      # check's GET finds it.
      head -c 4096 /dev/zero | tr '\0' x > "$work/www/put.bin"
      mkdir -p "$work/nginx-body"
      # nginx's worker (an unprivileged user) renames its uploads into www;
      # its files are 0644 (dav_access), as riis keeps the mode it replaces,
      # so each server reads what the other wrote.
      chmod 777 "$work/www" "$work/nginx-body"
      webdav_conf=$(riis_config "[[modules]]
name = \"WebDav\"
$static_modules" "[[handlers]]
name = \"WebDAV\"
path = \"*\"
verbs = [\"PUT\"]
modules = [\"WebDav\"]
$static_handler
[webdav]
enabled = true
authoring_rules = [{ users = \"*\", access = \"Write\" }]" webdav)
      export BENCH_METHOD=PUT BENCH_BODY_BYTES=4096
      WRK_ARGS=(-s bench/request.lua)
      run_pair "webdav: PUT 4 KiB, WebDav vs nginx dav_methods" "$webdav_conf" /put.bin \
        "location / { dav_methods PUT; dav_access user:rw group:r all:r; client_body_temp_path $work/nginx-body; }" /put.bin
      WRK_ARGS=()
      unset BENCH_METHOD BENCH_BODY_BYTES
      ;;
    hyper)
      run_pair "bare hyper, no riis (the floor under hello) vs nginx return 200" bare-hyper / \
        'location / { default_type text/plain; return 200 "Hello World!"; }' /
      ;;
    *) echo "bench: unknown scenario $s" >&2; exit 2 ;;
  esac
done
echo
echo "results: $report"
