//! Reading the protocol's primitive types from an answer, every length
//! checked against what is left.

use crate::Error;

/// A cursor over an answer body.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Error::Truncated(self.at))?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let at = self.at;
        self.take(N)?.try_into().map_err(|_| Error::Truncated(at))
    }

    pub(crate) fn i8(&mut self) -> Result<i8, Error> {
        Ok(i8::from_be_bytes(self.fixed()?))
    }

    pub(crate) fn i16(&mut self) -> Result<i16, Error> {
        Ok(i16::from_be_bytes(self.fixed()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, Error> {
        Ok(i32::from_be_bytes(self.fixed()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, Error> {
        Ok(i64::from_be_bytes(self.fixed()?))
    }

    /// A NULLABLE_STRING: `None` for length -1.
    pub(crate) fn nullable_string(&mut self) -> Result<Option<&'a str>, Error> {
        let at = self.at;
        let len = self.i16()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| Error::BadLength(len.into(), at))?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::NotUtf8(at))
    }

    /// A STRING (null is an error).
    pub(crate) fn string(&mut self) -> Result<&'a str, Error> {
        let at = self.at;
        self.nullable_string()?.ok_or(Error::BadLength(-1, at))
    }

    /// An ARRAY of what `item` reads; a null array is empty. A count
    /// larger than the bytes left is an error before anything is
    /// allocated (every item takes at least one byte).
    pub(crate) fn array<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        let at = self.at;
        let count = self.i32()?;
        if count == -1 {
            return Ok(Vec::new());
        }
        let n = usize::try_from(count)
            .ok()
            .filter(|&n| n <= self.buf.len() - self.at)
            .ok_or(Error::BadLength(count.into(), at))?;
        // Reserved for a few items at most: an item takes more memory
        // than the byte it is known to take on the wire.
        let mut out = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            out.push(item(self)?);
        }
        Ok(out)
    }

    /// An unsigned varint (tagged fields' counts, tags and sizes).
    fn uvarint(&mut self) -> Result<u64, Error> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.i8()? as u8;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(Error::BadLength(-1, self.at))
    }

    /// Skips a TAG_BUFFER: a count, then tag, size and bytes of each.
    pub(crate) fn skip_tags(&mut self) -> Result<(), Error> {
        let at = self.at;
        let count = self.uvarint()?;
        if count > (self.buf.len() - self.at) as u64 {
            return Err(Error::BadLength(i64::try_from(count).unwrap_or(-1), at));
        }
        for _ in 0..count {
            let _tag = self.uvarint()?;
            let at = self.at;
            let size = self.uvarint()?;
            let size = usize::try_from(size).map_err(|_| Error::BadLength(-1, at))?;
            self.take(size)?;
        }
        Ok(())
    }

    /// What has not been read.
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.at..]
    }
}
