#!/usr/bin/env bash
# The latency the shared limiter ([account.shared] on Redis) adds to each message.
#
#   bench/shared_limiter.sh [MESSAGES]      (default 3000)
#
# Starts redis-server and Postfix's smtp-sink on free ports, then the release build of
# sesrelay twice on the same limits (a send rate and a 24-hour quota high enough never to
# throttle): counted in the process, and counted on Redis. Python's smtplib sends MESSAGES
# one after the other over one connection to each and times every message from MAIL to the
# final 250; the script prints the median, p90 and p99 of both and the difference of the
# medians: what one EVALSHA round trip to Redis costs a message.
#
# Needs redis-server (apt-get install redis-server) and smtp-sink (apt-get install postfix).
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-3000}

cargo build --release -q
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    exit 1
}
redis_port=$(free_port)
sink_port=$(free_port)

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
user=(); [ "$(id -u)" -eq 0 ] && user=(-u nobody)
/usr/sbin/smtp-sink "${user[@]}" "127.0.0.1:$sink_port" 1000 &
wait_port "$redis_port"
wait_port "$sink_port"

# relay NAME PORT [SHARED_SECTION]
relay() {
    cat > "$work/$1.toml" <<TOML
[server]
listen = ["127.0.0.1:$2"]
[upstream]
url = "smtp://127.0.0.1:$sink_port?tls=none"
[account]
max_send_rate = 1000000
max_24_hour_send = 1000000000
$3
[configuration_sets.load]
[identities."example.com"]
verified = true
default_configuration_set = "load"
TOML
    RUST_LOG=warn target/release/sesrelay serve --config "$work/$1.toml" &
    wait_port "$2"
}
local_port=$(free_port)
shared_port=$(free_port)
relay local "$local_port" ""
relay shared "$shared_port" "[account.shared]
redis_url = \"redis://127.0.0.1:$redis_port/0\"
key_prefix = \"bench:\"
timeout = \"50ms\""

python3 - "$messages" "$local_port" "$shared_port" <<'PY'
import smtplib, statistics, sys, time

messages, local_port, shared_port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
body = ("From: load@example.com\r\nTo: rcpt@example.net\r\nSubject: bench\r\n\r\n"
        + "x" * 1000 + "\r\n")

def run(port):
    times = []
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo("bench")
        for _ in range(200):  # warm-up: connections to the upstream, the script loaded
            smtp.sendmail("load@example.com", ["rcpt@example.net"], body)
        for _ in range(messages):
            started = time.perf_counter()
            smtp.sendmail("load@example.com", ["rcpt@example.net"], body)
            times.append((time.perf_counter() - started) * 1000)
    times.sort()
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    return statistics.median(times), pick(0.9), pick(0.99)

# Alternate the two, twice, so that neither runs only on a cold or a warm machine.
results = {"local": [], "shared": []}
for _ in range(2):
    results["local"].append(run(local_port))
    results["shared"].append(run(shared_port))
for name, runs in results.items():
    median = statistics.median(r[0] for r in runs)
    p90 = statistics.median(r[1] for r in runs)
    p99 = statistics.median(r[2] for r in runs)
    print(f"{name:6}: {messages} messages each run, median {median:.3f} ms, p90 {p90:.3f} ms, p99 {p99:.3f} ms")
added = statistics.median(r[0] for r in results["shared"]) - statistics.median(r[0] for r in results["local"])
print(f"added by the shared limiter at the median: {added:.3f} ms per message")
PY
