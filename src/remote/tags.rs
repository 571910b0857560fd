//! The record tags of every remote program, named once (issue 16): the agent's
//! framed records (`agent.pl`), and the NUL-separated records of the sh programs
//! (`list.sh`, `commit.sh`, `probe.sh`). The programs' headers point here, and
//! the Rust parsers match on these names. No byte means two things: a byte
//! appears in two grammars only where it means the same there (`K` done and `F`
//! failed, in the agent's replies and the commit's records).

/// The agent's framed records, in both directions (`agent.pl`).
pub(crate) mod agent {
    /// Request: resolve a destination root (`id path create`).
    pub(crate) const ROOT: u8 = b'R';
    /// Request: list below a root (`id depth hash [rel...]`; `hash` `1`: every file
    /// is hashed, also below the listed directories).
    pub(crate) const LIST: u8 = b'L';
    /// Request: make a directory or set its mode (`id rel mode`).
    pub(crate) const DIR: u8 = b'D';
    /// Request: a file (`id rel mode mtime-s mtime-ns size backups`), then data.
    pub(crate) const PUT: u8 = b'P';
    /// Request: raw bytes of the file being put.
    pub(crate) const DATA: u8 = b'd';
    /// Request: the end of a file's data, with the verdict `1` keep or `0` drop.
    pub(crate) const VERDICT: u8 = b'z';
    /// Request: a small file sent with its listing, placed only where the
    /// comparison is sure to send it (`id rel mode mtime-s mtime-ns size sha256`),
    /// then [`DATA`] and [`VERDICT`] (issue 16).
    pub(crate) const AHEAD: u8 = b'A';
    /// Request: make a symlink (`id rel target backups`).
    pub(crate) const LINK: u8 = b'S';
    /// Request: remove a file or tree (`id rel`).
    pub(crate) const REMOVE: u8 = b'X';
    /// Request: remove a stale temporary if its run is dead (`id rel`).
    pub(crate) const STALE: u8 = b'T';
    /// Request: end; release the run's locks.
    pub(crate) const QUIT: u8 = b'Q';
    /// Request: end this batch and begin the next in the same agent (`run`).
    pub(crate) const NEXT: u8 = b'B';
    /// Request: start lanes (a helper process makes the files of lane 1).
    pub(crate) const LANES: u8 = b'W';
    /// Request: end the lanes (wait for the helper).
    pub(crate) const JOIN: u8 = b'J';
    /// Request: the checksums of a file's blocks (`id rel block max`; issue 19).
    pub(crate) const SUMS: u8 = b'G';
    /// Request: a file rebuilt from its old copy (`id rel mode mtime-s mtime-ns
    /// size backups block sha256`), then [`COPY`] and [`DATA`] frames, then
    /// [`VERDICT`].
    pub(crate) const DELTA: u8 = b'Y';
    /// Request: old blocks to copy into the file being rebuilt (`first count`).
    pub(crate) const COPY: u8 = b'c';
    /// Reply: raw block checksums (12 bytes each; see agent.pl).
    pub(crate) const SUMS_DATA: u8 = b's';
    /// Reply: the agent is up (`version uid hires hash`).
    pub(crate) const HELLO: u8 = b'H';
    /// Reply: one listed entry (`type size mtime-s mtime-ns mode uid rel target`).
    pub(crate) const ENTRY: u8 = b'e';
    /// Reply: a listed file's SHA-256 (`rel hex`).
    pub(crate) const HASH: u8 = b'h';
    /// Reply: part of a listing could not be read (`reason`).
    pub(crate) const NOTE: u8 = b'x';
    /// Reply: the request is done (fields depend on the request).
    pub(crate) const DONE: u8 = b'K';
    /// Reply: the request failed (`reason`).
    pub(crate) const FAILED: u8 = b'F';
}

/// The listing's records (`list.sh`, read by [`super::parse_listing`]).
pub(crate) mod listing {
    /// The login user's uid (`uid`), first.
    pub(crate) const UID: &[u8] = b"U";
    /// A root is usable; the owner and entry records that follow are its (`index`).
    pub(crate) const ROOT: &[u8] = b"M";
    /// A root is missing and was not made (a dry run; `index`).
    pub(crate) const MISSING: &[u8] = b"N";
    /// A root cannot be used (`index reason`).
    pub(crate) const UNUSABLE: &[u8] = b"E";
    /// Owner and mode of the current root, then of its parent (`uid mode path`).
    pub(crate) const OWNER: &[u8] = b"O";
    /// One entry below the current root (`type size mtime mode uid rel target`).
    pub(crate) const ENTRY: &[u8] = b"f";
    /// A regular file's SHA-256 (`rel hex`), as the agent's [`super::agent::HASH`].
    pub(crate) const HASH: &[u8] = b"h";
    /// find reported errors below a root: its list is partial (`index`).
    pub(crate) const INCOMPLETE: &[u8] = b"I";
    /// Whether the remote has GNU tar or bsdtar (`1` or `0`).
    pub(crate) const TAR: &[u8] = b"t";
    /// The end of a listing that keeps its channel (`token stderr`).
    pub(crate) const END: &[u8] = b"Z";
}

