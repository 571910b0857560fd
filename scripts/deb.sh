#!/usr/bin/env bash
# Builds the Debian package target/debian/hostsync_<version>-1_<arch>.deb (issue 20).
#
# It builds hostsync in release mode, generates what the package ships besides
# the binary into target/release/deb-assets (the man page from `hostsync man`,
# the bash, zsh and fish completions from `hostsync completions`, and contrib's
# systemd units with ExecStart=/usr/bin/hostsync, where the package puts the
# binary), then runs `cargo deb --no-build`, which packs what Cargo.toml's
# [package.metadata.deb] lists and the maintainer scripts in contrib/debian/.
# Prints the path of the .deb on its last line.
#
# Needs: cargo, and cargo-deb (`cargo install cargo-deb --locked`, or as .ci/run does).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
target="${CARGO_TARGET_DIR:-$here/target}"
if ! cargo deb --version >/dev/null 2>&1; then
  echo "deb: needs cargo-deb: cargo install cargo-deb --locked" >&2
  exit 2
fi

cargo build --release --locked --quiet
bin="$target/release/hostsync"
assets="$target/release/deb-assets"
rm -rf "$assets"
mkdir -p "$assets"
"$bin" man | gzip -9n >"$assets/hostsync.1.gz"
"$bin" completions bash >"$assets/hostsync.bash"
"$bin" completions zsh >"$assets/_hostsync"
"$bin" completions fish >"$assets/hostsync.fish"
for unit in hostsync.service hostsync@.service; do
  sed 's|/usr/local/bin/hostsync|/usr/bin/hostsync|g' "contrib/$unit" >"$assets/$unit"
  if ! grep -q '^ExecStart=/usr/bin/hostsync ' "$assets/$unit" || grep -q /usr/local/bin "$assets/$unit"; then
    echo "deb: contrib/$unit: could not point ExecStart at /usr/bin/hostsync" >&2
    exit 1
  fi
done
# cargo deb prints the path of the package it wrote.
deb=$(cargo deb --no-build --quiet | tail -n 1)
[ -f "$deb" ] || { echo "deb: cargo deb wrote no package (it said: $deb)" >&2; exit 1; }
echo "$deb"
