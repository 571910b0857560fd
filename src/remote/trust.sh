# hostsync: the ancestor rule (issue 13), shared by the listing (list.sh) and
# check's probe (probe.sh) on hosts served over their shell (src/remote/mod.rs).
# Defines functions only; prints nothing by itself.
# Reads:  $SM, set by the caller: 1 to apply the rule ([ssh] strict_modes), 0 not.
# Sets:   ME, the login user's uid; GF, 1 when find has GNU -printf (the fast
#         path), else 0 (BusyBox and other POSIX finds: stat -c is used).
# Q PATH  prints `UID MODE` (octal) of PATH itself, no symlink followed.
# T UID MODE  succeeds when a directory with that owner and mode can be written by
#         nobody but root and the login user.
# G PATH  walks PATH from / and fails, with the reason in $g, at a symlink in a
#         directory others can write (a sticky one counts when the link is root's
#         or the login user's), unless $SM is not 1.
# shellcheck disable=SC2034 # g, the reason G failed, is read by list.sh and probe.sh
g=""
ME=$(id -u)
if find / -maxdepth 0 -printf '' 2>/dev/null; then GF=1; else GF=0; fi
Q() {
  if [ "$GF" = 1 ]; then
    find "$1" -maxdepth 0 -printf '%U %m' 2>/dev/null
  else
    stat -c '%u %a' -- "$1" 2>/dev/null
  fi
}
T() {
  [ "$1" = 0 ] || [ "$1" = "$ME" ] || return 1
  [ $((0$2 & 022)) = 0 ]
}
G() {
  [ "$SM" = 1 ] || return 0
  gp=$1; gh=0
  while :; do
    gr=${gp#/}; ga=""; gf=0
    while [ -n "$gr" ]; do
      gc=${gr%%/*}
      case $gr in */*) gr=${gr#*/} ;; *) gr="" ;; esac
      [ -n "$gc" ] || continue
      if [ -L "$ga/$gc" ]; then
        go=$(Q "${ga:-/}")
        gl=$(Q "$ga/$gc")
        gl=${gl% *}
        if ! T "${go% *}" "${go#* }"; then
          if [ $((0${go#* } & 01000)) = 0 ] || { [ "$gl" != 0 ] && [ "$gl" != "$ME" ]; }; then
            g="$ga/$gc is a symlink and its directory ${ga:-/} can be written by others than root and the login user (owner uid ${go% *}, mode ${go#* }), so it is not followed; make that directory writable only by root and the login user, or set [ssh] strict_modes = no"
            return 1
          fi
        fi
        gt=$(readlink -- "$ga/$gc")
        case $gt in /*) gp="$gt/$gr" ;; *) gp="$ga/$gt/$gr" ;; esac
        gh=$((gh + 1))
        [ "$gh" -le 40 ] || { g="too many symlinks on the way to $1"; return 1; }
        gf=1
        break
      fi
      [ -e "$ga/$gc" ] || return 0
      ga="$ga/$gc"
    done
    [ "$gf" = 1 ] || return 0
  done
}
