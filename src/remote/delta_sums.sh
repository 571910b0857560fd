# hostsync: the SHA-256 of each BLOCK-byte block of FILE, for a delta on a host
# without perl (issue 19, src/transport/delta_sh.rs). Run as
#   sh -c SCRIPT sh FILE BLOCK
# Reads:  FILE (a regular file; never through a symlink at FILE).
# Prints: `none` when sha256sum or dd is missing; `other` when FILE is not a
#         readable regular file; else `size N`, then one sha256sum line per
#         block, in order, then `end`.
f=$1 b=$2
if ! command -v sha256sum >/dev/null 2>&1 || ! command -v dd >/dev/null 2>&1; then
  echo none
  exit 0
fi
if [ -h "$f" ] || [ ! -f "$f" ] || [ ! -r "$f" ]; then
  echo other
  exit 0
fi
size=$(wc -c <"$f") || exit 1
size=$((size + 0))
echo "size $size"
i=0
while [ $((i * b)) -lt "$size" ]; do
  dd if="$f" bs="$b" skip="$i" count=1 2>/dev/null | sha256sum
  i=$((i + 1))
done
echo end
