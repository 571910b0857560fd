#!/usr/bin/env bash
# A/B of two hostsync builds on the same work (BENCHMARKS.md, "Session 5 lab A/B").
#
# Starts one sshd on 127.0.0.79 (a free port; with DELAY_MS, behind
# scripts/delay-proxy.py), makes DIRS x PER files of SIZE random bytes, and runs
# `OLD sync` and `NEW sync` alternately RUNS times each, the remote tree deleted
# before every run (a failed run stops it: a failure's time measures nothing).
# Prints each build's times in ms (sorted) and, where GNU time
# is installed (Debian: time), its CPU times.
# Logs in as the user `hostsync-t` (the test suite's; root runs only). Only loopback
# is contacted; everything lives in one temporary folder, removed on exit.
#
#   OLD=path NEW=path [RUNS=7] [DIRS=20] [PER=100] [SIZE=4096] [DELAY_MS=10]
#   [REMOTE=/dev/shm/x] scripts/ab.sh
set -euo pipefail
: "${OLD:?OLD=the first hostsync binary}" "${NEW:?NEW=the second hostsync binary}"
# Absolute paths: the runs happen in the config folder.
OLD=$(realpath "$OLD") NEW=$(realpath "$NEW")
if [ ! -x "$OLD" ] || [ ! -x "$NEW" ]; then echo "ab: OLD and NEW must be executables" >&2; exit 2; fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=$(mktemp -d /tmp/hostsync-ab.XXXXXX)
chmod 755 "$W"
user=hostsync-t
addr=127.0.0.79
port=$((40000 + RANDOM % 20000))
ssh-keygen -q -t ed25519 -N '' -f "$W/hk"
ssh-keygen -q -t ed25519 -N '' -f "$W/ck"
install -m 644 "$W/ck.pub" "$W/ak"
printf 'ListenAddress %s:%s\nHostKey %s\nAuthorizedKeysFile %s\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nAllowUsers %s\n' \
  "$addr" "$port" "$W/hk" "$W/ak" "$user" >"$W/sshd_config"
mkdir -p /run/sshd
/usr/sbin/sshd -D -f "$W/sshd_config" -E "$W/sshd.log" &
pids=$!
trap 'kill $pids 2>/dev/null; rm -rf "$W"' EXIT
cport=$port
if [ -n "${DELAY_MS:-}" ]; then
  cport=$((port + 1))
  python3 "$here/scripts/delay-proxy.py" --listen-host "$addr" --listen-port "$cport" \
    --target-host "$addr" --target-port "$port" --delay-ms "$DELAY_MS" >"$W/proxy.log" 2>&1 &
  pids="$pids $!"
fi
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/$addr/$cport") 2>/dev/null && break; sleep 0.05; done
remote=${REMOTE:-$W/remote}
mkdir -p "$remote" "$W/cfg/mappings"
chown "$user" "$remote"
echo "[$addr]:$cport $(cut -d' ' -f1,2 "$W/hk.pub")" >"$W/cfg/kh"
printf '[DEFAULT]\nlog_path = logs\n[ssh]\nknown_hosts = kh\n' >"$W/cfg/config.ini"
echo "[{\"ip_address\": \"$addr\", \"user\": \"$user\", \"identity_file\": \"$W/ck\", \"port\": $cport}]" >"$W/cfg/connection_info.json"
echo "[{\"src\": \"tree/\", \"dest\": \"$remote/www\"}]" >"$W/cfg/mappings/$addr.json"
for d in $(seq 1 "${DIRS:-20}"); do
  mkdir -p "$W/cfg/tree/d$d"
  for f in $(seq 1 "${PER:-100}"); do head -c "${SIZE:-4096}" /dev/urandom >"$W/cfg/tree/d$d/f$f"; done
done
cd "$W/cfg"
for _ in $(seq 1 "${RUNS:-7}"); do
  for build in old new; do
    bin=$OLD
    [ "$build" = new ] && bin=$NEW
    rm -rf "$remote/www"
    t0=$EPOCHREALTIME
    if [ -x /usr/bin/time ]; then
      /usr/bin/time -f "$build cpu %U user %S sys" -a -o "$W/cpu.log" "$bin" sync >/dev/null || { echo "ab: $build failed" >&2; exit 1; }
    else
      "$bin" sync >/dev/null || { echo "ab: $build failed" >&2; exit 1; }
    fi
    t1=$EPOCHREALTIME
    echo "$build $(echo "($t1 - $t0) * 1000 / 1" | bc)"
  done
done | sort -k1,1 -k2,2n | awk '{a[$1] = a[$1] " " $2} END {for (k in a) print k ":" a[k]}'
[ ! -f "$W/cpu.log" ] || sort "$W/cpu.log"
[ "$remote" = "$W/remote" ] || rm -rf "$remote/www"
