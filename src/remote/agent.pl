# hostsync's remote agent: every remote step of a batch, relative to checked
# directories (issue 13). Runs as `perl -e BOOT CLIENT RUN STRICT` under the
# login user, BOOT reading this program (comment lines dropped) from stdin first
# (src/transport/agent.rs, bootstrap), with only core modules that Debian's
# perl-base has (strict, Fcntl);
# Time::HiRes and Digest::SHA are used when present (Digest::SHA is loaded only
# when something is hashed: an agent that hashes nothing starts ~2 ms sooner).
#
# Reads:  frames on stdin, each TAG (1 byte), LEN (4 bytes, big-endian), then LEN
#         bytes of NUL-separated fields. Requests, with their fields:
#           R root-id path create      resolve a destination root (mkdir -p if create)
#           L root-id depth hash [rel...]
#                                      list below a root (all, or only these paths,
#                                      whose files are hashed); hash 1: hash every
#                                      file, also below the listed directories
#           D root-id rel mode         make a directory, or set an existing one's mode
#           P root-id rel mode mtime-s mtime-ns size backups
#                                      a file; its bytes follow as `d` frames (raw
#                                      bytes), ended by a `z` frame: "1" keep, "0" drop
#           A root-id rel mode mtime-s mtime-ns size sha256
#                                      a small file sent with its listing, before the
#                                      client compared (issue 16): as P (no backups),
#                                      placed only where nothing is there or a
#                                      regular file that differs in content or mode;
#                                      answered K `placed`, or K `deferred` and why
#           S root-id rel target backups   make a symlink
#           G root-id rel block max    the checksums of a file's blocks, at most max
#                                      of them (issue 19)
#           Y root-id rel mode mtime-s mtime-ns size backups block sha256
#                                      a file rebuilt from its old copy: `c` frames
#                                      (first count: old blocks to copy) and `d`
#                                      frames (new bytes), ended by `z`; kept only
#                                      when the result has that SHA-256
#           W                          lanes: fork a helper; from now on a P or S
#                                      whose extra last field is "1" is its work
#           J                          end of lanes: wait for the helper
#           X root-id rel              remove a file or tree
#           T root-id rel              remove a stale temporary if its run is dead
#           B run                      end this batch and begin the next in this
#                                      process: the lanes end, the run's locks are
#                                      released as for Q, every root is forgotten
#                                      (the next batch resolves and checks its roots
#                                      again), and from now on temporaries and locks
#                                      are named after run `run` (16 hex digits)
#           Q                          end: release the run's locks and exit 0
# Prints: frames on stdout, the same layout. First `H version uid hires hash`.
#         No tag means two things, in either direction (src/transport/agent.rs
#         names them all).
#         Then, per request, in order: for L, `e` entries (type size mtime-s
#         mtime-ns mode uid rel target), `h` hashes (rel sha256) and `x` notes
#         (a part that could not be listed); for G, `s` frames of raw checksums,
#         12 bytes per block (weak: 4, big-endian; strong: the first 8 bytes of
#         its SHA-256); then exactly one `K` (done, with
#         fields) or `F` (failed: reason) that ends the request. Nothing is
#         reported done that was not done.
#
# Safety: a root is resolved from / one component at a time. A component that is
# a symlink is followed only where the directory holding it can be written by no
# one but root and the login user (a sticky one counts when the link is theirs),
# unless STRICT is 0. Below a root no symlink is ever followed: every directory is
# entered by lstat, chdir and a check that "." is the inode lstat saw, and every
# step acts on one name inside the directory it is in (rename, unlink, link,
# symlink, mkdir, O_EXCL|O_NOFOLLOW create, fchmod and futimes on an open file).
# Temporaries are `.hostsync-tmp.CLIENT.RUN.N`, made with O_EXCL, and each root
# written to holds `.hostsync-tmp.CLIENT.RUN.lock` with flock while the run lives,
# so a stale temporary is removed only when its run's lock is free.
use strict;
use Fcntl qw(O_RDONLY O_WRONLY O_CREAT O_EXCL O_NOFOLLOW O_DIRECTORY O_NONBLOCK :flock);

my ($CID, $RUN, $STRICT) = @ARGV;
# Lanes (W ... J): a helper process, forked from this one, makes the files of lane
# 1 while this one makes lane 0's, so creating files (CPU work in the kernel)
# uses two cores. Answers still go out in request order: @ORDER holds one entry
# per request since W, its answer once known (the helper's in the order it
# answers).
my ($HELPER, $TO_HELPER, $FROM_HELPER, $IN_HELPER, @ORDER) = (0);
my $hbuf = "";
# Temporaries of this run are numbered from here (the helper's from 1e9).
my $SEQ = 0;
$STRICT = 1 unless defined $STRICT && $STRICT eq "0";
my $UID = $<;
my $PFX = ".hostsync-tmp.";
my $HIRES = eval { require Time::HiRes; 1 } ? 1 : 0;
# How files are hashed: "digest" (Digest::SHA, found by its file and loaded on
# first use, see sha_ready), "sha256sum" (a process per file) or "none".
my $SHA = (grep { !ref && -f "$_/Digest/SHA.pm" } @INC) ? "digest" : (have("sha256sum") ? "sha256sum" : "none");
my $SHA_LOADED = 0;
$SIG{PIPE} = "IGNORE";
binmode STDIN; binmode STDOUT;

