use std::path::{Path, PathBuf};

/// A value that must not reach logs, `--help`, `Debug` output or error messages: a password,
/// or a connection URL that holds one. Read it with [`Secret::expose`] where it is used.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that sends it (a connection).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

// clap builds secrets straight from flags and environment variables.
impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// A secret setting that could not be resolved. Names the setting and the file, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{setting} and {setting}_FILE are both set; set one of them")]
    Both { setting: &'static str },
    #[error("cannot read {setting}_FILE ({}): {source}", .path.display())]
    Read {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{setting}_FILE ({}) is empty", .path.display())]
    Empty {
        setting: &'static str,
        path: PathBuf,
    },
}

/// The value of the secret setting `setting`: given directly, or read from the file named by
/// its `_FILE` form (as container images do, e.g. `DB_PASSWORD_FILE=/run/secrets/db-password`).
/// The file's trailing line breaks are not part of the secret. Both at once is an error: which
/// one wins would be a guess.
pub fn resolve_secret(
    setting: &'static str,
    value: Option<&Secret>,
    file: Option<&Path>,
) -> Result<Option<Secret>, SecretError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(SecretError::Both { setting }),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, None) => Ok(None),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
                setting,
                path: path.to_owned(),
                source,
            })?;
            let text = text.trim_end_matches(['\n', '\r']);
            if text.is_empty() {
                return Err(SecretError::Empty {
                    setting,
                    path: path.to_owned(),
                });
            }
            Ok(Some(Secret::new(text)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(!format!("{:?}", Some(s)).contains("hunter2"));
    }

    #[test]
    fn file_form_strips_line_breaks_and_names_the_setting_on_errors() {
        let dir = std::env::temp_dir().join(format!("orders-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret value\r\n\n").unwrap();
        let got = resolve_secret("DB_PASSWORD", None, Some(&file))
            .unwrap()
            .unwrap();
        assert_eq!(got.expose(), "s3cret value");

        let both = resolve_secret("DB_PASSWORD", Some(&got), Some(&file)).unwrap_err();
        assert_eq!(
            both.to_string(),
            "DB_PASSWORD and DB_PASSWORD_FILE are both set; set one of them"
        );

        std::fs::write(&file, "\n").unwrap();
        let empty = resolve_secret("DB_PASSWORD", None, Some(&file)).unwrap_err();
        assert!(
            empty.to_string().starts_with("DB_PASSWORD_FILE ("),
            "{empty}"
        );

        let missing = resolve_secret("KAFKA_SASL_PASSWORD", None, Some(&dir.join("nope")));
        let missing = missing.unwrap_err().to_string();
        assert!(
            missing.starts_with("cannot read KAFKA_SASL_PASSWORD_FILE (")
                && missing.contains("nope"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
