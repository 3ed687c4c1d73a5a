//! Text logs that outside values cannot forge. User names, client ids, topics and paths reach
//! log fields verbatim; written raw, a newline in one starts a line of the attacker's choosing
//! (e.g. a fake `fingerprint_sha256=`, the line operators compare with their browser), and an
//! escape sequence rewrites the terminal. So in text logs every field value is escaped
//! ([`escape`]: control, bidirectional-override and other invisible characters as `\n`,
//! `\u{..}`) and quoted when it contains a space, `=` or `"` ([`field_value`]), so that one
//! event is one line and each `key=value` is the daemon's. JSON logs are escaped by the
//! serializer already.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Characters shown escaped: controls (C0, DEL, C1), and the invisible formatting characters
/// that can make text display differently from what it is (bidirectional overrides, zero-width
/// characters, line and paragraph separators).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// `s` with every character [`needs_escape`] says so written as an escape (`\n`, `\r`, `\t`,
/// `\u{1b}`), and backslashes doubled, so the result is one line and reads back unambiguously.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| needs_escape(c) || c == '\\') {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.into()
}

/// A field value as written in a text log: escaped, and in double quotes (with `"` escaped)
/// when it contains a space, `=`, `"` or anything escaped, so that it cannot pass for more
/// fields.
pub fn field_value(s: &str) -> std::borrow::Cow<'_, str> {
    let plain = !s.is_empty()
        && !s
            .chars()
            .any(|c| c == ' ' || c == '=' || c == '"' || c == '\\' || needs_escape(c));
    if plain {
        return s.into();
    }
    let escaped = escape(s);
    format!("\"{}\"", escaped.replace('"', "\\\"")).into()
}

/// The text log's field formatter: the message escaped, every other field `name=value` with
/// [`field_value`].
#[derive(Debug, Default, Clone, Copy)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut v = FieldWriter {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct FieldWriter<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl FieldWriter<'_, '_> {
    fn write(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{sep}{}", escape(value))
        } else {
            // `r#type` and the like: the name as written, without the raw prefix.
            let name = field.name().trim_start_matches("r#");
            write!(self.writer, "{sep}{name}={}", field_value(value))
        };
    }
}

impl Visit for FieldWriter<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_values_stay_on_one_line_and_in_one_field() {
        let forged =
            "x\n2026-12-07T00:00:00Z  INFO web: fingerprint_sha256=DE:AD \u{1b}[2J\u{202e}";
        let v = field_value(forged);
        assert!(!v.contains('\n') && !v.contains('\u{1b}') && !v.contains('\u{202e}'));
        assert!(v.starts_with('"') && v.ends_with('"'), "{v}");
        assert_eq!(
            v,
            "\"x\\n2026-12-07T00:00:00Z  INFO web: fingerprint_sha256=DE:AD \\u{1b}[2J\\u{202e}\""
        );
        assert_eq!(field_value("plc-7"), "plc-7");
        assert_eq!(field_value(""), "\"\"");
        assert_eq!(field_value("a\"b"), "\"a\\\"b\"");
        assert_eq!(field_value("a\\\"b"), "\"a\\\\\\\"b\"");
        assert_eq!(escape("line\r\nnext"), "line\\r\\nnext");
    }
}
