#!/usr/bin/env bash
# Runs hostsync's main job against a throwaway OpenSSH server on a loopback address.
#
# It builds hostsync, generates a host key and a client key in a temporary
# folder, starts sshd on 127.0.0.1 (a free port), writes config.ini,
# connection_info.json and a mapping file for it, runs `hostsync sync` twice
# (the second run sends nothing), shows what arrived and the logs, and stops sshd.
# Nothing outside the temporary folder is touched; only loopback is contacted.
#
# Needs: cargo, and OpenSSH's sshd and scp (Debian: apt-get install openssh-server openssh-client).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
sshd_bin=$(command -v sshd || echo /usr/sbin/sshd)
if [ ! -x "$sshd_bin" ] || ! command -v scp >/dev/null; then
  echo "demo: needs OpenSSH's sshd and scp; on Debian: apt-get install openssh-server openssh-client" >&2
  exit 2
fi

echo "== building hostsync"
cargo build --quiet --release --manifest-path "$here/Cargo.toml"
hostsync="$here/target/release/hostsync"

work=$(mktemp -d /tmp/hostsync-demo.XXXXXX)
chmod 755 "$work"
sshd_pid=""
cleanup() {
  [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null && wait "$sshd_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

user=$(id -un)
[ "$(id -u)" = 0 ] && mkdir -p /run/sshd
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 42022)
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
chmod 644 "$work/authorized_keys"
cat >"$work/sshd_config" <<EOF
ListenAddress 127.0.0.1:$port
HostKey $work/host_key
AuthorizedKeysFile $work/authorized_keys
PidFile $work/sshd.pid
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AllowUsers $user
EOF
"$sshd_bin" -D -e -f "$work/sshd_config" -E "$work/sshd.log" &
sshd_pid=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.05
done
echo "== sshd listening on 127.0.0.1:$port (log: sshd.log)"

# What the user has: config.ini, connection_info.json, mappings/<ip>.json, and files.
mkdir -p "$work/cfg/mappings" "$work/cfg/site/css" "$work/cfg/site/empty" "$work/remote"
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$work/host_key.pub")" >"$work/cfg/known_hosts"
cat >"$work/cfg/config.ini" <<EOF
[DEFAULT]
number_of_connections = 4
log_path = logs
connection_info_path = connection_info.json
address_mapper_path = mappings

[ssh]
known_hosts = known_hosts
EOF
cat >"$work/cfg/connection_info.json" <<EOF
[
  {"ip_address": "127.0.0.1", "user": "$user", "identity_file": "$work/client_key", "port": $port}
]
EOF
cat >"$work/cfg/mappings/127.0.0.1.json" <<EOF
[
  {"src": "app.conf", "dest": "$work/remote/etc/app/app.conf"},
  {"src": "site/", "dest": "$work/remote/srv/www/site"}
]
EOF
echo "listen = 8080" >"$work/cfg/app.conf"
echo "<h1>hello from hostsync</h1>" >"$work/cfg/site/index.html"
echo "body { color: teal }" >"$work/cfg/site/css/main.css"

echo "== hostsync sync (first run: everything is new)"
(cd "$work/cfg" && "$hostsync" sync) || true
echo "== hostsync sync (second run: nothing changed, nothing is sent)"
(cd "$work/cfg" && "$hostsync" sync) || true
echo "== what arrived under $work/remote"
(cd "$work/remote" && find . | sort)
echo "== logs/info.log"
cat "$work/cfg/logs/info.log"
echo "== logs/error.log (warnings and errors only)"
if [ -s "$work/cfg/logs/error.log" ]; then cat "$work/cfg/logs/error.log"; else echo "(empty: nothing failed)"; fi
echo "== done; sshd stopped and $work removed"
