//! The rules an event's fields must meet, shared by the server and both SDKs. Apart from
//! [`crate::event`] and free of serde and the clock, so that the browser SDK can build
//! them without the standard library.

use alloc::string::String;

use crate::limits::*;

/// Why an event was refused. The text names the field, so a developer can fix the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A required field is empty.
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
    /// A field is longer than the limit.
    #[error("`{field}` is {len} bytes, longer than the limit of {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A field holds control characters, which no real id or path does.
    #[error("`{0}` must not contain control characters")]
    ControlCharacters(&'static str),
    /// `props` has too many entries or is too large.
    #[error("`props` is too large: at most {MAX_PROPS} entries and {MAX_PROPS_BYTES} bytes")]
    PropsTooLarge,
    /// The timestamp is too far in the future to be a clock error.
    #[error("`timestamp` is more than {MAX_CLOCK_SKEW_SECS} seconds in the future")]
    TimestampInFuture,
    /// The body could not be read as an event.
    #[error("{0}")]
    Malformed(String),
}

fn check_text(
    field: &'static str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<(), ValidationError> {
    // Blank means ASCII whitespace only, as in HTML: Unicode's table of spaces would
    // weigh more in the browser SDK's module than the rule is worth.
    if required && value.trim_ascii().is_empty() {
        return Err(ValidationError::Empty(field));
    }
    if value.len() > max {
        return Err(ValidationError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    if has_control_characters(value) {
        return Err(ValidationError::ControlCharacters(field));
    }
    Ok(())
}

/// Whether `value` holds a control character (Unicode's `Cc`, as `char::is_control`),
/// read from its UTF-8 bytes without decoding: U+0000–U+001F and U+007F are single
/// bytes, U+0080–U+009F are `C2 80` to `C2 9F`. Decoding would bring UTF-8's decoder
/// into the browser SDK's module.
fn has_control_characters(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.iter().enumerate().any(|(at, &b)| {
        b < 0x20 || b == 0x7f || (b == 0xc2 && matches!(bytes.get(at + 1), Some(0x80..=0x9f)))
    })
}

/// The text fields' rules, for clients that build events without `Event` (the browser
/// SDK keeps serde out of its wasm to stay small).
pub fn validate_fields(
    site_id: &str,
    event_type: &str,
    path: Option<&str>,
    user_id: Option<&str>,
) -> Result<(), ValidationError> {
    check_text("site_id", site_id, MAX_SITE_ID_BYTES, true)?;
    check_text("event_type", event_type, MAX_EVENT_TYPE_BYTES, true)?;
    if let Some(path) = path {
        check_text("path", path, MAX_PATH_BYTES, false)?;
    }
    if let Some(user_id) = user_id {
        check_text("user_id", user_id, MAX_USER_ID_BYTES, false)?;
    }
    Ok(())
}

/// The rules of the fields that say where a visitor came from and with what.
pub fn validate_context(
    referrer: Option<&str>,
    user_agent: Option<&str>,
    hostname: Option<&str>,
    utm: [(&'static str, Option<&str>); 5],
) -> Result<(), ValidationError> {
    if let Some(r) = referrer {
        check_text("referrer", r, MAX_REFERRER_BYTES, false)?;
    }
    if let Some(ua) = user_agent {
        check_text("user_agent", ua, MAX_USER_AGENT_BYTES, false)?;
    }
    if let Some(host) = hostname {
        check_text("hostname", host, MAX_HOSTNAME_BYTES, false)?;
    }
    for (field, value) in utm {
        if let Some(v) = value {
            check_text(field, v, MAX_UTM_BYTES, false)?;
        }
    }
    Ok(())
}

/// The `props` rule: `entries` keys, `bytes` of compact JSON.
pub fn validate_props_size(entries: usize, bytes: usize) -> Result<(), ValidationError> {
    if entries > MAX_PROPS || bytes > MAX_PROPS_BYTES {
        return Err(ValidationError::PropsTooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use alloc::format;

    use super::*;

    #[test]
    fn control_characters_are_unicodes_cc_read_from_bytes() {
        let chars = (0..0x3000).filter_map(char::from_u32);
        for c in chars.chain(['\u{fffd}', '\u{10ffff}', '🚀']) {
            let text = format!("a{c}\u{a0}");
            assert_eq!(has_control_characters(&text), c.is_control(), "{c:?}");
        }
    }

    #[test]
    fn a_blank_required_field_is_empty() {
        assert_eq!(
            validate_fields(" \t ", "e", None, None),
            Err(ValidationError::Empty("site_id"))
        );
        assert_eq!(validate_fields(" s ", "e", Some(""), Some("")), Ok(()));
    }
}
