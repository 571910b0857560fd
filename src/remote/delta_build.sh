# hostsync: FILE rebuilt into TMP from its old copy OLD and the new blocks on
# stdin, for a delta on a host without perl (issue 19, src/transport/delta_sh.rs).
# Run as
#   sh -c SCRIPT sh OLD TMP PATCH BLOCK MODE MTIME SHA256 STEP...
# where each STEP is three words: `o FIRST COUNT` (blocks of OLD) or
# `p FIRST COUNT` (blocks of the new data, which stdin holds, in order and
# concatenated; PATCH keeps it while TMP is built).
# Reads:  stdin to its end, OLD.
# Prints: one line: `K` when TMP holds content with that SHA256, mode MODE
#         (octal) and mtime MTIME (seconds.nanoseconds; whole seconds where
#         touch takes no more); else `F REASON`, and
#         then neither TMP nor PATCH is left. TMP and PATCH are made new
#         (noclobber): a name that exists already is never written through.
old=$1 tmp=$2 patch=$3 b=$4 mode=$5 mtime=$6 want=$7
shift 7
umask 077
fail() {
  rm -f "$tmp" "$patch"
  echo "F $1"
  exit 0
}
set -C
if ! (: >"$tmp") 2>/dev/null; then
  echo "F cannot create a temporary"
  exit 0
fi
if ! (: >"$patch") 2>/dev/null; then
  rm -f "$tmp"
  echo "F cannot create a temporary"
  exit 0
fi
set +C
cat >>"$patch" || fail "cannot store the new data"
while [ $# -ge 3 ]; do
  case $1 in
    o) src=$old ;;
    p) src=$patch ;;
    *) fail "a bad step $1" ;;
  esac
  dd if="$src" bs="$b" skip="$2" count="$3" 2>/dev/null >>"$tmp" || fail "cannot copy blocks"
  shift 3
done
rm -f "$patch"
got=$(sha256sum <"$tmp") || fail "cannot hash the rebuilt file"
[ "${got%% *}" = "$want" ] || fail "the rebuilt file differs from the local one (checksum mismatch)"
chmod "$mode" "$tmp" || fail "cannot set the mode"
# BusyBox's touch takes whole seconds only.
touch -m -d "@$mtime" "$tmp" 2>/dev/null || touch -m -d "@${mtime%.*}" "$tmp" 2>/dev/null ||
  fail "cannot set the mtime"
echo K
