//! Reading a configuration file's bytes into text, with the checks every file shares.
//!
//! Each file goes through here so that a missing file, a 10 MB file, binary
//! garbage or a byte-order mark all give the same kind of one-line message that
//! names the file and the fix, instead of a confusing parse error further down.

use std::path::Path;

use anyhow::{Result, anyhow, bail};

/// Configuration files are small; anything bigger is a mistake (a log, an archive).
pub(crate) const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Reads `path` as UTF-8 text. `what` is the role of the file, used in the missing-file hint.
pub(crate) fn read_text(path: &Path, what: &str) -> Result<String> {
    let file = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            anyhow!(
                "{file}: {what} not found; create it or point to it (see README, Configuration)"
            )
        }
        _ => anyhow!("{file}: cannot read {what}: {e}"),
    })?;
    if meta.is_dir() {
        bail!("{file}: is a directory, expected the {what} file");
    }
    if meta.len() > MAX_CONFIG_BYTES {
        bail!(
            "{file}: {} bytes is too large for {what} (at most {MAX_CONFIG_BYTES}); is this the right file?",
            meta.len()
        );
    }
    let bytes = std::fs::read(path).map_err(|e| anyhow!("{file}: cannot read {what}: {e}"))?;
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        bail!("{file}: starts with a UTF-8 byte order mark; save the file as UTF-8 without BOM");
    }
    match String::from_utf8(bytes) {
        Ok(text) if text.contains('\0') => {
            bail!("{file}: contains NUL bytes, not a text file; is this the right file?")
        }
        Ok(text) => Ok(text),
        Err(e) => bail!(
            "{file}: byte {} is not valid UTF-8, not a text file; save it as UTF-8",
            e.utf8_error().valid_up_to()
        ),
    }
}

/// Problems collected across a file, so one run reports all of them.
#[derive(Default, Debug)]
pub(crate) struct Problems(Vec<String>);

impl Problems {
    /// Records one problem (a full one-line message).
    pub(crate) fn push(&mut self, msg: String) {
        self.0.push(msg);
    }

    /// Ok when nothing was recorded, else one error with one line per problem.
    pub(crate) fn into_result(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(self.0.join("\n")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bom_binary_missing_and_huge() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.json");
        std::fs::write(&f, b"\xEF\xBB\xBF[]").unwrap();
        assert!(
            read_text(&f, "x")
                .unwrap_err()
                .to_string()
                .contains("byte order mark")
        );
        std::fs::write(&f, b"\x00\xff\xfe garbage").unwrap();
        assert!(
            read_text(&f, "x")
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
        std::fs::write(&f, vec![b' '; 2 * 1024 * 1024]).unwrap();
        assert!(
            read_text(&f, "x")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
        let missing = dir.path().join("nope");
        assert!(
            read_text(&missing, "x")
                .unwrap_err()
                .to_string()
                .contains("not found")
        );
        std::fs::write(&f, "[]").unwrap();
        assert_eq!(read_text(&f, "x").unwrap(), "[]");
    }
}
