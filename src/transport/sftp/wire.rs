//! The SFTP version 3 wire format (draft-ietf-secsh-filexfer-02, as OpenSSH's
//! `sftp-server` speaks it): request packets, reply parsing, file attributes.
//!
//! Every packet is `uint32 length, byte type, uint32 id, ...`; strings are
//! `uint32 length, bytes`, so names travel byte-exact (a newline or any other
//! byte included). Attributes carry size, owner, permissions and times in whole
//! seconds: version 3 has no fraction of a second. Everything here is pure: the
//! bytes a server sent are parsed with bounds checks, never trusted.

/// Packet types (draft-02 section 3) and the ones hostsync sends or reads.
pub(crate) mod kind {
    pub(crate) const INIT: u8 = 1;
    pub(crate) const VERSION: u8 = 2;
    pub(crate) const OPEN: u8 = 3;
    pub(crate) const CLOSE: u8 = 4;
    pub(crate) const READ: u8 = 5;
    pub(crate) const WRITE: u8 = 6;
    pub(crate) const LSTAT: u8 = 7;
    pub(crate) const FSETSTAT: u8 = 10;
    pub(crate) const SETSTAT: u8 = 9;
    pub(crate) const OPENDIR: u8 = 11;
    pub(crate) const READDIR: u8 = 12;
    pub(crate) const REMOVE: u8 = 13;
    pub(crate) const MKDIR: u8 = 14;
    pub(crate) const RMDIR: u8 = 15;
    pub(crate) const RENAME: u8 = 18;
    pub(crate) const READLINK: u8 = 19;
    pub(crate) const SYMLINK: u8 = 20;
    pub(crate) const STATUS: u8 = 101;
    pub(crate) const HANDLE: u8 = 102;
    pub(crate) const DATA: u8 = 103;
    pub(crate) const NAME: u8 = 104;
    pub(crate) const ATTRS: u8 = 105;
    pub(crate) const EXTENDED: u8 = 200;
}

/// `SSH_FXP_OPEN` flags.
pub(crate) mod open {
    pub(crate) const READ: u32 = 0x01;
    pub(crate) const WRITE: u32 = 0x02;
    pub(crate) const CREAT: u32 = 0x08;
    pub(crate) const EXCL: u32 = 0x20;
}

/// Status codes of `SSH_FXP_STATUS`.
pub(crate) mod status {
    pub(crate) const OK: u32 = 0;
    pub(crate) const EOF: u32 = 1;
    pub(crate) const NO_SUCH_FILE: u32 = 2;
    pub(crate) const PERMISSION_DENIED: u32 = 3;
    pub(crate) const FAILURE: u32 = 4;
    pub(crate) const OP_UNSUPPORTED: u32 = 8;
}

/// Attribute flags.
const ATTR_SIZE: u32 = 0x1;
const ATTR_UIDGID: u32 = 0x2;
const ATTR_PERMISSIONS: u32 = 0x4;
const ATTR_ACMODTIME: u32 = 0x8;
const ATTR_EXTENDED: u32 = 0x8000_0000;

/// The largest reply accepted, in bytes: OpenSSH's sftp-server sends at most
/// 256 KiB (`SFTP_MAX_MSG_LENGTH`); a bigger length is a broken or hostile peer.
pub(crate) const MAX_REPLY: usize = 1024 * 1024;

/// File attributes; a field the server did not send is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Attrs {
    /// Size in bytes.
    pub(crate) size: Option<u64>,
    /// Owner uid and gid.
    pub(crate) uid_gid: Option<(u32, u32)>,
    /// `st_mode`: file type and permission bits.
    pub(crate) mode: Option<u32>,
    /// Access and modification time, whole seconds.
    pub(crate) atime_mtime: Option<(u32, u32)>,
}

impl Attrs {
    /// The file type as `find -printf %y` names it: `f`, `d`, `l`, `p`, `s`, `c`,
    /// `b`, or `U` when unknown (no mode sent).
    pub(crate) fn kind(&self) -> u8 {
        match self.mode.map(|m| m & 0o170_000) {
            Some(0o100_000) => b'f',
            Some(0o040_000) => b'd',
            Some(0o120_000) => b'l',
            Some(0o010_000) => b'p',
            Some(0o140_000) => b's',
            Some(0o020_000) => b'c',
            Some(0o060_000) => b'b',
            _ => b'U',
        }
    }

    /// The owner uid, if sent.
    pub(crate) fn uid(&self) -> Option<u32> {
        self.uid_gid.map(|(u, _)| u)
    }

