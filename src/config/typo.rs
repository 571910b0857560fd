//! "Did you mean": the known name closest to a misspelt one (issue 14).
//!
//! An unknown key in config.ini, or an unknown field in connection_info.json or a
//! mapping file, is an error (a typo must never silently become a default). When
//! a known name is within a couple of edits of the unknown one, the error says
//! which, as cargo and git do: `unknown field \`exlude\`; did you mean
//! \`exclude\`?`. Names are compared without regard to ASCII case.

/// The known name closest to `word`, if it is close enough to be a likely typo:
/// at most one edit for names of up to 5 characters, two for longer ones
/// (a swap of two neighbours counts as one edit).
pub(crate) fn closest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = if word.chars().count() <= 5 { 1 } else { 2 };
    known
        .into_iter()
        .map(|k| (distance(&word, &k.to_ascii_lowercase()), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// `did you mean \`NAME\`?` for the closest known name, if any.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(word, known).map(|k| format!("did you mean `{k}`?"))
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`: the
/// optimal string alignment distance.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: edits from a[..i] to b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPPING: &[&str] = &["src", "dest", "delete", "exclude", "backups", "post_sync"];

    #[test]
    fn close_names_are_suggested() {
        for (typo, want) in [
            ("exlude", "exclude"),
            ("excludes", "exclude"),
            ("dst", "dest"),
            ("Dest", "dest"),
            ("backpus", "backups"),
            ("post-sync", "post_sync"),
            ("postsync", "post_sync"),
        ] {
            assert_eq!(closest(typo, MAPPING.iter().copied()), Some(want), "{typo}");
        }
        assert_eq!(
            did_you_mean(
                "number_of_conections",
                ["log_path", "number_of_connections"]
            ),
            Some("did you mean `number_of_connections`?".to_string())
        );
    }

    #[test]
    fn far_names_are_not() {
        for far in [
            "pasword",
            "x",
            "source",
            "destination",
            "excluded_paths",
            "",
        ] {
            assert_eq!(closest(far, MAPPING.iter().copied()), None, "{far}");
        }
        assert_eq!(closest("ab", ["xy"]), None);
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("abc", "abc"), 0);
        assert_eq!(distance("abc", "acb"), 1);
        assert_eq!(distance("exlude", "exclude"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }
}
