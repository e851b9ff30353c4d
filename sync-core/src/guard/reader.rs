//! A bounds-checked cursor over untrusted bytes.
//!
//! Every read checks the remaining input first and never allocates, so a
//! declared length or count is compared with what is actually there before
//! anything is sized from it.

use super::GuardError;

/// The length of an automerge change hash.
pub(crate) const HASH_LEN: usize = 32;

#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// What is left, without consuming it.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, GuardError> {
        let byte = *self
            .bytes
            .get(self.pos)
            .ok_or(GuardError::Truncated { what })?;
        self.pos += 1;
        Ok(byte)
    }

    /// Takes exactly `len` bytes, refusing (without allocating) when fewer remain.
    pub(crate) fn take(&mut self, len: u64, what: &'static str) -> Result<&'a [u8], GuardError> {
        let remaining = self.remaining();
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= remaining)
            .ok_or(GuardError::LengthExceedsInput {
                what,
                declared: len,
                remaining,
            })?;
        let slice = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    /// Unsigned LEB128, as strict as automerge's own decoder: at most ten
    /// bytes, no bits beyond 64, and no redundant trailing zero byte.
    pub(crate) fn uleb(&mut self, what: &'static str) -> Result<u64, GuardError> {
        let mut result: u64 = 0;
        let mut shift = 0u32;
        loop {
            let byte = self.u8(what)?;
            if shift == 63 && byte > 1 {
                return Err(GuardError::Malformed(
                    "LEB128 value does not fit in 64 bits",
                ));
            }
            result |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                if shift > 0 && byte == 0 {
                    return Err(GuardError::Malformed("overlong LEB128 encoding"));
                }
                return Ok(result);
            }
            shift += 7;
            if shift > 63 {
                return Err(GuardError::Malformed(
                    "LEB128 value does not fit in 64 bits",
                ));
            }
        }
    }

    /// Unsigned LEB128 that must fit in a `u32` (automerge's `leb128_u32`).
    pub(crate) fn uleb_u32(&mut self, what: &'static str) -> Result<u32, GuardError> {
        u32::try_from(self.uleb(what)?)
            .map_err(|_| GuardError::Malformed("LEB128 value does not fit in 32 bits"))
    }

    /// Signed LEB128 with the same strictness as automerge's `leb128_i64`.
    pub(crate) fn sleb(&mut self, what: &'static str) -> Result<i64, GuardError> {
        let mut result: i64 = 0;
        let mut shift = 0u32;
        let mut prev = 0u8;
        loop {
            let byte = self.u8(what)?;
            if shift < 64 {
                result |= i64::from(byte & 0x7f) << shift;
            }
            shift += 7;
            if byte & 0x80 == 0 {
                if shift > 64 && byte != 0 && byte != 0x7f {
                    return Err(GuardError::Malformed(
                        "LEB128 value does not fit in 64 bits",
                    ));
                }
                if shift > 7
                    && ((byte == 0 && prev & 0x40 == 0) || (byte == 0x7f && prev & 0x40 != 0))
                {
                    return Err(GuardError::Malformed("overlong LEB128 encoding"));
                }
                if shift < 64 && byte & 0x40 != 0 {
                    result |= -1i64 << shift;
                }
                return Ok(result);
            }
            if shift > 63 {
                return Err(GuardError::Malformed(
                    "LEB128 value does not fit in 64 bits",
                ));
            }
            prev = byte;
        }
    }

    /// Reads a count prefix for items that take at least `min_item_bytes`
    /// each, refusing it when it exceeds `limit` or could not fit in the input.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        limit: usize,
        min_item_bytes: usize,
    ) -> Result<usize, GuardError> {
        let declared = self.uleb(what)?;
        if declared > limit as u64 {
            return Err(GuardError::TooMany {
                what,
                count: declared,
                limit,
            });
        }
        let needed = declared.saturating_mul(min_item_bytes as u64);
        if needed > self.remaining() as u64 {
            return Err(GuardError::LengthExceedsInput {
                what,
                declared,
                remaining: self.remaining(),
            });
        }
        // `declared <= limit`, which is a usize.
        Ok(declared as usize)
    }

    /// A LEB128 count of 32-byte change hashes followed by the hashes.
    pub(crate) fn hashes(&mut self, what: &'static str, limit: usize) -> Result<usize, GuardError> {
        let count = self.count(what, limit, HASH_LEN)?;
        self.take((count * HASH_LEN) as u64, what)?;
        Ok(count)
    }

    /// A LEB128 length followed by that many bytes.
    pub(crate) fn length_prefixed(
        &mut self,
        what: &'static str,
        limit: usize,
    ) -> Result<&'a [u8], GuardError> {
        let len = self.uleb(what)?;
        if len > limit as u64 {
            return Err(GuardError::TooLong { what, len, limit });
        }
        self.take(len, what)
    }
}
