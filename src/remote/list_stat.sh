# hostsync: the listing's way where find has no -printf (BusyBox), run by
# list.sh as `find ... -exec sh -c "$B" sh {} +`. Uses only POSIX sh and the
# `stat -c` and `readlink` that GNU and BusyBox share.
# Reads:  PATH... as arguments (names byte-exact: they never pass through text).
# Prints: one `f` record (src/remote/tags.rs, `listing::ENTRY`) per PATH that
#         still exists: type size mtime mode uid path target, mtime in whole
#         seconds (stat's %Y). Exits 1 when there is no stat (the list is partial).
# stat prints one line per PATH when all exist; otherwise each is asked alone and
# a vanished one gives a line of zeros (skipped), so lines and PATHs pair up.
command -v stat >/dev/null 2>&1 || exit 1
o=$(stat -c "%f %s %Y %a %u" -- "$@" 2>/dev/null) ||
o=$(for p; do stat -c "%f %s %Y %a %u" -- "$p" 2>/dev/null || echo 0 0 0 0 0; done)
printf "%s\n" "$o" | while IFS=" " read -r m s t a u; do
  [ "$#" -gt 0 ] || break
  p=$1; shift; l=""
  case $((0x$m >> 12)) in
    8) y=f ;; 4) y=d ;; 2) y=c ;; 6) y=b ;; 1) y=p ;; 12) y=s ;;
    10) y=l; l=$(readlink -- "$p" && echo .) && l=${l%?.} ;;
    *) continue ;;
  esac
  printf "f\0%s\0%s\0%s\0%s\0%s\0%s\0%s\0" "$y" "$s" "$t" "$a" "$u" "$p" "$l"
done
