//! RFC 8785 JSON Canonicalization Scheme: the bytes usage records are signed over, so that anyone
//! can verify a signature with an off-the-shelf JCS library.
//!
//! Differences from `canonical` (our storage form): object keys sort by UTF-16 code units, and
//! numbers print as ECMAScript's `Number.prototype.toString` does.

use serde_json::{Number, Value};

pub fn to_jcs_string(value: &Value) -> String {
    let mut out = String::with_capacity(128);
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number(n)),
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(key, out);
                out.push(':');
                write(value, out);
            }
            out.push('}');
        }
    }
}

/// JSON string escaping as RFC 8785 §3.2.2.2 prescribes: `"` and `\`, the five short control
/// escapes, other controls as lowercase `\u00xx`, everything else (including `/` and non-ASCII)
/// as is.
fn string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// ECMAScript `Number.prototype.toString` of the number's f64 value (RFC 8785 §3.2.2.3).
fn number(n: &Number) -> String {
    if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= 1 << 53) {
        return i.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    if f == 0.0 || !f.is_finite() {
        // JSON has no NaN or infinities; −0 prints as 0.
        return "0".to_owned();
    }
    // Rust's `{:e}` is the shortest representation that round-trips, like ECMAScript's.
    let scientific = format!("{:e}", f.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let k = digits.len() as i32;
    let n = exponent + 1;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let sign = if n - 1 < 0 { '-' } else { '+' };
        let fraction = if k > 1 { format!(".{}", &digits[1..]) } else { String::new() };
        format!("{}{fraction}e{sign}{}", &digits[..1], (n - 1).abs())
    };
    if f < 0.0 { format!("-{body}") } else { body }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::to_jcs_string;

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // RFC 8785 §3.2.3's example: the emoji (a surrogate pair, 0xD83D…) sorts before U+FB33.
        let value = json!({
            "\u{20ac}": "Euro Sign", "\r": "Carriage Return", "\u{fb33}": "Hebrew Letter Dalet With Dagesh",
            "1": "One", "\u{1f600}": "Emoji: Grinning Face", "\u{80}": "Control", "\u{f6}": "Latin Small Letter O With Diaeresis"
        });
        let keys: Vec<String> = to_jcs_string(&value)
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .map(|entry| entry.split(':').next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            keys,
            ["\"\\r\"", "\"1\"", "\"\u{80}\"", "\"\u{f6}\"", "\"\u{20ac}\"", "\"\u{1f600}\"", "\"\u{fb33}\""]
        );
    }

    #[test]
    fn numbers_print_as_ecmascript_does() {
        // RFC 8785 Appendix B's values, as JSON numbers serde_json can hold.
        for (input, expected) in [
            ("0", "0"),
            ("-0.0", "0"),
            ("1", "1"),
            ("-1", "-1"),
            ("4.50", "4.5"),
            ("0.002", "0.002"),
            ("0.000001", "0.000001"),
            ("1e-7", "1e-7"),
            ("1e21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("123456789012345680000", "123456789012345680000"),
            ("9007199254740992", "9007199254740992"),
            ("9007199254740993", "9007199254740992"),
            ("295147905179352830000", "295147905179352830000"),
            ("1e+30", "1e+30"),
            ("-5e-324", "-5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("333333333.3333333", "333333333.3333333"),
            ("0.1", "0.1"),
        ] {
            let value: serde_json::Value = serde_json::from_str(input).expect(input);
            assert_eq!(to_jcs_string(&value), expected, "{input}");
        }
    }

    #[test]
    fn strings_escape_only_what_rfc_8785_escapes() {
        let value = json!({ "s": "a\"b\\c/d\u{8}\u{c}\n\r\t\u{1}\u{7f}é€" });
        assert_eq!(to_jcs_string(&value), "{\"s\":\"a\\\"b\\\\c/d\\b\\f\\n\\r\\t\\u0001\u{7f}é€\"}");
        assert_eq!(to_jcs_string(&json!([1, [true, null], {}])), "[1,[true,null],{}]");
    }
}
