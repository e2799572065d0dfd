#!/usr/bin/env bash
# The gateway under load, against the peer a user would otherwise pick, in one run:
#
#   local   a local route with a full resilience stack   vs  bare axum doing the same work
#   proxy   an `http` route to an upstream               vs  nginx proxy_pass to the same upstream
#   hyper   the same `http` route                         vs  a bare hyper proxy to it (axum's
#                                                              server + hyper-util's client, per
#                                                              core: the floor of a hyper gateway)
#   tls     HTTPS termination, then the http route       vs  nginx terminating with the same cert,
#           to the same upstream                              then proxy_pass to the same upstream
#   https   an `https` route to a TLS upstream (verified) vs  nginx proxy_pass https:// to it
#           (the upstream: nginx answering a fixed body over TLS, the same for both)
#
# Each pair is driven by wrk alternately, A B A B (ROUNDS rounds of DURATION each), so both
# see the same machine; the script prints req/s and p99 per round, and the ratios of the
# medians. Traffic stays on 127.0.0.1. Needs wrk, nginx and openssl (Debian: apt-get install
# wrk nginx-light openssl); builds the release binary and the two bare examples itself.
#
#   bash crates/switchyard-cli/bench/load.sh                 # every case
#   CASES="proxy" ROUNDS=5 DURATION=10s bash crates/switchyard-cli/bench/load.sh
#   WORKERS=shared CASES="proxy hyper" bash crates/switchyard-cli/bench/load.sh   # one runtime
set -euo pipefail
cd "$(dirname "$0")/../../.."

CASES=${CASES:-"local proxy hyper tls https"}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
WORKERS=${WORKERS:-}        # `switchyard serve --workers` (default: one per core)
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}

for tool in wrk nginx openssl; do
    command -v "$tool" >/dev/null || { echo "load.sh needs $tool (apt-get install wrk nginx-light openssl)" >&2; exit 1; }
done

cargo build --release --quiet -p switchyard-cli --bin switchyard --example bare_axum --example bare_proxy
BIN=target/release/switchyard
BARE=target/release/examples/bare_axum
BARE_PROXY=target/release/examples/bare_proxy

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo -n '$100' > "$WORK/body"
cat > "$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "$100"
LUA

# A CA and a certificate for 127.0.0.1 it signs, shared by every TLS side (a verifying client
# refuses a self-signed CA certificate used as a server's).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=load CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$WORK/key.pem" -out "$WORK/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$WORK/ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/ext" -out "$WORK/cert.pem" 2>/dev/null

wait_port() {
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    exit 1
}

# The upstream of the proxy cases, and the bare baseline of the local case.
"$BARE" 127.0.0.1:19001 > /dev/null & PIDS+=($!); BARE_PID=$!
wait_port 19001
"$BARE_PROXY" 127.0.0.1:19008 http://127.0.0.1:19001/charge > /dev/null & PIDS+=($!); PROXY_PID=$!
wait_port 19008

# switchyard: the local route with every section of the stack, and an http route to the
# upstream. The first server creates the routes file; the second reads the same one over HTTPS.
DB="$WORK/routes.db"
STACK='{"timeout":"2s","rate_limit":{"rate":"1000000/s"},"bulkhead":{"max_concurrent_calls":10000},"circuit_breaker":{"trip":{"consecutive_failures":{"threshold":1000}}},"retry":{"max_attempts":2}}'
RUST_LOG=error "$BIN" serve --db "$DB" --listen 127.0.0.1:19002 --allow-internal ${WORKERS:+--workers "$WORKERS"} > /dev/null 2>&1 & PIDS+=($!); SY_PID=$!
wait_port 19002
"$BIN" routes --db "$DB" set billing --strategy local --config "$STACK" >/dev/null
"$BIN" routes --db "$DB" set upstream --strategy http --endpoint http://127.0.0.1:19001/charge >/dev/null
"$BIN" routes --db "$DB" set secure --strategy http --endpoint https://127.0.0.1:19006/charge \
    --config "{\"transport\":{\"tls\":{\"ca_file\":\"$WORK/ca.pem\"}}}" >/dev/null
RUST_LOG=error "$BIN" serve --db "$DB" --listen 127.0.0.1:19003 --allow-internal ${WORKERS:+--workers "$WORKERS"} \
    --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" > /dev/null 2>&1 & PIDS+=($!); SY_TLS_PID=$!
sleep 1   # the first server's poll picks the new rows up

