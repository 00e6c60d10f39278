//! Text plugin: word counts, URL slugs, Base64 and SHA-256 of text.

use autoglm_sdk::prelude::*;
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use sha2::{Digest, Sha256};

#[derive(Deserialize, JsonSchema)]
struct TextArgs {
    /// The input text (any Unicode).
    text: String,
}

#[derive(Deserialize, JsonSchema)]
struct DecodeArgs {
    /// Base64 with the standard alphabet (A-Z a-z 0-9 + /); '=' padding is optional and
    /// whitespace, such as line breaks, is ignored.
    data: String,
}

#[derive(Serialize, JsonSchema)]
struct WordCount {
    /// Whitespace-separated words containing a letter or digit, plus one per CJK ideograph.
    words: usize,
    /// Unicode scalar values (not bytes, not grapheme clusters).
    characters: usize,
    /// Lines; a final line break does not start another line.
    lines: usize,
}

fn word_count(args: TextArgs) -> Result<WordCount, ToolError> {
    let text = &args.text;
    let mut words = 0;
    // Whether the run since the last separator has a letter or digit, so stray
    // punctuation such as " - " or "，" is not a word.
    let mut counted = false;
    for c in text.chars() {
        if is_cjk_ideograph(c) {
            // Chinese and Japanese put no spaces between words; one ideograph per word
            // is the usual approximation.
            words += 1;
            counted = false;
        } else if c.is_whitespace() {
            counted = false;
        } else if c.is_alphanumeric() && !counted {
            words += 1;
            counted = true;
        }
    }
    Ok(WordCount { words, characters: text.chars().count(), lines: text.lines().count() })
}

fn is_cjk_ideograph(c: char) -> bool {
    matches!(c,
        '\u{3400}'..='\u{4DBF}'      // Extension A
        | '\u{4E00}'..='\u{9FFF}'    // Unified Ideographs
        | '\u{F900}'..='\u{FAFF}'    // Compatibility Ideographs
        | '\u{20000}'..='\u{323AF}') // Extensions B to H and the compatibility supplement
}

fn slugify(args: TextArgs) -> Result<String, ToolError> {
    let mut slug = String::new();
    let mut pending_dash = false;
    for c in args.text.chars() {
        let folded = if c.is_ascii_alphanumeric() {
            Some(c.to_ascii_lowercase().to_string())
        } else if matches!(c, '\'' | '’' | '\u{0300}'..='\u{036F}') {
            // Apostrophes keep "don't" one word; combining accents belong to the letter before.
            continue;
        } else {
            fold_latin(c).map(str::to_string)
        };
        match folded {
            Some(s) => {
                if pending_dash && !slug.is_empty() {
                    slug.push('-');
                }
                pending_dash = false;
                slug.push_str(&s);
            }
            None => pending_dash = true,
        }
    }
    if slug.is_empty() {
        return Err(ToolError::invalid("text has no Latin letters or digits to make a slug from"));
    }
    Ok(slug)
}

/// The ASCII spelling of a Latin-1 or Latin Extended-A letter, lowercased.
fn fold_latin(c: char) -> Option<&'static str> {
    Some(match c {
        'À'..='Å' | 'à'..='å' | 'Ā'..='ą' => "a",
        'Æ' | 'æ' => "ae",
        'Ç' | 'ç' | 'Ć'..='č' => "c",
        'Ð' | 'ð' | 'Ď'..='đ' => "d",
        'È'..='Ë' | 'è'..='ë' | 'Ē'..='ě' => "e",
        'Ĝ'..='ģ' => "g",
        'Ĥ'..='ħ' => "h",
        'Ì'..='Ï' | 'ì'..='ï' | 'Ĩ'..='ı' => "i",
        'Ĳ' | 'ĳ' => "ij",
        'Ĵ' | 'ĵ' => "j",
        'Ķ'..='ĸ' => "k",
        'Ĺ'..='ł' => "l",
        'Ñ' | 'ñ' | 'Ń'..='ŋ' => "n",
        'Ò'..='Ö' | 'Ø' | 'ò'..='ö' | 'ø' | 'Ō'..='ő' => "o",
        'Œ' | 'œ' => "oe",
        'Ŕ'..='ř' => "r",
        'Ś'..='š' | 'ſ' => "s",
        'ß' => "ss",
        'Ţ'..='ŧ' => "t",
        'Þ' | 'þ' => "th",
        'Ù'..='Ü' | 'ù'..='ü' | 'Ũ'..='ų' => "u",
        'Ŵ' | 'ŵ' => "w",
        'Ý' | 'ý' | 'ÿ' | 'Ŷ'..='Ÿ' => "y",
        'Ź'..='ž' => "z",
        _ => return None,
    })
}

