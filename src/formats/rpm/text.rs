//! Header strings as repodata carries them, decided the way createrepo_c 0.17.3
//! decides (src/xml_dump.c): a string that libxml2's `xmlCheckUTF8` accepts is
//! UTF-8, any other is converted from ISO-8859-1 (`cr_latin1_to_utf8`); and a
//! package whose repodata strings hold a C0 control character other than TAB, LF
//! and CR is refused (`cr_hascontrollchars`), because XML 1.0 cannot carry one at
//! all, escaped or not, and one such package would make every tree listing it
//! unreadable to dnf and zypper.

/// libxml2's `xmlCheckUTF8`: the byte structure of UTF-8 (a lead byte and its
/// continuation bytes), without rejecting overlong forms, surrogates or values past
/// U+10FFFF. createrepo_c passes such strings to libxml2 as they are.
fn libxml2_accepts_as_utf8(bytes: &[u8]) -> bool {
    let mut at = 0;
    while at < bytes.len() {
        let lead = bytes[at];
        let width = if lead & 0x80 == 0 {
            1
        } else if lead & 0xe0 == 0xc0 {
            2
        } else if lead & 0xf0 == 0xe0 {
            3
        } else if lead & 0xf8 == 0xf0 {
            4
        } else {
            return false;
        };
        let Some(continuation) = bytes.get(at + 1..at + width) else {
            return false;
        };
        if continuation.iter().any(|b| b & 0xc0 != 0x80) {
            return false;
        }
        at += width;
    }
    true
}

/// A header string as createrepo_c writes it into repodata. Err when libxml2 would
/// take it for UTF-8 but it is not (an overlong form or a surrogate): createrepo_c
/// would write ill-formed XML, so there is no value to match.
///
/// One difference from `cr_latin1_to_utf8`, which also drops C0 control characters
/// of a Latin-1 string: they are kept here, because createrepo_c checks for them
/// before converting and skips the package, and so must the caller.
pub fn decode(raw: &[u8]) -> Result<String, &'static str> {
    if libxml2_accepts_as_utf8(raw) {
        return std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| "is not valid UTF-8 (an overlong form or a surrogate)");
    }
    Ok(raw
        .iter()
        // 0x80..=0xBF are Latin-1's C1 controls: "probably misencoded cp-1252", skipped.
        .filter(|&&b| !(0x80..0xc0).contains(&b))
        .map(|&b| char::from(b))
        .collect())
}

/// createrepo_c's `cr_hascontrollchars`: below 32, except TAB, LF and CR.
fn is_forbidden_control(c: char) -> bool {
    (c as u32) < 32 && !matches!(c, '\t' | '\n' | '\r')
}

/// Characters XML 1.0's `Char` production excludes that a Rust string can hold:
/// C0 controls other than TAB, LF and CR, and U+FFFE, U+FFFF. (Surrogates cannot
/// be in a `str`; C1 controls are allowed.) createrepo_c only refuses the first
/// kind; it writes the second as `&#xFFFE;`, which readers refuse, so we refuse both.
pub fn forbidden_in_xml(c: char) -> bool {
    is_forbidden_control(c) || matches!(c, '\u{fffe}' | '\u{ffff}')
}

/// Refuse a repodata string XML 1.0 cannot carry, naming its field.
pub fn check_field(field: &str, value: &str) -> Result<(), String> {
    match value.chars().find(|&c| forbidden_in_xml(c)) {
        None => Ok(()),
        Some(c) if is_forbidden_control(c) => Err(format!(
            "{field} contains the control character U+{:04X}, which XML 1.0 cannot carry \
             (createrepo_c skips such packages: \"Forbidden control chars found\")",
            c as u32
        )),
        Some(c) => Err(format!(
            "{field} contains U+{:04X}, which XML 1.0 cannot carry",
            c as u32
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_kept_and_anything_else_is_read_as_latin1_like_createrepo_c() {
        assert_eq!(
            decode("Skyttä ÜTF-8 €".as_bytes()).unwrap(),
            "Skyttä ÜTF-8 €"
        );
        // "Skytt\xe4" and "\xdcTF-8" in ISO-8859-1.
        assert_eq!(decode(b"Skytt\xe4").unwrap(), "Skyttä");
        assert_eq!(decode(b"\xdcTF-8").unwrap(), "ÜTF-8");
        assert_eq!(decode(b"\xff\xc0").unwrap(), "ÿÀ");
        // C1 bytes (0x80..0xBF) are dropped, as cr_latin1_to_utf8 drops them.
        assert_eq!(decode(b"a\x80b\xbfc\xe4").unwrap(), "abcä");
        // A lone continuation byte is not UTF-8 to libxml2 either.
        assert_eq!(decode(b"\xa9 2023").unwrap(), " 2023");
        // Structurally UTF-8, so createrepo_c would pass it on raw: no value to match.
        assert!(decode(b"\xc0\x80").is_err(), "overlong NUL");
        assert!(decode(b"\xed\xa0\x80").is_err(), "surrogate");
        // Control characters survive decoding so that the check can refuse them.
        assert_eq!(decode(b"a\x01\xe4").unwrap(), "a\u{1}ä");
        assert_eq!(decode(b"").unwrap(), "");
    }

    #[test]
    fn only_the_characters_xml_cannot_carry_are_refused() {
        for ok in [
            "plain",
            "tab\there",
            "line\nfeed",
            "carriage\rreturn",
            "\u{85}\u{9f}é",
            "\u{fffd}",
        ] {
            assert_eq!(check_field("summary", ok), Ok(()), "{ok:?}");
        }
        for (bad, code) in [
            ("nul\u{0}", "U+0000"),
            ("bell\u{7}", "U+0007"),
            ("esc\u{1b}[0m", "U+001B"),
            ("\u{1f}", "U+001F"),
            ("\u{fffe}", "U+FFFE"),
            ("\u{ffff}", "U+FFFF"),
        ] {
            let why = check_field("summary", bad).unwrap_err();
            assert!(
                why.starts_with("summary contains") && why.contains(code),
                "{why}"
            );
        }
    }
}
