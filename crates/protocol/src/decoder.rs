//! [`FrameDecoder`]: frames reassembled from a byte stream that arrives in
//! chunks of any size, with bad lengths skipped so decoding can go on.

use crate::wire::{decode_payload, DecodeError};
use crate::{Frame, HEADER_LEN, MAX_FRAME_LEN};

/// Incremental decoder: feed it bytes as they arrive, in chunks of any size, and
/// take frames out. Its buffer never holds more than one frame plus one read.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes still to discard from an oversized frame.
    skip: usize,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.skip > 0 {
            let dropped = self.skip.min(bytes.len());
            self.skip -= dropped;
            bytes = &bytes[dropped..];
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet decoded (for tests and diagnostics).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Discards any partial frame (after the byte stream was interrupted).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.skip = 0;
    }

    /// The next complete frame, `None` when more bytes are needed. After an error
    /// the offending frame has been consumed (or is being skipped) and decoding
    /// can continue.
    pub fn next_frame(&mut self) -> Option<Result<Frame, DecodeError>> {
        if self.skip > 0 || self.buf.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if !(HEADER_LEN - 4..=MAX_FRAME_LEN).contains(&len) {
            let available = self.buf.len() - 4;
            if available >= len {
                self.buf.drain(..4 + len);
            } else {
                self.skip = len - available;
                self.buf.clear();
            }
            return Some(Err(DecodeError::BadLength { len }));
        }
        if self.buf.len() < 4 + len {
            return None;
        }
        let kind = self.buf[4];
        let id = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]);
        let result = decode_payload(kind, id, &self.buf[HEADER_LEN..4 + len]);
        self.buf.drain(..4 + len);
        Some(result)
    }
}
