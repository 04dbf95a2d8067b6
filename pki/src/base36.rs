//! Base 36 text for big-endian byte strings (SwarmKit's digest and secret
//! format): lowercase `0-9a-z`, left-padded with `'0'` to a fixed width.

const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Writes `bytes` (a big-endian unsigned integer) in base 36, left-padded
/// with `'0'` to at least `width` characters.
pub(crate) fn encode_padded(bytes: &[u8], width: usize) -> String {
    let mut number: Vec<u8> = bytes.to_vec();
    let mut digits: Vec<u8> = Vec::with_capacity(width);
    while number.iter().any(|&b| b != 0) {
        digits.push(ALPHABET[usize::from(divide_in_place(&mut number, 36))]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.iter().rev().map(|&d| char::from(d)).collect()
}

/// Divides the big-endian integer in `number` by `divisor` in place and
/// returns the remainder.
fn divide_in_place(number: &mut [u8], divisor: u8) -> u8 {
    let mut remainder: u16 = 0;
    for byte in number.iter_mut() {
        let value = (remainder << 8) | u16::from(*byte);
        // value < divisor * 256, so the quotient fits in a byte.
        *byte = u8::try_from(value / u16::from(divisor)).unwrap_or(u8::MAX);
        remainder = value % u16::from(divisor);
    }
    u8::try_from(remainder).unwrap_or(0)
}

/// True when every character of `s` is a lowercase base 36 digit.
pub(crate) fn is_base36(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_small_numbers() {
        assert_eq!(encode_padded(&[0], 3), "000");
        assert_eq!(encode_padded(&[35], 1), "z");
        assert_eq!(encode_padded(&[36], 1), "10");
        assert_eq!(encode_padded(&[1, 0], 4), "0074"); // 256 = 7*36 + 4
    }

    #[test]
    fn max_values_fit_their_widths() {
        assert_eq!(encode_padded(&[0xff; 32], 50).len(), 50);
        assert_eq!(encode_padded(&[0xff; 16], 25).len(), 25);
        // 2^128 - 1 in base 36.
        assert_eq!(encode_padded(&[0xff; 16], 25), "f5lxx1zz5pnorynqglhzmsp33");
    }

    #[test]
    fn recognises_base36() {
        assert!(is_base36("09az"));
        assert!(!is_base36("09aZ"));
        assert!(!is_base36("a-b"));
    }
}
