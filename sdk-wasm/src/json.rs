//! The two JSON writers an event needs: a string and a whole number. Hand-written
//! because serde_json would triple the module, and `format!` would bring in the
//! formatting machinery, the largest thing in it; the properties arrive as JSON already
//! (the browser's `JSON.stringify`).

use alloc::string::String;

/// Lower-case hex digits, for escapes here and for ids.
pub const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `value` as a JSON string, quoted and escaped.
pub fn push_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                out.push_str("\\u00");
                out.push(char::from(HEX[(c as usize) >> 4]));
                out.push(char::from(HEX[(c as usize) & 15]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `value` in decimal.
pub fn push_u64(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
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
