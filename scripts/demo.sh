#!/usr/bin/env bash
# Runs hostsync's main job against a throwaway OpenSSH server on a loopback address.
#
# It builds hostsync, generates a host key and a client key in a temporary
# folder, starts sshd on 127.0.0.1 (a free port), and copies the repository's
# example configuration (config.ini, connection_info.json, mappings/) as its
# template: the example's key host becomes this sshd, the password host stays
# "disabled" (and is never contacted), and each dest moves under the temporary
# folder. So the example is run for real every time, and cannot rot unnoticed.
# Then: check --offline, check, sync --dry-run, sync twice (the second sends
# nothing), an edit and a removal under the "delete" + "backups" mapping, one
# more sync, what arrived, the logs. Any step that fails stops the demo (exit 1).
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
hostsync="${CARGO_TARGET_DIR:-$here/target}/release/hostsync"

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

fail() {
  echo "demo: $*" >&2
  exit 1
}

# The example, copied, then pointed at this sshd.
cfg="$work/cfg"
mkdir -p "$cfg" "$work/remote"
cp -R "$here/config.ini" "$here/connection_info.json" "$here/mappings" "$cfg/"
mkdir -p "$cfg/logs" && cp "$here/logs/.gitignore" "$cfg/logs/"
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$work/host_key.pub")" >"$cfg/known_hosts"
sed -i 's|^known_hosts = .*|known_hosts = known_hosts|' "$cfg/config.ini"
grep -qx 'known_hosts = known_hosts' "$cfg/config.ini" || fail "config.ini of the example has no known_hosts line"
# The example's key host is the entry with an identity_file (one entry per line).
key_ip=$(sed -n 's/.*"ip_address": "\([^"]*\)".*"identity_file".*/\1/p' "$cfg/connection_info.json")
if [ -z "$key_ip" ] || [ ! -f "$cfg/mappings/$key_ip.json" ]; then
  fail "the example has no key host with a mapping file"
fi
sed -i "/\"ip_address\": \"${key_ip//./\\.}\"/{
  /\"port\"/! s|\"ip_address\": \"[^\"]*\"|&, \"port\": 22|
  s|\"ip_address\": \"[^\"]*\"|\"ip_address\": \"127.0.0.1\"|
  s|\"user\": \"[^\"]*\"|\"user\": \"$user\"|
  s|\"port\": [0-9]*|\"port\": $port|
  s|\"identity_file\": \"[^\"]*\"|\"identity_file\": \"$work/client_key\"|
  s|, *\"disabled\": true||
}" "$cfg/connection_info.json"
line=$(grep '"ip_address": "127.0.0.1"' "$cfg/connection_info.json" || true)
[[ $line == *"\"port\": $port"* && $line == *"\"identity_file\": \"$work/client_key\""* && $line != *disabled* ]] ||
  fail "could not point the example's key host at this sshd: $(cat "$cfg/connection_info.json")"
# Every other host must stay disabled: the demo contacts nothing but loopback.
if grep '"ip_address"' "$cfg/connection_info.json" | grep -v '"127.0.0.1"' | grep -vq '"disabled": true'; then
  fail "an example host other than the key host is not disabled"
fi
mv "$cfg/mappings/$key_ip.json" "$cfg/mappings/127.0.0.1.json"
sed -i "s|\"dest\": \"/|\"dest\": \"$work/remote/|" "$cfg/mappings/127.0.0.1.json"

# The sources the example's mappings name: a file, a tree with excluded
# names, and a tree kept exactly (delete) with numbered backups.
mkdir -p "$cfg/site/css" "$cfg/site/cache" "$cfg/conf.d"
echo "listen = 8080" >"$cfg/app.conf"
echo "<h1>hello from hostsync</h1>" >"$cfg/site/index.html"
echo "body { color: teal }" >"$cfg/site/css/main.css"
echo "editor swap file, excluded" >"$cfg/site/.index.html.swp"
echo "cache, excluded" >"$cfg/site/cache/page.tmp"
echo "workers = 4" >"$cfg/conf.d/10-base.conf"
echo "debug = false" >"$cfg/conf.d/20-extra.conf"

hs() {
  echo "== hostsync $*"
  (cd "$cfg" && "$hostsync" "$@") || fail "hostsync $* failed (exit $?)"
}
hs check --offline 2>&1 | tee "$work/offline.out"
grep -q 'warning:' "$work/offline.out" && fail "check --offline warned about the demo's copy of the example"
hs check
hs sync --dry-run
echo "== (first sync: everything is new)"
hs sync
echo "== (second sync: nothing changed, nothing is sent)"
hs sync
echo "== edit conf.d/10-base.conf and remove conf.d/20-extra.conf (mapping with delete and backups)"
echo "workers = 8" >"$cfg/conf.d/10-base.conf"
rm "$cfg/conf.d/20-extra.conf"
hs sync
echo "== what arrived under $work/remote"
(cd "$work/remote" && find . | sort)
[ -n "$(find "$work/remote" -name 10-base.conf.1)" ] || fail "the replaced 10-base.conf was not kept as 10-base.conf.1"
[ -z "$(find "$work/remote" -name 20-extra.conf)" ] || fail "the removed 20-extra.conf is still on the host"
echo "== logs/info.log"
cat "$cfg/logs/info.log"
echo "== logs/error.log (warnings and errors only)"
if [ -s "$cfg/logs/error.log" ]; then cat "$cfg/logs/error.log"; else echo "(empty: nothing failed)"; fi
echo "== done; sshd stopped and $work removed"