sub have { my ($c) = @_;
  for my $d (split /:/, $ENV{PATH} // "") { return 1 if $d ne "" && -x "$d/$c" && !-d "$d/$c" }
  return 0;
}
# Whether Digest::SHA can be used, loading it the first time; where it is there
# but does not load, hashing goes on as if it were missing.
sub sha_ready {
  return 1 if $SHA_LOADED;
  return 0 if $SHA ne "digest";
  return $SHA_LOADED = 1 if eval { require Digest::SHA; 1 };
  $SHA = have("sha256sum") ? "sha256sum" : "none";
  return 0;
}

# ---- framing ----
my $in = ""; my $pos = 0; my $out = "";
sub flush_out {
  while (length $out) {
    my $w = syswrite(STDOUT, $out);
    if (!defined $w) { next if $!{EINTR}; exit 3 }
    substr($out, 0, $w) = "";
  }
}
sub ready { my $r = ""; vec($r, 0, 1) = 1; return select($r, undef, undef, 0) > 0 }
sub fill { my ($n) = @_;
  while (length($in) - $pos < $n) {
    if ($pos > 0) { substr($in, 0, $pos) = ""; $pos = 0 }
    from_helper(0) if $HELPER;
    flush_out() if length($out) && !ready();
    my $r = sysread(STDIN, $in, 1 << 18, length $in);
    if (!defined $r) { next if $!{EINTR}; return 0 }
    return 0 if $r == 0;
  }
  return 1;
}
# The temporary being written (in the current directory), for `bail`.
my $OPEN_TMP;
# Ends the agent on broken input: what it was writing goes, its locks are released.
sub bail { my ($why) = @_;
  print STDERR "agent: $why\n";
  unlink $OPEN_TMP if defined $OPEN_TMP;
  quit() unless $IN_HELPER;
  flush_out();
  exit 2;
}
sub frame {
  return () unless fill(5);
  my ($t, $n) = unpack("aN", substr($in, $pos, 5));
  bail("a frame of $n bytes") if $n > (1 << 20) + 64;
  bail("the input ended inside a frame") unless fill(5 + $n);
  my $p = substr($in, $pos + 5, $n); $pos += 5 + $n;
  return ($t, $p);
}
sub send_frame { my ($t, @f) = @_;
  my $p = join("\0", @f);
  my $frame = pack("aN", $t, length $p) . $p;
  if ($HELPER) { push @ORDER, [$frame]; emit() } else { $out .= $frame }
  flush_out() if length($out) > 32768;
}
sub ok { send_frame("K", @_) }
sub fail { send_frame("F", @_) }

# ---- trust ----
sub who { my ($uid) = @_; my $n = getpwuid($uid); return defined $n ? "$n (uid $uid)" : "uid $uid" }
sub ours { my ($uid) = @_; return $uid == 0 || $uid == $UID }
# Why others can write the directory of these stat fields, or "".
sub open_to_others { my ($where, @st) = @_;
  return "" unless @st;
  my ($mode, $uid) = ($st[2] & 07777, $st[4]);
  return sprintf("%s is owned by %s", $where, who($uid)) unless ours($uid);
  return sprintf("%s is writable by its group or others (mode %04o)", $where, $mode) if $mode & 022;
  return "";
}

# ---- the current directory ----
my ($CUR, $CURREL);   # the root and the directory below it the process is in
# Enters `name` (one component, in the current directory) without following a
# symlink there: lstat, chdir, then "." must be the inode lstat saw. When that
# check fails the process is where a swapped-in link led: the caller must return
# to a directory it holds open, and `walk` starts again from the root.
my $MISSING = "a parent directory is missing on the remote";
sub enter { my ($name) = @_;
  my @l = lstat($name);
  return $MISSING unless @l;
  return "a parent is a symlink or not a directory on the remote" if -l _ || !-d _;
  chdir($name) or return "cannot enter $name: $!";
  my @s = stat(".");
  if (!@s || $s[0] != $l[0] || $s[1] != $l[1]) { undef $CUR; return "a parent was swapped while it was entered" }
  return "";
}

my %ROOT;             # id -> { fh, dev, ino, path, lock }

# Moves into directory `rel` below root `id` (every component entered as above).
sub walk { my ($id, $rel) = @_;
  my $r = $ROOT{$id} or return "unknown root $id";
  return "" if defined $CUR && $CUR eq $id && $CURREL eq $rel;
  undef $CUR;
  chdir($r->{fh}) or return "cannot return to the destination: $!";
  my @s = stat(".");
  return "the destination changed while it was used" unless @s && $s[0] == $r->{dev} && $s[1] == $r->{ino};
  for my $c (split m{/}, $rel) {
    next if $c eq "";
    return "bad path" if $c eq "." || $c eq "..";
    my $e = enter($c);
    return $e if $e ne "";
  }
  ($CUR, $CURREL) = ($id, $rel);
  return "";
}
sub split_rel { my ($rel) = @_;
  my $i = rindex($rel, "/");
  return $i < 0 ? ("", $rel) : (substr($rel, 0, $i), substr($rel, $i + 1));
}

# Resolves absolute `path` from /, creating what is missing when `create`, and
# following a symlink only where the ancestor rule allows (see the header).
sub resolve { my ($path, $create) = @_;
  undef $CUR;
  chdir("/") or return ("cannot enter /: $!");
  my @todo = grep { $_ ne "" } split m{/}, $path;
  my $hops = 0; my $at = "";
  while (@todo) {
    my $c = shift @todo;
    next if $c eq ".";
    if ($c eq "..") { chdir("..") or return ("cannot enter ..: $!"); $at =~ s{/[^/]*$}{}; next }
    my @l = lstat($c);
    if (!@l) {
      return ("missing") unless $create;
      if (!mkdir($c, 0755) && !$!{EEXIST}) { return ("cannot create $at/$c: $!") }
      @l = lstat($c) or return ("cannot create $at/$c: $!");
    }
    if (-l _) {
      return ("too many symlinks in $path") if ++$hops > 40;
      if ($STRICT) {
        my @d = stat(".");
        my $why = open_to_others("its directory " . ($at eq "" ? "/" : $at), @d);
        $why = "" if $why ne "" && ($d[2] & 01000) && ours($l[4]);
        return ("$at/$c is a symlink and $why, so it is not followed; make that directory writable only by root and the login user, or set [ssh] strict_modes = no") if $why ne "";
      }
      my $t = readlink($c);
      return ("cannot read the symlink $at/$c: $!") unless defined $t;
      if ($t =~ m{^/}) { chdir("/") or return ("cannot enter /: $!"); $at = "" }
      unshift @todo, grep { $_ ne "" } split m{/}, $t;
      next;
    }
    return ("$at/$c exists and is not a directory") unless -d _;
    my $e = enter($c);
    return ("$at/$c: $e") if $e ne "";
    $at .= "/$c";
  }
  my @s = stat(".");
  sysopen(my $fh, ".", O_RDONLY | O_DIRECTORY) or return ("cannot read $path: $!");
  my @p = stat("..");
  my $open = join("; ", grep { $_ ne "" } open_to_others("the destination", @s),
    (@p && !($p[2] & 01000)) ? open_to_others("its parent", @p) : "");
  return ("", $fh, $s[0], $s[1], $open);
}

# ---- lanes ----
# Appends every answer that is known, in request order, to the output.
sub emit { while (@ORDER && defined $ORDER[0][0]) { $out .= shift(@ORDER)->[0] } }
# Takes in the helper's answers (waiting for at least one when `block`); at its
# end, every answer it still owes is a failure.
sub from_helper { my ($block) = @_;
  while (1) {
    my $r = ""; vec($r, fileno($FROM_HELPER), 1) = 1;
    last if !$block && select($r, undef, undef, 0) <= 0;
    my $n = sysread($FROM_HELPER, $hbuf, 1 << 16, length $hbuf);
    next if !defined $n && $!{EINTR};
    if (!$n) {
      my $m = "the agent's helper stopped before it answered";
      for my $e (@ORDER) { $e->[0] //= pack("aN", "F", length $m) . $m }
      emit();
      return 0;
    }
    while (length($hbuf) >= 5) {
      my $len = unpack("N", substr($hbuf, 1, 4));
      last if length($hbuf) < 5 + $len;
      my $frame = substr($hbuf, 0, 5 + $len, "");
      for my $e (@ORDER) { if (!defined $e->[0] && $e->[1]) { $e->[0] = $frame; last } }
    }
    emit();
    last unless $block;
    $block = 0;
  }
  return 1;
}
# Hands one frame to the helper.
sub to_helper { my ($frame) = @_;
  my $o = 0;
  while ($o < length $frame) {
    from_helper(0);
    my $w = syswrite($TO_HELPER, $frame, length($frame) - $o, $o);
    if (!defined $w) { next if $!{EINTR}; return 0 }
    $o += $w;
  }
  return 1;
}
# Passes a request of lane 1, with a file's data frames, on to the helper.
sub forward { my ($t, $p) = @_;
  push @ORDER, [undef, 1];
  my $fine = to_helper(pack("aN", $t, length $p) . $p);
  while ($t eq "P") {
    my ($dt, $dp) = frame();
    bail(defined $dt ? "an unexpected frame $dt inside a file" : "the input ended inside a file")
      if !defined $dt || ($dt ne "d" && $dt ne "z");
    $fine &&= to_helper(pack("aN", $dt, length $dp) . $dp);
    last if $dt eq "z";
  }
}
# W: starts the helper; every root's lock is taken first, so the helper never
# makes one of its own.
sub req_lanes {
  for my $id (sort keys %ROOT) { my $e = lock_root($id); if ($e ne "") { fail($e); return } }
  pipe(my $kr, my $pw) or do { fail("cannot start a helper: $!"); return };
  pipe(my $pr, my $kw) or do { fail("cannot start a helper: $!"); return };
  if ($^O eq "linux") { fcntl($pw, 1031, 1 << 20); fcntl($kw, 1031, 1 << 20) }
  my $pid = fork();
  if (!defined $pid) { fail("cannot start a helper: $!"); return }
  if ($pid == 0) {
    close $pw; close $pr;
    open(STDIN, "<&", $kr) or exit 2;
    open(STDOUT, ">&", $kw) or exit 2;
    close $kr; close $kw;
    binmode STDIN; binmode STDOUT;
    ($in, $pos, $out, $IN_HELPER, $SEQ) = ("", 0, "", 1, 1000000000);
    undef $CUR;
    while (1) {
      my ($t, $p) = frame();
      last unless defined $t;
      if ($t eq "P") { req_put(split /\0/, $p, -1) }
      elsif ($t eq "S") { req_link(split /\0/, $p, -1) }
      else { bail("a request $t in a lane") }
    }
    flush_out();
    exit 0;
  }
  close $kr; close $kw;
  ($HELPER, $TO_HELPER, $FROM_HELPER) = ($pid, $pw, $pr);
  ok();
}
# Lets the helper finish its lane, collects its answers, waits for it.
sub join_helper {
  return unless $HELPER;
  close $TO_HELPER;
  1 while from_helper(1);
  waitpid($HELPER, 0);
  close $FROM_HELPER;
  $HELPER = 0;
  emit();
}
# J: the end of the lanes.
sub req_join { join_helper(); ok() }

# ---- requests ----
sub req_root { my ($id, $path, $create) = @_;
  my ($err, $fh, $dev, $ino, $open) = resolve($path, $create eq "1");
  if ($err eq "missing") { ok("missing"); return }
  if ($err ne "") { fail($err); return }
  $ROOT{$id} = { fh => $fh, dev => $dev, ino => $ino, path => $path };
  ok("dir", $dev, $ino, $open);
}

sub mtime_ns { my ($name) = @_;
  return 0 unless $HIRES;
  my @s = Time::HiRes::lstat($name);
  return 0 unless @s;
  my $f = $s[9] - int($s[9]);
  $f += 1 if $f < 0;
  return int($f * 1e9 + 0.5) % 1000000000;
}
sub entry { my ($rel, $name, @l) = @_;
  my $type = -l _ ? "l" : -d _ ? "d" : -f _ ? "f" : "o";
  my $target = $type eq "l" ? (readlink($name) // "") : "";
  send_frame("e", $type, $l[7], $l[9], mtime_ns($name), sprintf("%o", $l[2] & 07777), $l[4], $rel, $target);
  return $type;
}
sub hash_here { my ($name) = @_;
  sha_ready();
  return undef if $SHA eq "none";
  sysopen(my $fh, $name, O_RDONLY | O_NOFOLLOW) or return undef;
  if ($SHA eq "digest") { my $d = Digest::SHA->new(256); $d->addfile($fh); return $d->hexdigest }
  my $pid = open(my $kid, "-|");
  return undef unless defined $pid;
  if ($pid == 0) { open(STDIN, "<&", $fh) or exit 1; exec("sha256sum") or exit 127 }
  my $line = <$kid>; close $kid;
  return ($? == 0 && defined $line && $line =~ /^([0-9a-f]{64})/) ? $1 : undef;
}
# Lists the current directory (as `prefix`), `depth` more levels (-1: all), with a
# hash of each file when `hash`.
sub list_here { my ($prefix, $depth, $hash) = @_;
  opendir(my $dh, ".") or do { send_frame("x", "cannot list " . ($prefix eq "" ? "." : $prefix) . ": $!"); return };
  my $mine = $PFX . "$CID.$RUN.";
  my @names = sort grep { $_ ne "." && $_ ne ".." && index($_, $mine) != 0 } readdir($dh);
  closedir $dh;
  for my $n (@names) {
    my @l = lstat($n) or next;
    my $rel = $prefix eq "" ? $n : "$prefix/$n";
    my $type = entry($rel, $n, @l);
    if ($hash && $type eq "f") { my $h = hash_here($n); send_frame("h", $rel, $h) if defined $h }
    next unless $type eq "d" && $depth != 0;
    sysopen(my $back, ".", O_RDONLY | O_DIRECTORY) or do { send_frame("x", "cannot list $rel: $!"); next };
    my $e = enter($n);
    if ($e ne "") { send_frame("x", "cannot list $rel: $e") } else { list_here($rel, $depth - 1, $hash) }
    chdir($back) or do { undef $CUR; die "agent: lost the directory above $rel: $!\n" };
  }
}
sub req_list { my ($id, $depth, $hash, @paths) = @_;
  my $e = walk($id, "");
  if ($e ne "") { fail($e); return }
  undef $CUR;
  $depth = $depth eq "" ? -1 : $depth - 1;
  if (!@paths) { list_here("", $depth, $hash eq "1"); ok(); return }
  my $root = $ROOT{$id}{fh};
  # Each path with its parents (alone), so a parent that is not a directory is seen.
  for my $p (@paths) {
    chdir($root) or do { fail("cannot return to the destination: $!"); return };
    my @c = grep { $_ ne "" } split m{/}, $p;
    my $rel = ""; my $fine = 1;
    while (@c > 1) {
      my $n = shift @c;
      $rel = $rel eq "" ? $n : "$rel/$n";
      my @l = lstat($n) or do { $fine = 0; last };
      my $type = entry($rel, $n, @l);
      if ($type ne "d" || enter($n) ne "") { $fine = 0; last }
    }
    next unless $fine && @c;
    my $n = $c[0];
    $rel = $rel eq "" ? $n : "$rel/$n";
    my @l = lstat($n) or next;
    my $type = entry($rel, $n, @l);
    if ($type eq "f") { my $h = hash_here($n); send_frame("h", $rel, $h) if defined $h }
    elsif ($type eq "d" && enter($n) eq "") { list_here($rel, -1, $hash eq "1") }
  }
  ok();
}

sub tmp_name { return $PFX . "$CID.$RUN." . $SEQ++ }
# Holds this run's lock in root `id` (made on the first write there). Open for
# reading only: flock needs no more, and a file open for writing would keep the
# file system from being remounted read-only while the run lives.
sub lock_root { my ($id) = @_;
  my $r = $ROOT{$id};
  return "" if $r->{lock};
  my $e = walk($id, ""); return $e if $e ne "";
  my $name = $PFX . "$CID.$RUN.lock";
  sysopen(my $l, $name, O_RDONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600) or return "cannot create the run's lock: $!";
  flock($l, LOCK_EX | LOCK_NB) or return "cannot lock the run's lock: $!";
  $r->{lock} = $l;
  return "";
}
# Keeps up to `n` previous versions of regular file `d` (in the current directory).
sub backup { my ($d, $n) = @_;
  return "" unless $n > 0;
  my @l = lstat($d);
  return "" unless @l && -f _;
  for (my $k = $n - 1; $k >= 1; $k--) {
    my ($from, $to) = ("$d.$k", "$d." . ($k + 1));
    next unless lstat($from);
    rename($from, $to) or return "cannot rotate $from to $to: $!";
  }
  if (lstat("$d.1")) {
    return "cannot drop the oldest backup $d.1: it is a directory" if -d _;
    unlink("$d.1") or return "cannot drop the oldest backup $d.1: $!";
  }
  link($d, "$d.1") or return "cannot keep the previous version as $d.1: $!";
  return "";
}
# Puts temporary `tmp` in place as `name` (both in the current directory).
sub place { my ($tmp, $name, $backups) = @_;
  if (lstat($name) && -d _) { unlink $tmp; return "remote path is a directory" }
  my $e = backup($name, $backups);
  if ($e ne "") { unlink $tmp; return "not replaced: $e" }
  rename($tmp, $name) or do { my $why = "$!"; unlink $tmp; return "rename into place failed: $why" };
  return "";
}
sub set_mode { my ($fh, $mode) = @_; chmod(oct($mode), $fh) or return "cannot set the mode: $!"; return "" }

sub req_dir { my ($id, $rel, $mode) = @_;
  my ($dir, $name) = split_rel($rel);
  my $e = walk($id, $dir);
  if ($e ne "") { fail("cannot create remote directory: $e"); return }
  if (!mkdir($name, 0700) && !$!{EEXIST}) { fail("cannot create remote directory: $!"); return }
  sysopen(my $fh, $name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW) or do {
    my $why = $!;
    my @l = lstat($name);
    if (@l && (-l _ || !-d _)) { fail("the remote path exists and is not a directory") } else { fail("cannot open the remote directory: $why") }
    return;
  };
  $e = set_mode($fh, $mode);
  if ($e ne "") { fail($e) } else { ok() }
}

sub set_times { my ($fh, $s, $ns) = @_;
  my $ok = $HIRES ? Time::HiRes::utime(time(), $s + $ns / 1e9, $fh) : utime(time(), $s, $fh);
  return $ok ? "" : "cannot set the mtime: $!";
}
# Takes in one file's data frames (`d`, then the `z` verdict) into a fresh
# temporary in directory `dir` below root `id`. Returns (error, handle,
# temporary, bytes written, verdict); on an error every frame is still read,
# and no temporary stays.
sub take_file { my ($id, $dir) = @_;
  my $e = lock_root($id);
  $e = walk($id, $dir) if $e eq "";
  my ($fh, $tmp);
  if ($e eq "") {
    $tmp = tmp_name();
    if (sysopen($fh, $tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600)) { $OPEN_TMP = $tmp }
    else { $e = "cannot create a temporary: $!"; undef $fh }
  }
  my ($got, $verdict) = (0, "");
  while (1) {
    my ($t, $p) = frame();
    bail(defined $t ? "an unexpected frame $t inside a file" : "the input ended inside a file")
      if !defined $t || ($t ne "d" && $t ne "z");
    if ($t eq "z") { $verdict = $p; last }
    next unless $fh;
    my ($o, $len) = (0, length $p);
    while ($o < $len) {
      my $w = syswrite($fh, $p, $len - $o, $o);
      if (!defined $w) { next if $!{EINTR}; $e = "cannot write: $!"; last }
      $o += $w;
    }
    $got += $o;
    if ($e ne "") { close $fh; unlink $tmp; undef $fh; undef $OPEN_TMP }
  }
  undef $OPEN_TMP;
  return ($e, $fh, $tmp, $got, $verdict);
}
# Gives temporary `tmp` (open as `fh`) its mode and mtime and closes it; on an
# error it is removed.
sub seal { my ($fh, $tmp, $mode, $ms, $mns) = @_;
  my $e = set_mode($fh, $mode);
  $e = set_times($fh, $ms, $mns) if $e eq "";
  $e = "cannot write: $!" if !close($fh) && $e eq "";
  unlink $tmp if $e ne "";
  return $e;
}
sub req_put { my ($id, $rel, $mode, $ms, $mns, $size, $backups) = @_;
  my ($dir, $name) = split_rel($rel);
  my ($e, $fh, $tmp, $got, $verdict) = take_file($id, $dir);
  if ($e ne "") { fail($e); return }
  if ($verdict ne "1") { close $fh; unlink $tmp; ok("dropped"); return }
  if ($got != $size) { close $fh; unlink $tmp; fail("the file arrived short ($got of $size bytes)"); return }
  $e = seal($fh, $tmp, $mode, $ms, $mns);
  if ($e ne "") { fail($e); return }
  $e = place($tmp, $name, $backups);
  if ($e ne "") { fail($e) } else { ok("placed") }
}

# Why a file sent ahead (A) is not placed at `name` (in the current directory),
# or "" when the client's comparison is sure to send it: nothing is there, or a
# regular file that differs from it in content (SHA-256 `sha`) or mode. "same"
# when the file there is it already (two daemons mapped at each other: no
# ping-pong). A copy of another size differs without being read.
sub ahead_blocked { my ($name, $mode, $sha, $size) = @_;
  my @l = lstat($name);
  return ($!{ENOENT} ? "" : "cannot look at it: $!") unless @l;
  return "not a regular file there" unless -f _;
  return "" if $l[7] != $size;
  my $h = hash_here($name);
  return "cannot hash the remote copy" unless defined $h;
  return "" if $h ne $sha || ($l[2] & 07777) != oct($mode);
  return "same";
}
# A: a small file sent with its listing, before the client compared (issue 16).
# It goes in place only where that comparison is sure to send it (see
# `ahead_blocked`), else it is dropped; either way the answer is K: `placed`, or
# `deferred` and why. A deferred file is the client's to send the usual way
# (or not), so every refusal still comes from a P and its one-line reason.
sub req_ahead { my ($id, $rel, $mode, $ms, $mns, $size, $sha) = @_;
  my ($dir, $name) = split_rel($rel);
  my ($e, $fh, $tmp, $got, $verdict) = take_file($id, $dir);
  if ($e ne "") { ok("deferred", $e); return }
  $e = $verdict ne "1" ? "changed while it was read" : $got != $size ? "short" : ahead_blocked($name, $mode, $sha // "", $size);
  if ($e ne "") { close $fh; unlink $tmp; ok("deferred", $e); return }
  $e = seal($fh, $tmp, $mode, $ms, $mns);
  $e = place($tmp, $name, 0) if $e eq "";
  if ($e ne "") { ok("deferred", $e) } else { ok("placed") }
}

sub req_link { my ($id, $rel, $target, $backups) = @_;
  my ($dir, $name) = split_rel($rel);
  my $e = lock_root($id);
  $e = walk($id, $dir) if $e eq "";
  if ($e ne "") { fail($e); return }
  my $tmp = tmp_name();
  symlink($target, $tmp) or do { fail("symlink failed: $!"); return };
  $e = place($tmp, $name, $backups);
  if ($e ne "") { fail($e) } else { ok("placed") }
}

# Removes `name` (in the current directory) and, for a directory, all below it,
# never following a symlink; returns to the current directory.
sub rmtree { my ($name) = @_;
  my @l = lstat($name);
  return "" unless @l;
  if (-l _ || !-d _) { return (unlink($name) || $!{ENOENT}) ? "" : "remove failed: $!" }
  sysopen(my $back, ".", O_RDONLY | O_DIRECTORY) or return "remove failed: $!";
  my $e = enter($name);
  # A refused enter may have followed a swapped-in link: come back before anything else.
  if ($e ne "") { chdir($back) or die "agent: lost a directory while removing: $!\n"; return "remove failed: $e" }
  my $first = "";
  if (opendir(my $dh, ".")) {
    my @names = grep { $_ ne "." && $_ ne ".." } readdir($dh);
    closedir $dh;
    for my $n (@names) { my $x = rmtree($n); $first = $x if $first eq "" }
  } else { $first = "remove failed: cannot list $name: $!" }
  chdir($back) or die "agent: lost a directory while removing: $!\n";
  return $first if $first ne "";
  return rmdir($name) ? "" : "remove failed: $!";
}
sub req_remove { my ($id, $rel) = @_;
  my ($dir, $name) = split_rel($rel);
  my $e = walk($id, $dir);
  if ($e eq $MISSING) { ok("gone"); return }
  if ($e ne "") { fail("not removed: $e"); return }
  $e = rmtree($name);
  if ($e ne "") { fail($e) } else { ok("removed") }
}

# Whether the run `r` of client `c` holds its lock in any directory from the root
# down to `dir` (a nested mapping's run keeps its lock in its own root).
sub run_live { my ($id, $dir, $c, $r) = @_;
  return 1 if $r eq $RUN;
  my $lock = $PFX . "$c.$r.lock";
  my $at = "";
  for my $part ("", grep { $_ ne "" } split m{/}, $dir) {
    $at = $at eq "" ? $part : "$at/$part";
    last if walk($id, $at) ne "";
    if (sysopen(my $l, $lock, O_RDONLY | O_NOFOLLOW)) {
      my $free = flock($l, LOCK_EX | LOCK_NB);
      close $l;
      return 1 unless $free;
    }
  }
  return 0;
}
sub req_stale { my ($id, $rel) = @_;
  my ($dir, $name) = split_rel($rel);
  if (index($name, $PFX) != 0) { ok("kept"); return }
  my $live;
  if ($name =~ /^\.hostsync-tmp\.([0-9a-f]{8})\.([0-9a-f]{16})\.[0-9a-z]+$/) {
    $live = run_live($id, $dir, $1, $2);
  } else {
    # Another client's or an older version's: only once it is a day old.
    my $e = walk($id, $dir);
    my @l = $e eq "" ? lstat($name) : ();
    $live = !(@l && $l[9] < time() - 86400);
  }
  if ($live) { ok("kept"); return }
  my $e = walk($id, $dir);
  if ($e ne "") { ok("kept"); return }
  my @l = lstat($name);
  if (!@l) { ok("gone"); return }
  if (-d _ && !-l _) { ok("kept"); return }
  if (unlink($name)) { ok("removed") } else { fail("cannot remove the stale temporary: $!") }
}

# ---- delta (issue 19) ----
# Opens regular file `name` (in the current directory) to read, never through a
# symlink and never blocking on a FIFO.
sub open_old { my ($name) = @_;
  sysopen(my $fh, $name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK) or return ("cannot read the remote copy: $!");
  return ("the remote copy is not a regular file") unless -f $fh;
  return ("", $fh);
}
# Reads up to `n` bytes from `fh` (fewer only at its end).
sub read_full { my ($fh, $n) = @_;
  my $buf = "";
  while (length($buf) < $n) {
    my $r = sysread($fh, $buf, $n - length($buf), length $buf);
    if (!defined $r) { next if $!{EINTR}; return undef }
    last if $r == 0;
  }
  return $buf;
}
# G: per block of the file, the weak checksum (the sum of its 32-bit words, see
# src/transport/delta.rs) and the start of its SHA-256, in `s` frames; K with the
# length read.
sub req_sums { my ($id, $rel, $block, $max) = @_;
  if (!sha_ready()) { fail("the remote has no Digest::SHA for checksums"); return }
  if (!defined $block || $block !~ /^[0-9]+$/ || $block < 4 || $block % 4) { fail("bad block size"); return }
  my ($dir, $name) = split_rel($rel);
  my $e = walk($id, $dir);
  if ($e ne "") { fail($e); return }
  my ($why, $fh) = open_old($name);
  if ($why ne "") { fail($why); return }
  my ($len, $sums, $n) = (0, "", 0);
  while (1) {
    my $b = read_full($fh, $block);
    if (defined $b && $b ne "" && ++$n > $max) { fail("the remote copy grew while it was read"); return }
    if (!defined $b) { fail("cannot read the remote copy: $!"); return }
    last if $b eq "";
    $len += length $b;
    $sums .= pack("N", unpack("%32N*", $b)) . substr(Digest::SHA::sha256($b), 0, 8);
    if (length($sums) >= 12 * 4096) { send_frame("s", $sums); $sums = "" }
    last if length($b) < $block;
  }
  send_frame("s", $sums) if length $sums;
  ok($len);
}
# Writes `data` to `fh` and adds it to digest `d`; "" or why not.
sub put_bytes { my ($fh, $d, $data) = @_;
  my ($o, $len) = (0, length $data);
  while ($o < $len) {
    my $w = syswrite($fh, $data, $len - $o, $o);
    if (!defined $w) { next if $!{EINTR}; return "cannot write: $!" }
    $o += $w;
  }
  $d->add($data);
  return "";
}
# Copies old blocks `first` .. `first + count - 1` (of `block` bytes) to `fh`.
sub copy_blocks { my ($old, $fh, $d, $block, $p) = @_;
  my ($first, $count) = split /\0/, $p, -1;
  return "a bad copy step" unless defined $count && "$first$count" =~ /^[0-9]+$/;
  sysseek($old, $first * $block, 0) or return "cannot read the remote copy: $!";
  my $left = $count * $block;
  while ($left > 0) {
    my $b = read_full($old, $left < (1 << 20) ? $left : 1 << 20);
    return "cannot read the remote copy: $!" unless defined $b;
    return "" if $b eq "";
    my $e = put_bytes($fh, $d, $b);
    return $e if $e ne "";
    $left -= length $b;
  }
  return "";
}
# Y: rebuilds a file into a fresh temporary from its old copy and the new bytes
# that come; renamed into place as P's are, and only when it has the SHA-256 the
# client computed of the local file. Cut off, the temporary goes (see `bail`).
sub req_delta { my ($id, $rel, $mode, $ms, $mns, $size, $backups, $block, $want) = @_;
  my ($dir, $name) = split_rel($rel);
  my $e = sha_ready() ? "" : "the remote has no Digest::SHA for checksums";
  $e = lock_root($id) if $e eq "";
  $e = walk($id, $dir) if $e eq "";
  my ($old, $fh, $tmp);
  ($e, $old) = open_old($name) if $e eq "";
  $e = "bad block size" if $e eq "" && (!defined $block || $block !~ /^[0-9]+$/ || $block < 4);
  if ($e eq "") {
    $tmp = tmp_name();
    if (sysopen($fh, $tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600)) { $OPEN_TMP = $tmp }
    else { $e = "cannot create a temporary: $!"; undef $fh }
  }
  my $d = $e eq "" ? Digest::SHA->new(256) : undef;
  my $verdict = "";
  while (1) {
    my ($t, $p) = frame();
    bail(defined $t ? "an unexpected frame $t inside a delta" : "the input ended inside a delta")
      if !defined $t || ($t ne "d" && $t ne "c" && $t ne "z");
    if ($t eq "z") { $verdict = $p; last }
    next unless $fh;
    $e = $t eq "c" ? copy_blocks($old, $fh, $d, $block, $p) : put_bytes($fh, $d, $p);
    if ($e ne "") { close $fh; unlink $tmp; undef $fh; undef $OPEN_TMP }
  }
  undef $OPEN_TMP;
  if ($e ne "") { fail($e); return }
  if ($verdict ne "1") { close $fh; unlink $tmp; ok("dropped"); return }
  my $got = (stat($fh))[7];
  $e = "the rebuilt file has $got of $size bytes" if $got != $size;
  $e = "the rebuilt file differs from the local one (checksum mismatch)" if $e eq "" && $d->hexdigest ne $want;
  $e = set_mode($fh, $mode) if $e eq "";
  $e = set_times($fh, $ms, $mns) if $e eq "";
  $e = "cannot write: $!" if !close($fh) && $e eq "";
  if ($e ne "") { unlink $tmp; fail($e); return }
  $e = place($tmp, $name, $backups);
  if ($e ne "") { fail($e) } else { ok("placed") }
}

# B: the end of one batch and the start of the next (a `watch` session keeps one
# agent for all its rounds, issue 16). Nothing of the old run stays: its
# temporaries are all placed or removed by now (each request ends with its
# file), its locks go as in Q, and its roots are closed.
sub req_next { my ($run) = @_;
  if (!defined $run || $run !~ /^[0-9a-f]{16}$/) { fail("bad run id"); return }
  join_helper();
  quit();
  %ROOT = ();
  undef $CUR;
  chdir("/");
  ($RUN, $SEQ) = ($run, 0);
  ok();
}

# Releases this run's locks (each lock file is removed while still held).
sub quit {
  for my $id (sort keys %ROOT) {
    my $r = $ROOT{$id};
    next unless $r->{lock};
    unlink($PFX . "$CID.$RUN.lock") if walk($id, "") eq "";
    close $r->{lock};
  }
}

send_frame("H", 1, $UID, $HIRES, $SHA);
flush_out();
my %REQ = (R => \&req_root, L => \&req_list, D => \&req_dir, P => \&req_put,
           S => \&req_link, X => \&req_remove, T => \&req_stale,
           G => \&req_sums, Y => \&req_delta,
           W => \&req_lanes, J => \&req_join, B => \&req_next, A => \&req_ahead);
while (1) {
  my ($t, $p) = frame();
  last unless defined $t;
  if ($t eq "Q") { join_helper(); quit(); ok(); flush_out(); exit 0 }
  my $f = $REQ{$t};
  bail("an unknown request $t") unless $f;
  my @f = split /\0/, $p, -1;
  # A file or link of lane 1 goes to the helper (its last field names the lane).
  if ($HELPER && ($t eq "P" && @f > 7 || $t eq "S" && @f > 4) && $f[-1] eq "1") { forward($t, $p); next }
  $f->(@f);
}
join_helper();
quit();
flush_out();
exit 0;
