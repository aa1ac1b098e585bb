//! The two JSON writers an event needs: a string and a whole number. Hand-written
//! because serde_json would triple the module, and `format!` would bring in the
//! formatting machinery, the largest thing in it; the properties arrive as JSON already
//! (the browser's `JSON.stringify`).

use alloc::string::String;

/// The digits of hex and decimal numbers.
const DIGITS: &str = "0123456789abcdef";

/// Appends the digit worth `d` (below 16), as a `&str` (see the crate's notes on size).
pub fn push_digit(out: &mut String, d: u8) {
    let d = usize::from(d);
    out.push_str(DIGITS.get(d..=d).unwrap_or_default());
}

/// Appends `value` as a JSON string, quoted and escaped. Only ASCII is escaped, so the
/// text is walked as bytes and copied in runs between escapes.
pub fn push_string(out: &mut String, value: &str) {
    out.push('"');
    let mut from = 0;
    for (at, byte) in value.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0..0x20 => "\\u00",
            _ => continue,
        };
        out.push_str(value.get(from..at).unwrap_or_default());
        out.push_str(escape);
        if byte < 0x20 {
            push_digit(out, byte >> 4);
            push_digit(out, byte & 15);
        }
        from = at + 1;
    }
    out.push_str(value.get(from..).unwrap_or_default());
    out.push('"');
}

/// Appends `value` in decimal.
pub fn push_u64(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for &d in digits.get(at..).unwrap_or_default() {
        push_digit(out, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_through_serde_json() {
        for s in [
            "",
            "plain",
            "q\"uote",
            "back\\slash",
            "tab\tnew\nline\u{1}",
            "é 🚀",
        ] {
            let mut out = String::new();
            push_string(&mut out, s);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
        }
    }

    #[test]
    fn numbers_are_decimal() {
        for n in [0, 7, 10, 1_700_000_000_123, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }
}
