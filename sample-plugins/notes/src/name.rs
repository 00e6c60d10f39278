//! Note names: the only part of a path the caller controls, so they are checked
//! before anything touches the filesystem.

/// The longest note name, in characters.
pub const MAX_LEN: usize = 100;

/// Check that `name` is a plain file name inside the notes directory; the error
/// says which rule it breaks.
pub fn validate(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    if len == 0 {
        return Err("a note name cannot be empty".into());
    }
    if len > MAX_LEN {
        return Err(format!("a note name can be at most {MAX_LEN} characters long, not {len}"));
    }
    for c in name.chars() {
        match c {
            '/' | '\\' => {
                return Err(format!(
                    "note names cannot contain '{c}' — they cannot leave the notes directory"
                ));
            }
            c if c.is_control() => {
                return Err("note names cannot contain control characters".into());
            }
            c if c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.') => {}
            c => {
                return Err(format!(
                    "note names may contain only letters, digits, spaces, '_', '-' and '.'; \
                     '{c}' is not allowed"
                ));
            }
        }
    }
    // A leading '.' is reserved for the plugin's temporary files (and hidden files).
    if name.starts_with('.') {
        return Err("a note name cannot start with '.'".into());
    }
    if name.contains("..") {
        return Err("note names cannot contain '..' — they cannot leave the notes directory".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for name in ["todo", "Meeting notes 2024-05-01.txt", "a_b-c.d", "日记", "Ünïcödé", "x"]
        {
            assert_eq!(validate(name), Ok(()), "{name}");
        }
        assert_eq!(validate(&"n".repeat(MAX_LEN)), Ok(()));
        // Length counts characters, not bytes.
        assert_eq!(validate(&"é".repeat(MAX_LEN)), Ok(()));
    }

    #[test]
    fn rejects_empty_and_long_names() {
        assert!(validate("").unwrap_err().contains("empty"));
        assert!(validate(&"n".repeat(MAX_LEN + 1)).unwrap_err().contains("at most 100"));
    }

    #[test]
    fn rejects_path_separators() {
        for name in ["a/b", "/etc/passwd", "a\\b", "notes/"] {
            let err = validate(name).unwrap_err();
            assert!(err.contains("cannot leave the notes directory"), "{name}: {err}");
        }
        assert_eq!(
            validate("a/b").unwrap_err(),
            "note names cannot contain '/' — they cannot leave the notes directory"
        );
    }

    #[test]
    fn rejects_dots_that_could_escape_or_hide() {
        assert!(validate(".").unwrap_err().contains("start with '.'"));
        assert!(validate("..").unwrap_err().contains("start with '.'"));
        assert!(validate(".hidden").unwrap_err().contains("start with '.'"));
        assert!(validate("a..b").unwrap_err().contains("'..'"));
        assert!(validate("note..").unwrap_err().contains("'..'"));
    }

    #[test]
    fn rejects_control_characters() {
        for name in ["a\0b", "line\nbreak", "tab\there", "del\u{7f}"] {
            assert!(validate(name).unwrap_err().contains("control characters"), "{name:?}");
        }
    }

    #[test]
    fn rejects_other_punctuation() {
        for name in ["a:b", "a*b", "what?", "<x>", "a|b", "quote\"", "emoji🙂"] {
            let err = validate(name).unwrap_err();
            assert!(err.contains("is not allowed"), "{name}: {err}");
        }
    }
}