# nginx: proxy_pass to the same upstream (keepalive, as switchyard pools), and TLS termination
# in front of the bare baseline.
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
    upstream bare { server 127.0.0.1:19001; keepalive 128; }
    server {
        listen 127.0.0.1:19004;
        location / { rewrite ^ /charge break; proxy_pass http://bare; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
    upstream tls_upstream { server 127.0.0.1:19006; keepalive 128; }
    server {
        listen 127.0.0.1:19006 ssl;
        ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;
        location / { return 200 "billed:\$100"; }
    }
    server {
        listen 127.0.0.1:19007;
        location / {
            rewrite ^ /charge break; proxy_pass https://tls_upstream; proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_ssl_verify on; proxy_ssl_trusted_certificate $WORK/ca.pem; proxy_ssl_name 127.0.0.1;
            proxy_ssl_session_reuse on;
        }
    }
    server {
        listen 127.0.0.1:19005 ssl;
        ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;
        location / { rewrite ^ /charge break; proxy_pass http://bare; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
NGINX
nginx -c "$WORK/nginx.conf" -g 'daemon off;' & PIDS+=($!); NGINX_PID=$!
for port in 19003 19004 19005 19006 19007; do wait_port "$port"; done
NGINX_PIDS="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"

# The CPU time (user + system, clock ticks) the processes $1 used so far.
ticks() { local t=0 p; for p in $1; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
TICK=$(getconf CLK_TCK)

# One wrk round against $1, served by the processes $2: prints "req/s p99_ms cpu_us", the last
# the CPU those processes spent per request (µs, user + system). A round with any failed answer
# (non-2xx, socket errors) stops the script: a fast error is not throughput.
round() {
    local out before after
    before=$(ticks "$2")
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$WORK/post.lua" "$1" 2>&1)
    if grep -qE "Non-2xx|Socket errors" <<<"$out"; then
        echo "failed answers from $1:" >&2
        grep -E "Non-2xx|Socket errors" <<<"$out" >&2
        exit 1
    fi
    after=$(ticks "$2")
    awk -v cpu=$((after - before)) -v tick="$TICK" '/requests in/ {n=$1} /Requests\/sec/ {rps=$2} /^ +99%/ {v=$2; if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; p99=v} END {printf "%.0f %.3f %.1f\n", rps, p99, cpu / tick * 1e6 / n}' <<<"$out"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

compare() { # name, url A (switchyard), its pids, url B (peer), its pids, peer name
    local name=$1 a=$2 a_pids=$3 b=$4 b_pids=$5 peer=$6 ra=() rb=()
    round "$a" "$a_pids" >/dev/null; round "$b" "$b_pids" >/dev/null   # warm both
    for i in $(seq 1 "$ROUNDS"); do
        ra+=("$(round "$a" "$a_pids")"); rb+=("$(round "$b" "$b_pids")")
        echo "  $name round $i: switchyard ${ra[-1]}  $peer ${rb[-1]}  (req/s p99_ms cpu_us/req)"
    done
    local a_rps b_rps a_p99 b_p99 a_cpu b_cpu
    a_rps=$(printf '%s\n' "${ra[@]}" | cut -d' ' -f1 | median)
    b_rps=$(printf '%s\n' "${rb[@]}" | cut -d' ' -f1 | median)
    a_p99=$(printf '%s\n' "${ra[@]}" | cut -d' ' -f2 | median)
    b_p99=$(printf '%s\n' "${rb[@]}" | cut -d' ' -f2 | median)
    a_cpu=$(printf '%s\n' "${ra[@]}" | cut -d' ' -f3 | median)
    b_cpu=$(printf '%s\n' "${rb[@]}" | cut -d' ' -f3 | median)
    awk -v n="$name" -v p="$peer" -v ar="$a_rps" -v br="$b_rps" -v ap="$a_p99" -v bp="$b_p99" \
        -v ac="$a_cpu" -v bc="$b_cpu" \
        'BEGIN {printf "%s: switchyard %d req/s p99 %.2f ms %.1f us/req | %s %d req/s p99 %.2f ms %.1f us/req | req/s x%.2f, p99 x%.2f, cpu/req x%.2f\n", n, ar, ap, ac, p, br, bp, bc, ar/br, ap/bp, ac/bc}'
}

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS alternating rounds per case"
for case in $CASES; do
    case $case in
        local) compare local http://127.0.0.1:19002/billing "$SY_PID" \
            http://127.0.0.1:19001/billing "$BARE_PID" "bare axum" ;;
        proxy) compare proxy http://127.0.0.1:19002/upstream "$SY_PID" \
            http://127.0.0.1:19004/upstream "$NGINX_PIDS" "nginx" ;;
        hyper) compare hyper http://127.0.0.1:19002/upstream "$SY_PID" \
            http://127.0.0.1:19008/upstream "$PROXY_PID" "bare hyper" ;;
        tls) compare tls https://127.0.0.1:19003/upstream "$SY_TLS_PID" \
            https://127.0.0.1:19005/upstream "$NGINX_PIDS" "nginx" ;;
        # nginx is both sides' TLS upstream here: its CPU counts on both sides.
        https) compare https http://127.0.0.1:19002/secure "$SY_PID $NGINX_PIDS" \
            http://127.0.0.1:19007/secure "$NGINX_PIDS" "nginx" ;;
        *) echo "unknown case $case" >&2; exit 1 ;;
    esac
done