/// The commit's records (`commit.sh`, read by [`super::parse_commit`]).
pub(crate) mod commit {
    /// A step is done (`index`), as the agent's [`super::agent::DONE`].
    pub(crate) const DONE: &[u8] = b"K";
    /// A step was refused and nothing of it happened (`index reason`), as the
    /// agent's [`super::agent::FAILED`].
    pub(crate) const FAILED: &[u8] = b"F";
}

/// The writability probe's records (`probe.sh`, read by
/// [`super::probe::parse_answers`]).
pub(crate) mod probe {
    /// The host has perl for the agent (one empty field).
    pub(crate) const PERL: &[u8] = b"p";
    /// The verdict on one mapping (`index verdict path`).
    pub(crate) const VERDICT: &[u8] = b"V";
    /// A directory of that mapping others can write (`index "uid mode path"`).
    pub(crate) const OPEN: &[u8] = b"o";
}

#[cfg(test)]
mod tests {
    /// Every sh tag is printed by the program whose grammar it belongs to (the
    /// parsers' tests then read what the programs print under every shell).
    #[test]
    fn every_sh_tag_is_printed_by_its_program() {
        use super::*;
        let list = [include_str!("list.sh"), include_str!("list_stat.sh")].concat();
        let cases: [(&[u8], &str); 12] = [
            (listing::UID, &list),
            (listing::ROOT, &list),
            (listing::MISSING, &list),
            (listing::UNUSABLE, &list),
            (listing::OWNER, &list),
            (listing::ENTRY, &list),
            (listing::HASH, &list),
            (listing::INCOMPLETE, &list),
            (listing::TAR, &list),
            (probe::PERL, include_str!("probe.sh")),
            (probe::VERDICT, include_str!("probe.sh")),
            (probe::OPEN, include_str!("probe.sh")),
        ];
        for (tag, text) in cases {
            let tag = String::from_utf8_lossy(tag);
            assert!(
                text.contains(&format!("printf '{tag}\\0"))
                    || text.contains(&format!("printf \"{tag}\\0")),
                "no program prints tag {tag}"
            );
        }
        let commit = include_str!("commit.sh");
        for tag in [commit::DONE, commit::FAILED] {
            let tag = String::from_utf8_lossy(tag);
            assert!(commit.contains(&format!("printf '{tag}\\0")), "{tag}");
        }
    }

    /// No byte means two things: every tag of every grammar is distinct, but for
    /// the two the commit shares with the agent.
    #[test]
    fn no_tag_means_two_things() {
        use super::*;
        let shared = [commit::DONE, commit::FAILED, listing::HASH];
        let mut seen = std::collections::HashSet::new();
        let sh = [
            listing::UID,
            listing::ROOT,
            listing::MISSING,
            listing::UNUSABLE,
            listing::OWNER,
            listing::ENTRY,
            listing::INCOMPLETE,
            listing::TAR,
            listing::END,
            probe::PERL,
            probe::VERDICT,
            probe::OPEN,
        ];
        let ag = [
            agent::ROOT,
            agent::LIST,
            agent::DIR,
            agent::PUT,
            agent::AHEAD,
            agent::DATA,
            agent::VERDICT,
            agent::LINK,
            agent::REMOVE,
            agent::STALE,
            agent::QUIT,
            agent::NEXT,
            agent::LANES,
            agent::JOIN,
            agent::SUMS,
            agent::DELTA,
            agent::COPY,
            agent::SUMS_DATA,
            agent::HELLO,
            agent::ENTRY,
            agent::HASH,
            agent::NOTE,
            agent::DONE,
            agent::FAILED,
        ];
        for t in ag {
            assert!(seen.insert(vec![t]), "agent tag {} twice", t as char);
        }
        for t in sh {
            assert!(
                seen.insert(t.to_vec()),
                "tag {:?} twice",
                String::from_utf8_lossy(t)
            );
        }
        for t in shared {
            assert!(!seen.insert(t.to_vec()), "{t:?} is the agent's too");
        }
    }
}