    /// Encodes the attributes that are set.
    fn put(&self, out: &mut Vec<u8>) {
        let mut flags = 0;
        flags |= if self.size.is_some() { ATTR_SIZE } else { 0 };
        flags |= if self.uid_gid.is_some() {
            ATTR_UIDGID
        } else {
            0
        };
        flags |= if self.mode.is_some() {
            ATTR_PERMISSIONS
        } else {
            0
        };
        flags |= if self.atime_mtime.is_some() {
            ATTR_ACMODTIME
        } else {
            0
        };
        put_u32(out, flags);
        if let Some(size) = self.size {
            out.extend_from_slice(&size.to_be_bytes());
        }
        if let Some((uid, gid)) = self.uid_gid {
            put_u32(out, uid);
            put_u32(out, gid);
        }
        if let Some(mode) = self.mode {
            put_u32(out, mode);
        }
        if let Some((atime, mtime)) = self.atime_mtime {
            put_u32(out, atime);
            put_u32(out, mtime);
        }
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// One request being built: `Request::new(kind, id).str(path).finish()`.
pub(crate) struct Request(Vec<u8>);

impl Request {
    /// Starts a request of `kind` with `id` (INIT takes the version in its place).
    pub(crate) fn new(kind: u8, id: u32) -> Request {
        let mut out = vec![0, 0, 0, 0, kind];
        put_u32(&mut out, id);
        Request(out)
    }

    /// Appends a string (any bytes).
    pub(crate) fn str(mut self, s: &[u8]) -> Request {
        put_u32(&mut self.0, u32::try_from(s.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(s);
        self
    }

    /// Appends a uint32.
    pub(crate) fn u32(mut self, v: u32) -> Request {
        put_u32(&mut self.0, v);
        self
    }

    /// Appends a uint64.
    pub(crate) fn u64(mut self, v: u64) -> Request {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends attributes.
    pub(crate) fn attrs(mut self, a: &Attrs) -> Request {
        a.put(&mut self.0);
        self
    }

    /// The packet with its length filled in.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.0.len() - 4).unwrap_or(u32::MAX);
        self.0[..4].copy_from_slice(&len.to_be_bytes());
        self.0
    }
}

/// Reads the fields of one reply; every read is bounds-checked.
pub(crate) struct Fields<'a> {
    /// What is left to read.
    rest: &'a [u8],
}

/// A reply that ended before a field it must have: a broken or hostile server.
pub(crate) const TRUNCATED: &str = "the SFTP server sent a truncated reply";

impl<'a> Fields<'a> {
    /// Fields of `body` (the packet after its type byte).
    pub(crate) fn new(body: &'a [u8]) -> Fields<'a> {
        Fields { rest: body }
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.rest.len() < n {
            return Err(TRUNCATED);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// A uint32.
    pub(crate) fn u32(&mut self) -> Result<u32, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A uint64.
    pub(crate) fn u64(&mut self) -> Result<u64, &'static str> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A string.
    pub(crate) fn str(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// Attributes (extended pairs are read and dropped).
    pub(crate) fn attrs(&mut self) -> Result<Attrs, &'static str> {
        let flags = self.u32()?;
        let mut a = Attrs::default();
        if flags & ATTR_SIZE != 0 {
            a.size = Some(self.u64()?);
        }
        if flags & ATTR_UIDGID != 0 {
            a.uid_gid = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_PERMISSIONS != 0 {
            a.mode = Some(self.u32()?);
        }
        if flags & ATTR_ACMODTIME != 0 {
            a.atime_mtime = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_EXTENDED != 0 {
            for _ in 0..self.u32()? {
                self.str()?;
                self.str()?;
            }
        }
        Ok(a)
    }

    /// Whether everything was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// The extensions a server announces: (name, data) pairs.
pub(crate) type Extensions = Vec<(Vec<u8>, Vec<u8>)>;

/// The `SSH_FXP_VERSION` reply: protocol version and extensions.
pub(crate) fn parse_version(body: &[u8]) -> Result<(u32, Extensions), &'static str> {
    let mut f = Fields::new(body);
    let version = f.u32()?;
    let mut exts = Vec::new();
    while !f.is_empty() {
        exts.push((f.str()?.to_vec(), f.str()?.to_vec()));
    }
    Ok((version, exts))
}

/// One entry of an `SSH_FXP_NAME` reply (the `longname` is dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name {
    /// The file name (a bare name for READDIR, a path for REALPATH/READLINK).
    pub(crate) name: Vec<u8>,
    /// Its attributes.
    pub(crate) attrs: Attrs,
}

/// The entries of an `SSH_FXP_NAME` reply body (after the id); at most
/// `body.len() / 13` of them, so a hostile count cannot reserve memory.
pub(crate) fn parse_names(f: &mut Fields<'_>) -> Result<Vec<Name>, &'static str> {
    let count = f.u32()? as usize;
    let mut out = Vec::with_capacity(count.min(f.rest.len() / 13));
    for _ in 0..count {
        let name = f.str()?.to_vec();
        f.str()?;
        out.push(Name {
            name,
            attrs: f.attrs()?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_attrs_round_trip() {
        let a = Attrs {
            size: Some(5),
            uid_gid: Some((1000, 1001)),
            mode: Some(0o100_644),
            atime_mtime: Some((7, 1_600_000_000)),
        };
        let p = Request::new(kind::OPEN, 9)
            .str(b"a\nb")
            .u32(open::WRITE)
            .attrs(&a)
            .finish();
        assert_eq!(
            u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize,
            p.len() - 4
        );
        assert_eq!(p[4], kind::OPEN);
        let mut f = Fields::new(&p[5..]);
        assert_eq!(f.u32(), Ok(9));
        assert_eq!(f.str(), Ok(&b"a\nb"[..]));
        assert_eq!(f.u32(), Ok(open::WRITE));
        let back = f.attrs().unwrap();
        assert_eq!(back, a);
        assert_eq!((back.kind(), back.uid()), (b'f', Some(1000)));
        assert!(f.is_empty());
        let none = Attrs::default();
        assert_eq!(none.kind(), b'U');
    }

    #[test]
    fn truncated_and_hostile_replies_are_errors() {
        // A string longer than the packet.
        let mut f = Fields::new(&[0, 0, 0, 9, b'x']);
        assert_eq!(f.str(), Err(TRUNCATED));
        // A name count of 4 billion in a short packet: no huge allocation, an error.
        let mut f = Fields::new(&[0xff, 0xff, 0xff, 0xff, 0, 0]);
        assert_eq!(parse_names(&mut f), Err(TRUNCATED));
        let v = [0, 0, 0, 3, 0, 0, 0, 1, b'e', 0, 0, 0, 1, b'1'];
        assert_eq!(
            parse_version(&v),
            Ok((3, vec![(b"e".to_vec(), b"1".to_vec())]))
        );
        assert_eq!(parse_version(&v[..10]), Err(TRUNCATED));
    }
}
