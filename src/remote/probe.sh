# hostsync: check's writability probe (src/remote/probe.rs), also run by
# `sync --dry-run`. Follows trust.sh (Q, T, G). Changes nothing on the remote.
# Reads:  $SM (see trust.sh), set by the caller; then one call per mapping, each
#         argument single-quoted by the caller:
#           C INDEX DIR FILE   DIR: where sync writes; FILE: a file dest, or ''
# Prints: records of NUL-terminated fields (tags in src/remote/tags.rs, `probe`):
#           p (empty)                  the host has perl for the agent (first)
#           V index verdict path       one per call. Verdicts: ok (DIR is a
#                                      writable directory), new (missing; path is
#                                      a writable ancestor mkdir -p can use),
#                                      notdir, ro (path not writable or not
#                                      searchable), isdir (FILE is a directory),
#                                      ancestor (path: why a symlink on the way is
#                                      not followed). test -w asks the kernel with
#                                      the login user's own rights.
#           o index owner-mode-path    DIR (or its parent, unless sticky) can be
#                                      written by others than root and the login
#                                      user: `UID MODE PATH`
# shellcheck disable=SC2154 # g, ME, GF and the functions Q T G come from trust.sh
command -v perl >/dev/null 2>&1 && printf 'p\0\0'
C() {
  i=$1; d=$2; f=$3; p=$d
  if ! G "$d"; then printf 'V\0%s\0%s\0%s\0' "$i" ancestor "$g"; return; fi
  while [ "$p" != / ] && [ ! -e "$p" ] && [ ! -L "$p" ]; do
    p=${p%/*}; [ -n "$p" ] || p=/
  done
  if [ "$p" = "$d" ] && [ -L "$p" ]; then r=notdir
  elif [ ! -d "$p" ]; then r=notdir
  elif [ ! -w "$p" ] || [ ! -x "$p" ]; then r=ro
  elif [ -n "$f" ] && [ -d "$f" ] && [ ! -L "$f" ]; then r=isdir; p=$f
  elif [ "$p" = "$d" ]; then r=ok
  else r=new
  fi
  printf 'V\0%s\0%s\0%s\0' "$i" "$r" "$p"
  [ "$r" = ok ] || [ "$r" = isdir ] || return 0
  for q in "$d" "$d/.."; do
    o=$(Q "$q") || continue
    [ -n "$o" ] || continue
    T "${o% *}" "${o#* }" && continue
    [ "$q" != "$d" ] && [ $((0${o#* } & 01000)) != 0 ] && continue
    printf 'o\0%s\0%s %s\0' "$i" "$o" "$q"
  done
}
