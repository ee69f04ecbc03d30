#!/usr/bin/env bash
# Load test: Postfix's smtp-source → sesrelay (release build) → Postfix's smtp-sink.
# Prints messages per second and the relay's peak resident memory.
#
#   bench/load.sh [MESSAGES] [SESSIONS] [SIZE_BYTES]     (defaults 20000 20 2000)
#
# Needs smtp-source and smtp-sink (apt-get install postfix).
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-20000}
sessions=${2:-20}
size=${3:-2000}

cargo build --release -q
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sink_port=$(free_port)
relay_port=$(free_port)

user=(); [ "$(id -u)" -eq 0 ] && user=(-u nobody)
/usr/sbin/smtp-sink "${user[@]}" "127.0.0.1:$sink_port" 1000 &

cat > "$work/sesrelay.toml" <<TOML
[server]
listen = ["127.0.0.1:$relay_port"]
[policy]
require_verified_sender = true
[upstream]
url = "smtp://127.0.0.1:$sink_port?tls=none"
[configuration_sets.load]
tags = { bench = "yes" }
[identities."example.com"]
verified = true
default_configuration_set = "load"
TOML
RUST_LOG=warn target/release/sesrelay serve --config "$work/sesrelay.toml" &
relay_pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$relay_port") 2>/dev/null && break
    sleep 0.05
done

start=$(date +%s.%N)
# smtp-source sends From: <sender> and a body of SIZE bytes; -d reuses each session.
/usr/sbin/smtp-source -d -s "$sessions" -m "$messages" -l "$size" \
    -f load@example.com -t rcpt@example.net "127.0.0.1:$relay_port"
end=$(date +%s.%N)

peak_kib=$(awk '/VmHWM/ {print $2}' "/proc/$relay_pid/status")
python3 - "$start" "$end" "$messages" "$sessions" "$size" "$peak_kib" <<'PY'
import sys
start, end, n, s, size, peak = map(float, sys.argv[1:])
secs = end - start
print(f"{int(n)} messages of {int(size)} bytes over {int(s)} sessions in {secs:.2f}s: "
      f"{n/secs:.0f} messages/s; relay peak RSS {peak/1024:.1f} MiB")
PY
