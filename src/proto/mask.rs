//! Client-to-server masking (RFC 6455 §5.3): payload byte i is XORed with key[i mod 4].
//!
//! `unmask` works a machine word at a time, in place, and carries the mask phase so that a payload
//! split over several receive buffers is unmasked piece by piece with the same result as in one go.
//! `unmask_bytewise` is the plain reference it is tested against.

/// The key rotated so that its first byte applies at mask phase `phase` (bytes already done mod 4).
#[inline]
fn rotated(key: [u8; 4], phase: usize) -> [u8; 4] {
    let p = phase & 3;
    [key[p], key[(p + 1) & 3], key[(p + 2) & 3], key[(p + 3) & 3]]
}

/// XORs `buf` with `key`, where `phase` bytes of this payload were already unmasked before `buf`.
/// Applying it twice restores the input, so it also masks.
#[inline]
pub fn unmask(buf: &mut [u8], key: [u8; 4], phase: usize) {
    let k = rotated(key, phase);
    let k64 = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    // 32 bytes per turn gives the compiler room to use vector registers; 8 and 32 are multiples of
    // 4, so the phase is the same at the start of every chunk.
    let mut wide = buf.chunks_exact_mut(32);
    for chunk in &mut wide {
        for word in chunk.chunks_exact_mut(8) {
            xor_word(word, k64);
        }
    }
    let rest = wide.into_remainder();
    let mut words = rest.chunks_exact_mut(8);
    for word in &mut words {
        xor_word(word, k64);
    }
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= k[i & 3];
    }
}

#[inline(always)]
fn xor_word(word: &mut [u8], k64: u64) {
    let mut w = [0u8; 8];
    w.copy_from_slice(word);
    word.copy_from_slice(&(u64::from_ne_bytes(w) ^ k64).to_ne_bytes());
}

/// The byte-at-a-time reference for [`unmask`].
pub fn unmask_bytewise(buf: &mut [u8], key: [u8; 4], phase: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(phase + i) & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 7) as u8).collect()
    }

    #[test]
    fn word_wide_matches_bytewise_at_every_length_and_offset() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let base = pattern(1024 + 4);
        for offset in 0..=3 {
            for len in 0..=1024 {
                let mut fast = base[offset..offset + len].to_vec();
                let mut slow = fast.clone();
                unmask(&mut fast, key, offset);
                unmask_bytewise(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn split_anywhere_equals_whole() {
        let key = [1, 2, 3, 250];
        let whole = pattern(300);
        let mut expect = whole.clone();
        unmask_bytewise(&mut expect, key, 0);
        for cut in 0..=300 {
            let mut data = whole.clone();
            let (a, b) = data.split_at_mut(cut);
            unmask(a, key, 0);
            unmask(b, key, cut);
            assert_eq!(data, expect, "cut {cut}");
        }
    }

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut masked = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        unmask(&mut masked, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&masked, b"Hello");
    }
}
