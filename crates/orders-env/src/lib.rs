//! `config.env`: `KEY=value` lines that fill in what the environment does not set, read by the
//! `orders` binary, `orders-producer`, `orders-bench` and `scripts/lib.sh` with the same rules:
//!
//! - blank lines and lines starting with `#` are skipped; `export ` before a key is allowed;
//! - every other line is `KEY=value`, the key `[A-Za-z_][A-Za-z0-9_]*`, blanks around both
//!   trimmed;
//! - a value in `"…"` or `'…'` is taken literally without its quotes (no escapes, no `$`
//!   expansion); an unquoted value is taken literally too, but may not contain ` #` (an inline
//!   comment is ambiguous: quote the value or move the comment to its own line);
//! - a key may appear once.
//!
//! Anything else is an error naming the file and line. A variable already set in the
//! environment wins over the file.

use std::path::{Path, PathBuf};

/// The file name looked for in the working directory and its parents.
pub const FILE_NAME: &str = "config.env";

/// One `KEY=value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    /// 1-based.
    pub line: usize,
}

/// Why `config.env` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set the variables of {}", path.display())]
    Set {
        path: PathBuf,
        #[source]
        source: dotenvy::Error,
    },
}

/// Parses the text of a `config.env`; the error is `(line, message)`.
pub fn parse(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let mut entries: Vec<Entry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let body = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let Some((key, value)) = body.split_once('=') else {
            return Err((line, format!("expected KEY=value, found {trimmed:?}")));
        };
        let key = key.trim();
        let valid_key = key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_key {
            return Err((
                line,
                format!("{key:?} is not a variable name (letters, digits, _)"),
            ));
        }
        let value = value.trim();
        let value = match value.chars().next() {
            Some(q @ ('"' | '\'')) => {
                if value.len() < 2 || !value.ends_with(q) {
                    return Err((
                        line,
                        format!(
                            "{key}: the value's {q} quote is not closed at the end of the line"
                        ),
                    ));
                }
                &value[1..value.len() - 1]
            }
            _ => {
                if value.contains(" #") || value.contains("\t#") {
                    return Err((
                        line,
                        format!(
                            "{key}: an unquoted value may not contain ' #' (quote the value, or put the comment on a line of its own)"
                        ),
                    ));
                }
                value
            }
        };
        if let Some(first) = entries.iter().find(|e| e.key == key) {
            return Err((
                line,
                format!("{key} is set again (first on line {})", first.line),
            ));
        }
        entries.push(Entry {
            key: key.to_owned(),
            value: value.to_owned(),
            line,
        });
    }
    Ok(entries)
}

/// `config.env` in `dir` or the nearest parent that has one.
pub fn find(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join(FILE_NAME))
        .find(|p| p.is_file())
}

/// Reads `path` and sets each variable the environment does not set yet.
pub fn load_file(path: &Path) -> Result<Vec<Entry>, EnvFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| EnvFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let entries = parse(&text).map_err(|(line, message)| EnvFileError::Parse {
        path: path.to_owned(),
        line,
        message,
    })?;
    // The parsed values again, in a form dotenvy reads back exactly (single quotes are
    // literal there; a value holding one goes in double quotes with escapes): dotenvy only
    // sets them, since std::env::set_var is unsafe in edition 2024 and this workspace forbids
    // unsafe code.
    let mut canonical = String::new();
    for e in &entries {
        if e.value.contains('\'') {
            let escaped = e
                .value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$");
            canonical.push_str(&format!("{}=\"{escaped}\"\n", e.key));
        } else {
            canonical.push_str(&format!("{}='{}'\n", e.key, e.value));
        }
    }
    dotenvy::from_read(canonical.as_bytes()).map_err(|source| EnvFileError::Set {
        path: path.to_owned(),
        source,
    })?;
    Ok(entries)
}

/// Finds `config.env` from the working directory up and loads it; `Ok(None)` when there is
/// none.
pub fn load() -> Result<Option<PathBuf>, EnvFileError> {
    let Ok(cwd) = std::env::current_dir() else {
        return Ok(None);
    };
    match find(&cwd) {
        Some(path) => load_file(&path).map(|_| Some(path)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_lines_parse_to_literal_values() {
        let text = "# comment\n\n  DB_HOST = db.example \nexport DB_PORT=5433\r\nA=\"x # not a comment\"\nB='it''s'\nC=\nD=a=b\nE='$HOME \\n'\n";
        let got: Vec<_> = parse(text)
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.value, e.line))
            .collect();
        let want = [
            ("DB_HOST", "db.example", 3),
            ("DB_PORT", "5433", 4),
            ("A", "x # not a comment", 5),
            ("B", "it''s", 6),
            ("C", "", 7),
            ("D", "a=b", 8),
            ("E", "$HOME \\n", 9),
        ];
        assert_eq!(got, want.map(|(k, v, l)| (k.to_owned(), v.to_owned(), l)));
    }

    #[test]
    fn bad_lines_are_errors_with_their_line_number() {
        for (text, line, needle) in [
            ("A=1\nnot a setting\n", 2, "expected KEY=value"),
            ("A=1\n\n1A=2\n", 3, "not a variable name"),
            ("A=\"open\n", 1, "not closed"),
            ("A='x\"\n", 1, "not closed"),
            ("A=1 # why\n", 1, "' #'"),
            ("A=1\nA=2\n", 2, "first on line 1"),
            ("=1\n", 1, "not a variable name"),
        ] {
            let (l, message) = parse(text).expect_err(text);
            assert_eq!(l, line, "{text:?}: {message}");
            assert!(message.contains(needle), "{text:?}: {message}");
        }
    }
}
