# hostsync: the listing of a host served over its shell (src/remote/mod.rs,
# listing_script). Follows trust.sh, which defines Q, T, G, ME and GF. Every
# record is TAG then NUL-terminated fields; the tags are named in
# src/remote/tags.rs (module `listing`), and the Rust parser reads them there.
# Reads:  $MK (1: make missing roots with mkdir -p; 0: change nothing) and $SM
#         (see trust.sh), set by the caller; then one call per root, each argument
#         single-quoted by the caller:
#           L INDEX CHECKSUM ROOT [-maxdepth N]   the whole tree below ROOT
#           P INDEX CHECKSUM ROOT ./PATH...       only these paths, hashing files
#           A INDEX ROOT ./PARENT...              these directories alone
#           V                                     say whether tar is GNU or bsdtar
#         CHECKSUM 1 hashes every regular file listed (sync --checksum).
# Prints: U uid                            the login user (first)
#         M index  |  N index  |  E index reason
#                                          root usable / missing (MK=0) / unusable
#         O uid mode path                  owner of the root, then of its parent
#         f type size mtime mode uid rel target
#                                          one entry, type as find's %y; mtime in
#                                          seconds, with a fraction where GNU find
#                                          gives one (whole seconds from stat -c)
#         h rel sha256                     a regular file's content hash
#         I index                          find reported errors: the list is partial
#         t 1|0                            answer to V
# Two ways to list, chosen here at run time: GNU find -printf (GF=1, one process
# per root), or, where find has no -printf (BusyBox), find -exec batches into one
# `stat -c` per batch ($B: list_stat.sh, which the caller puts in B). Both
# print the same records.
# shellcheck disable=SC2154 # g, ME, GF and the functions Q T G come from trust.sh; B from the caller
printf 'U\0%s\0' "$ME"
R() {
  if ! G "$2"; then printf 'E\0%s\0%s\0' "$1" "$g"; return 1; fi
  if [ ! -e "$2" ] && [ ! -L "$2" ]; then
    if [ "$MK" = 1 ]; then
      e=$(mkdir -p -- "$2" 2>&1) || { printf 'E\0%s\0%s\0' "$1" "$e"; return 1; }
    else
      printf 'N\0%s\0' "$1"; return 1
    fi
  fi
  if [ -L "$2" ] || [ ! -d "$2" ]; then
    printf 'E\0%s\0%s\0' "$1" "exists and is not a directory"; return 1
  fi
  printf 'M\0%s\0' "$1"
  for q in "$2" "$2/.."; do
    o=$(Q "$q") && [ -n "$o" ] && printf 'O\0%s\0%s\0%s\0' "${o% *}" "${o#* }" "$q"
  done
}
H() {
  find "$@" -type f -exec sh -c 'for p in "$@"; do h=$(sha256sum < "$p" 2>/dev/null) && printf "h\0%s\0%s\0" "$p" "${h%% *}"; done' sh {} + 2>/dev/null
}
# F ARGS: the f records of `find ARGS`, names as find prints them (%p).
F() {
  if [ "$GF" = 1 ]; then
    find "$@" -printf 'f\0%y\0%s\0%T@\0%m\0%U\0%p\0%l\0'
  else
    find "$@" -exec sh -c "$B" sh {} +
  fi
}
L() {
  i=$1; c=$2; r=$3; shift 3
  R "$i" "$r" || return 0
  if [ "$GF" = 1 ]; then
    find "$r" -mindepth 1 "$@" -printf 'f\0%y\0%s\0%T@\0%m\0%U\0%P\0%l\0' || printf 'I\0%s\0' "$i"
  else
    ( cd -- "$r" || exit 1; find . -mindepth 1 "$@" -exec sh -c "$B" sh {} + ) || printf 'I\0%s\0' "$i"
  fi
  [ "$c" = 1 ] || return 0
  ( cd -- "$r" || exit 0; H . -mindepth 1 "$@" )
}
P() {
  i=$1; c=$2; r=$3; shift 3
  R "$i" "$r" || return 0
  ( cd -- "$r" || exit 0
    for p in "$@"; do
      [ -e "$p" ] || [ -L "$p" ] || continue
      F "$p" 2>/dev/null
      if [ -f "$p" ] && [ ! -L "$p" ]; then
        h=$(sha256sum < "$p" 2>/dev/null) && printf 'h\0%s\0%s\0' "$p" "${h%% *}"
      elif [ "$c" = 1 ] && [ -d "$p" ] && [ ! -L "$p" ]; then
        H "$p" -mindepth 1
      fi
    done )
}
A() {
  i=$1; r=$2; shift 2
  R "$i" "$r" || return 0
  ( cd -- "$r" || exit 0
    for p in "$@"; do
      [ -e "$p" ] || [ -L "$p" ] || continue
      F "$p" -maxdepth 0 2>/dev/null
    done )
}
V() {
  case "$(tar --version 2>/dev/null)" in
    *"GNU tar"* | *bsdtar*) printf 't\0%s\0' 1 ;;
    *) printf 't\0%s\0' 0 ;;
  esac
}