fn base64_encode(args: TextArgs) -> Result<String, ToolError> {
    Ok(STANDARD.encode(args.text.as_bytes()))
}

/// The standard alphabet, with or without '=' padding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn base64_decode(args: DecodeArgs) -> Result<String, ToolError> {
    let data: String = args.data.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = LENIENT.decode(&data).map_err(|e| {
        use base64::DecodeError::*;
        let reason = match e {
            InvalidByte(at, b'-' | b'_') => format!(
                "character {} is from the URL-safe alphabet; only + and / are accepted",
                at + 1
            ),
            InvalidByte(at, byte) => {
                format!("character {} ({:?}) is not base64", at + 1, byte as char)
            }
            InvalidLength(length) => format!("{length} symbols cannot be base64 (truncated?)"),
            InvalidLastSymbol(at, _) => {
                format!("the last symbol (character {}) is corrupt", at + 1)
            }
            InvalidPadding => "the '=' padding is malformed".to_string(),
        };
        ToolError::invalid(format!("data is not valid base64: {reason} (whitespace not counted)"))
    })?;
    let length = bytes.len();
    String::from_utf8(bytes).map_err(|e| {
        ToolError::failed(format!(
            "the decoded {length} bytes are not UTF-8 text (invalid at byte {}); \
             this tool returns text only",
            e.utf8_error().valid_up_to()
        ))
    })
}

fn sha256(args: TextArgs) -> Result<String, ToolError> {
    let digest = Sha256::digest(args.text.as_bytes());
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "word_count",
            "Count the words, characters and lines of a text; words are separated by \
             whitespace, and each CJK ideograph counts as one word.",
            word_count,
        )
        .output::<WordCount>(),
        Tool::new(
            "slugify",
            "Turn a text into a URL slug of lowercase ASCII letters and digits joined by \
             hyphens, with accents removed (\"Crème Brûlée!\" → \"creme-brulee\").",
            slugify,
        ),
        Tool::new(
            "base64_encode",
            "Encode a text's UTF-8 bytes as standard Base64 with padding.",
            base64_encode,
        ),
        Tool::new(
            "base64_decode",
            "Decode standard Base64 (padding optional) into the UTF-8 text it holds.",
            base64_decode,
        ),
        Tool::new(
            "sha256",
            "Compute the SHA-256 hash of a text's UTF-8 bytes as 64 lowercase hex digits.",
            sha256,
        ),
    ]
    .into_iter()
    .map(|tool| tool.read_only().idempotent())
    .collect()
}

