# hostsync: the remote side of a tar stream (src/transport/tar.rs): extracts
# stdin into directory $1 with GNU tar or bsdtar (the listing's `t` answer says the
# remote has one; BusyBox tar is not used: such hosts get the SCP sink), then
# prints its status. Also the tail of a listing that hands its channel on.
# Reads:  $1, the directory; stdin, a tar stream to its end.
# Prints: `tar-exit:N` and a newline, N being tar's exit status. tar's stderr
#         goes to stderr, capped at 4 KiB (the rest is read and dropped, so a
#         tar with many warnings neither blocks nor dies of SIGPIPE).
exec 4>&1
s=$( { { tar -x -p --no-same-owner -f - -C "$1" 2>&1 >&4 4>&- 5>&-; echo "$?" >&5; } | { head -c 4096 >&2; cat >/dev/null; }; } 5>&1 )
exec 4>&-
echo "tar-exit:$s"
