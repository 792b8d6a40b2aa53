//! Nix's base-32 encoding ("nix32"): its own alphabet, written from the last 5-bit group of
//! the little-endian bit string to the first.

/// The 32 characters, without e, o, u and t.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// The length of the nix32 form of `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    (n * 8).div_ceil(5)
}

/// The nix32 form of `bytes`, as Nix writes hash parts and hashes.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let low = bytes[i] >> j;
        let high = if i + 1 < bytes.len() {
            bytes[i + 1].checked_shl(8 - j as u32).unwrap_or(0)
        } else {
            0
        };
        out.push(char::from(ALPHABET[usize::from((low | high) & 0x1f)]));
    }
    out
}

/// Decodes nix32 into `n` bytes, refusing bad characters, wrong lengths and set padding bits.
pub fn decode(s: &str, n: usize) -> Option<Vec<u8>> {
    if s.len() != encoded_len(n) {
        return None;
    }
    let mut out = vec![0u8; n];
    for (k, c) in s.bytes().rev().enumerate() {
        let digit = ALPHABET.iter().position(|&a| a == c)? as u16;
        let b = k * 5;
        let (i, j) = (b / 8, b % 8);
        let wide = digit << j;
        out[i] |= wide as u8;
        let carry = (wide >> 8) as u8;
        if i + 1 < n {
            out[i + 1] |= carry;
        } else if carry != 0 {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn sha256_of_abc() {
        let h = Sha256::digest(b"abc");
        let s = encode(&h);
        assert_eq!(s, "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s");
        assert_eq!(decode(&s, 32).unwrap(), h.to_vec());
    }

    #[test]
    fn padding_bits_must_be_zero() {
        // 52 characters carry 260 bits; the first character holds the top 4, so 'g' (16) overflows.
        let s = "g".to_owned() + &"0".repeat(51);
        assert_eq!(decode(&s, 32), None);
    }
}