export_plugin!(tools);

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> TextArgs {
        TextArgs { text: s.to_string() }
    }

    fn count(s: &str) -> (usize, usize, usize) {
        let c = word_count(text(s)).unwrap();
        (c.words, c.characters, c.lines)
    }

    fn slug(s: &str) -> Result<String, ToolError> {
        slugify(text(s))
    }

    fn decode(s: &str) -> Result<String, ToolError> {
        base64_decode(DecodeArgs { data: s.to_string() })
    }

    #[test]
    fn counts_words_characters_and_lines() {
        assert_eq!(count(""), (0, 0, 0));
        assert_eq!(count("hello"), (1, 5, 1));
        assert_eq!(count("  Hello,   world!\n"), (2, 18, 1));
        assert_eq!(count("one\ntwo\r\nthree"), (3, 14, 3));
        assert_eq!(count("a\n\nb"), (2, 4, 3));
        assert_eq!(count("a - b"), (2, 5, 1));
        assert_eq!(count("naïve café"), (2, 10, 1));
        assert_eq!(count("x\u{3000}y"), (2, 3, 1)); // ideographic space
    }

    #[test]
    fn counts_each_cjk_ideograph_as_a_word() {
        assert_eq!(count("你好世界"), (4, 4, 1));
        assert_eq!(count("你好，世界。"), (4, 6, 1));
        assert_eq!(count("我用Rust写代码"), (6, 9, 1));
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("Hello, World!").unwrap(), "hello-world");
        assert_eq!(slug("  --Crème Brûlée--  ").unwrap(), "creme-brulee");
        assert_eq!(slug("Ærøskøbing Straße").unwrap(), "aeroskobing-strasse");
        assert_eq!(slug("Łódź & Kraków 2024").unwrap(), "lodz-krakow-2024");
        assert_eq!(slug("Don't stop").unwrap(), "dont-stop");
        assert_eq!(slug("cafe\u{0301} au lait").unwrap(), "cafe-au-lait");
        assert_eq!(slug("Rust 编程 guide").unwrap(), "rust-guide");
        assert_eq!(slug("a___b...c").unwrap(), "a-b-c");
    }

    #[test]
    fn empty_slug_is_invalid() {
        for input in ["", "   ", "!!!", "中文", "Привет"] {
            assert!(matches!(slug(input), Err(ToolError::InvalidArguments(_))), "{input}");
        }
    }

    #[test]
    fn base64_known_vectors() {
        let cases =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")];
        for (plain, encoded) in cases {
            assert_eq!(base64_encode(text(plain)).unwrap(), encoded);
            assert_eq!(decode(encoded).unwrap(), plain);
        }
        assert_eq!(base64_encode(text("é")).unwrap(), "w6k=");
        assert_eq!(base64_encode(text("\u{3fff}?>")).unwrap(), "47+/Pz4=");
    }

    #[test]
    fn base64_round_trips() {
        for plain in ["hello, world", "你好，世界", "emoji 🎉 and tabs\t", "a"] {
            let encoded = base64_encode(text(plain)).unwrap();
            assert_eq!(decode(&encoded).unwrap(), plain);
        }
    }

    #[test]
    fn base64_decode_is_lenient_about_padding_and_whitespace() {
        assert_eq!(decode("Zg").unwrap(), "f");
        assert_eq!(decode("  Zm8\n").unwrap(), "fo");
        assert_eq!(decode("Zm9v\r\nYmFy\n").unwrap(), "foobar");
    }

    #[test]
    fn invalid_base64_is_invalid() {
        for data in ["Zm9v!", "Z", "Zm9vY", "Zh==", "Zg=a", "-_8="] {
            match decode(data) {
                Err(ToolError::InvalidArguments(m)) => {
                    assert!(m.starts_with("data is not valid base64: "), "{m}")
                }
                other => panic!("{data}: {other:?}"),
            }
        }
        let Err(ToolError::InvalidArguments(m)) = decode("ab-d") else { panic!() };
        assert!(m.contains("URL-safe"), "{m}");
    }

    #[test]
    fn non_utf8_bytes_fail() {
        let Err(ToolError::Failed(m)) = decode("/w==") else { panic!("0xff must fail") };
        assert!(m.contains("not UTF-8"), "{m}");
    }

    #[test]
    fn sha256_known_vectors() {
        let hash = |s| sha256(text(s)).unwrap();
        assert_eq!(hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hash(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
