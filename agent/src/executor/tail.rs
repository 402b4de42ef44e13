//! The last N bytes of an attempt's output: reports and the replicated state
//! keep only a tail, so a chatty process never costs more than N bytes here.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct Tail {
    buf: VecDeque<u8>,
    cap: usize,
}

impl Tail {
    pub fn new(cap: usize) -> Self {
        Self {
            buf: VecDeque::with_capacity(cap.min(64 * 1024)),
            cap,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(self.cap)..];
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend(bytes);
    }

    /// The tail as text, at most `cap` bytes: invalid UTF-8 is replaced, and a
    /// character cut in half at the start is dropped.
    pub fn to_text(&self) -> String {
        let (a, b) = self.buf.as_slices();
        let bytes = [a, b].concat();
        // Continuation bytes at the start belong to a character already dropped.
        let start = bytes
            .iter()
            .position(|&b| (b & 0xC0) != 0x80)
            .unwrap_or(bytes.len());
        let text = String::from_utf8_lossy(&bytes[start..]);
        // Replacement characters are 3 bytes: cut again so the bound holds.
        let mut cut = text.len().saturating_sub(self.cap);
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text[cut..].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_bytes() {
        let mut t = Tail::new(5);
        t.push(b"hello ");
        t.push(b"world");
        assert_eq!(t.to_text(), "world");
        t.push(b"!");
        assert_eq!(t.to_text(), "orld!");
        t.push(b"0123456789");
        assert_eq!(t.to_text(), "56789");
    }

    #[test]
    fn never_starts_inside_a_character_nor_exceeds_the_bound() {
        let mut t = Tail::new(4);
        t.push("aé€".as_bytes()); // 1 + 2 + 3 bytes: the tail cuts é in half
        assert_eq!(t.to_text(), "€");
        let mut t = Tail::new(4);
        t.push(&[0xff, 0xfe, 0xfd, 0xfc]);
        assert!(t.to_text().len() <= 4);
    }
}
