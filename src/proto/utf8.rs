//! Incremental UTF-8 validation for text messages and close reasons.
//!
//! A text message may arrive in many frames and many receive buffers, and a code point may be split
//! between any two of them. `Utf8Validator` carries at most three bytes of an unfinished code point
//! across calls and fails at the first byte that can no longer be part of valid UTF-8, so a bad
//! message is refused (1007) without waiting for its end.

/// Validation state carried between pieces of one text message.
#[derive(Debug, Default, Clone, Copy)]
pub struct Utf8Validator {
    partial: [u8; 4],
    partial_len: u8,
}

/// The input can no longer be valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

/// Whole-buffer validation (the fast path for a message that is complete in one buffer).
#[inline]
pub fn validate(bytes: &[u8]) -> Result<(), Invalid> {
    simdutf8::basic::from_utf8(bytes)
        .map(|_| ())
        .map_err(|_| Invalid)
}

/// Length of the code point a leading byte starts (0 for a byte that cannot lead).
fn width(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

impl Utf8Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece. Fails as soon as the bytes seen so far cannot begin valid UTF-8.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), Invalid> {
        if self.partial_len > 0 {
            input = self.complete_partial(input)?;
            if self.partial_len > 0 {
                return Ok(()); // the input ran out inside the same code point
            }
        }
        if simdutf8::basic::from_utf8(input).is_ok() {
            return Ok(());
        }
        let err = simdutf8::compat::from_utf8(input).unwrap_err();
        if err.error_len().is_some() {
            return Err(Invalid);
        }
        // A valid prefix of a code point at the end: keep it for the next piece.
        let tail = &input[err.valid_up_to()..];
        self.partial[..tail.len()].copy_from_slice(tail);
        self.partial_len = tail.len() as u8;
        Ok(())
    }

    /// Adds bytes to the carried code point; returns the input left after it.
    fn complete_partial<'a>(&mut self, input: &'a [u8]) -> Result<&'a [u8], Invalid> {
        let have = self.partial_len as usize;
        let need = width(self.partial[0]) - have;
        let take = need.min(input.len());
        self.partial[have..have + take].copy_from_slice(&input[..take]);
        let now = have + take;
        match simdutf8::compat::from_utf8(&self.partial[..now]) {
            Ok(_) => self.partial_len = 0,
            Err(e) if e.error_len().is_none() => self.partial_len = now as u8,
            Err(_) => return Err(Invalid),
        }
        Ok(&input[take..])
    }

    /// The message ended: it is valid only if no code point is left unfinished.
    pub fn finish(&mut self) -> Result<(), Invalid> {
        let ok = self.partial_len == 0;
        *self = Self::default();
        if ok { Ok(()) } else { Err(Invalid) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incremental(pieces: &[&[u8]]) -> Result<(), Invalid> {
        let mut v = Utf8Validator::new();
        for p in pieces {
            v.feed(p)?;
        }
        v.finish()
    }

    #[test]
    fn split_code_points_are_valid() {
        let text = "κόσμε €𝄞 ascii".as_bytes();
        for cut in 0..=text.len() {
            assert_eq!(
                incremental(&[&text[..cut], &text[cut..]]),
                Ok(()),
                "cut {cut}"
            );
        }
        let singles: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(incremental(&singles), Ok(()));
    }

    #[test]
    fn fails_fast_on_first_bad_byte() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"abc"), Ok(()));
        // 0xF4 0x90 is past U+10FFFF: invalid as soon as the second byte is seen.
        assert_eq!(v.feed(&[0xf4]), Ok(()));
        assert_eq!(v.feed(&[0x90]), Err(Invalid));
        let mut v = Utf8Validator::new();
        assert_eq!(
            v.feed(&[
                0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0
            ]),
            Err(Invalid)
        );
    }

    #[test]
    fn truncated_at_end_is_invalid() {
        assert_eq!(incremental(&[&[0xe2, 0x82]]), Err(Invalid));
        assert_eq!(incremental(&[&[0xe2], &[0x82]]), Err(Invalid));
        assert_eq!(incremental(&[&[0xe2], &[0x82], &[0xac]]), Ok(()));
    }

    #[test]
    fn agrees_with_std_on_every_split_of_many_inputs() {
        let samples: Vec<Vec<u8>> = vec![
            vec![0xc0, 0x80],
            vec![0xed, 0xa0, 0x80],
            vec![0xf0, 0x9f, 0x98, 0x80, 0x41],
            vec![0xf8, 0x88, 0x80, 0x80, 0x80],
            vec![0x41, 0xe0, 0xa0],
            "héllo wörld €".as_bytes().to_vec(),
            vec![0xef, 0xbf, 0xbf],
            vec![0xf4, 0x8f, 0xbf, 0xbf],
            vec![0xf4, 0x90, 0x80, 0x80],
        ];
        for s in &samples {
            let expect = std::str::from_utf8(s).is_ok();
            for cut in 0..=s.len() {
                let got = incremental(&[&s[..cut], &s[cut..]]).is_ok();
                assert_eq!(got, expect, "{s:x?} cut {cut}");
            }
        }
    }
}
