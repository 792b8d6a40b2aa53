//! Untrusted text made safe to show. A log, a witness or a cache may send any bytes; printed
//! raw, control characters (ESC sequences, carriage returns) could rewrite a terminal's screen,
//! hiding or forging a verdict. Every string from the network passes through [`printable`]
//! before a person sees it.

use std::borrow::Cow;

/// `s` with every control character written as a `\u{…}` escape (tabs and newlines too, so
/// that one field cannot pose as several lines).
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("plain text é"), "plain text é");
        assert_eq!(
            printable("ok\u{1b}[2J\rFAKE\n\u{9b}"),
            "ok\\u{1b}[2J\\u{d}FAKE\\u{a}\\u{9b}"
        );
    }
}
