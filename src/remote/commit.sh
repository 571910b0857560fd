# hostsync: the commit of a host served over its shell (src/remote/mod.rs,
# commit_script): every uploaded temporary renamed over its destination, every
# step confirmed. Uses only POSIX sh, mv, ln, rm (mv -T: GNU and BusyBox).
# Reads:  one call per step, each argument single-quoted by the caller; INDEX is
#         the step's number, which its record names:
#           f TMP DEST BACKUPS INDEX          rename TMP over DEST
#           s TARGET TMP DEST BACKUPS INDEX   make a symlink, swapped in by rename
#           d ROOT REL INDEX                  remove ROOT/REL unless a parent
#                                             between is a symlink or no directory
#           rm -f -- PATH                     drop a stale temporary (no record)
#         With BACKUPS > 0 a regular-file DEST is first kept as DEST.1 by a hard
#         link (older ones rotated up to DEST.BACKUPS), so DEST never disappears.
# Prints: per step, exactly one record (tags in src/remote/tags.rs, `commit`):
#           K index            done
#           F index reason     refused; nothing of it happened
#         A step with neither record did not happen (the script died).
b() {
  [ "$2" -gt 0 ] && [ -f "$1" ] && [ ! -L "$1" ] || return 0
  k=$(($2 - 1))
  while [ "$k" -ge 1 ]; do
    if [ -e "$1.$k" ] || [ -L "$1.$k" ]; then
      mv -f -T -- "$1.$k" "$1.$((k + 1))" 2>/dev/null || { e="cannot rotate $1.$k to $1.$((k + 1))"; return 1; }
    fi
    k=$((k - 1))
  done
  if [ -e "$1.1" ] || [ -L "$1.1" ]; then
    rm -f -- "$1.1" 2>/dev/null || { e="cannot drop the oldest backup $1.1"; return 1; }
  fi
  ln -- "$1" "$1.1" 2>/dev/null || mv -f -T -- "$1" "$1.1" 2>/dev/null || { e="cannot keep the previous version as $1.1"; return 1; }
}
f() {
  if [ -d "$2" ] && [ ! -L "$2" ]; then
    rm -f -- "$1"; printf 'F\0%s\0%s\0' "$4" "remote path is a directory"; return
  fi
  if ! b "$2" "$3"; then
    rm -f -- "$1"; printf 'F\0%s\0%s\0' "$4" "not replaced: $e"; return
  fi
  [ -L "$2" ] && [ -d "$2" ] && rm -f -- "$2"
  if mv -f -- "$1" "$2"; then printf 'K\0%s\0' "$4"; else rm -f -- "$1"; printf 'F\0%s\0%s\0' "$4" "rename into place failed"; fi
}
s() {
  rm -f -- "$2"
  if [ -d "$3" ] && [ ! -L "$3" ]; then
    printf 'F\0%s\0%s\0' "$5" "remote path is a directory"; return
  fi
  if ! b "$3" "$4"; then
    printf 'F\0%s\0%s\0' "$5" "not replaced: $e"; return
  fi
  [ -L "$3" ] && [ -d "$3" ] && rm -f -- "$3"
  if ln -s -- "$1" "$2" && mv -f -- "$2" "$3"; then printf 'K\0%s\0' "$5"; else rm -f -- "$2"; printf 'F\0%s\0%s\0' "$5" "symlink failed"; fi
}
d() {
  p=$1; rest=$2
  while case $rest in */*) true ;; *) false ;; esac; do
    p=$p/${rest%%/*}; rest=${rest#*/}
    [ -e "$p" ] || [ -L "$p" ] || { printf 'K\0%s\0' "$3"; return 0; }
    if [ -L "$p" ] || [ ! -d "$p" ]; then
      printf 'F\0%s\0%s\0' "$3" "not removed: a parent is a symlink or not a directory on the remote"; return
    fi
  done
  if rm -rf -- "${1:?}/${2:?}"; then printf 'K\0%s\0' "$3"; else printf 'F\0%s\0%s\0' "$3" "remove failed"; fi
}
