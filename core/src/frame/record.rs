//! The field encoding under every frame body. A record is its fields in
//! order: unsigned LEB128 varints, `0`/`1` booleans, strings and nested
//! records as a varint length and their bytes, lists as a varint count and
//! their items, fixed-size byte arrays as they are. Because a nested record
//! carries its length, a reader skips whatever a newer version appended to
//! it, just as it skips the end of a frame body.

use super::FrameError;

/// A message or a part of one, with its fields in wire order.
pub(super) trait Record: Sized {
    /// Appends the fields, in wire order.
    fn put(&self, w: &mut Writer);
    /// Reads the fields this version knows; the caller skips what follows.
    fn take(r: &mut Reader<'_>) -> Result<Self, FrameError>;
}

/// Builds a frame body.
#[derive(Default)]
pub(super) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub(super) fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub(super) fn bool(&mut self, b: bool) {
        self.buf.push(u8::from(b));
    }

    /// A fixed-size field: no length on the wire.
    pub(super) fn array(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub(super) fn str(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
    }

    pub(super) fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.bool(false),
            Some(s) => {
                self.bool(true);
                self.str(s);
            }
        }
    }

    pub(super) fn strings(&mut self, items: &[String]) {
        self.varint(items.len() as u64);
        for s in items {
            self.str(s);
        }
    }

    /// A nested record, length first so that it can grow.
    pub(super) fn record<R: Record>(&mut self, record: &R) {
        let mut inner = Writer::default();
        record.put(&mut inner);
        self.varint(inner.buf.len() as u64);
        self.buf.extend_from_slice(&inner.buf);
    }

    pub(super) fn records<R: Record>(&mut self, items: &[R]) {
        self.varint(items.len() as u64);
        for item in items {
            self.record(item);
        }
    }
}

/// Reads the fields of one record, naming the record and the field in
/// every error.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    record: &'static str,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8], record: &'static str) -> Self {
        Reader { buf, record }
    }

    /// The bytes not read yet, read as the named record.
    pub(super) fn into_record(self, record: &'static str) -> Self {
        Reader {
            buf: self.buf,
            record,
        }
    }

    /// Bytes not read yet: fields of a newer version, once this version's
    /// fields are read.
    pub(super) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn malformed(&self, field: &str, problem: impl std::fmt::Display) -> FrameError {
        FrameError::Malformed(format!("{}.{field}: {problem}", self.record))
    }

    fn take_bytes(&mut self, field: &str, n: usize) -> Result<&'a [u8], FrameError> {
        if n > self.remaining() {
            return Err(self.malformed(
                field,
                format_args!("needs {n} bytes, {} left", self.remaining()),
            ));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(super) fn varint(&mut self, field: &str) -> Result<u64, FrameError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some((&byte, tail)) = self.buf.split_first() else {
                return Err(self.malformed(field, "truncated varint"));
            };
            self.buf = tail;
            let bits = u64::from(byte & 0x7f);
            if i == 9 && bits > 1 {
                return Err(self.malformed(field, "varint overflows 64 bits"));
            }
            v |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.malformed(field, "varint longer than 10 bytes"))
    }

    pub(super) fn u16(&mut self, field: &str) -> Result<u16, FrameError> {
        let v = self.varint(field)?;
        u16::try_from(v).map_err(|_| self.malformed(field, format_args!("{v} exceeds 16 bits")))
    }

    pub(super) fn bool(&mut self, field: &str) -> Result<bool, FrameError> {
        match self.take_bytes(field, 1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.malformed(field, format_args!("{other} is not a boolean"))),
        }
    }

    pub(super) fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], FrameError> {
        let bytes = self.take_bytes(field, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// A length-prefixed slice, the length checked against what is left
    /// before anything is allocated.
    fn sized(&mut self, field: &str) -> Result<&'a [u8], FrameError> {
        let len = self.varint(field)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        self.take_bytes(field, len)
    }

    pub(super) fn string(&mut self, field: &str) -> Result<String, FrameError> {
        let bytes = self.sized(field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.malformed(field, "not UTF-8"))
    }

    /// A string field added after version 1: empty when an older sender's
    /// record ends before it.
    pub(super) fn later_string(&mut self, field: &str) -> Result<String, FrameError> {
        if self.remaining() == 0 {
            Ok(String::new())
        } else {
            self.string(field)
        }
    }

    /// A varint added after version 1: 0 when an older sender's record
    /// ends before it.
    pub(super) fn later_varint(&mut self, field: &str) -> Result<u64, FrameError> {
        if self.remaining() == 0 {
            Ok(0)
        } else {
            self.varint(field)
        }
    }

    /// A number added after version 1: 0 when an older sender's record
    /// ends before it.
    pub(super) fn later_u16(&mut self, field: &str) -> Result<u16, FrameError> {
        if self.remaining() == 0 {
            Ok(0)
        } else {
            self.u16(field)
        }
    }

    pub(super) fn opt_string(&mut self, field: &str) -> Result<Option<String>, FrameError> {
        if self.bool(field)? {
            self.string(field).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A list's item count; every item takes at least one byte, so a count
    /// beyond what is left is an error, not an allocation.
    fn count(&mut self, field: &str) -> Result<usize, FrameError> {
        let n = self.varint(field)?;
        if n > self.remaining() as u64 {
            return Err(self.malformed(
                field,
                format_args!("{n} items in {} bytes", self.remaining()),
            ));
        }
        Ok(n as usize)
    }

    pub(super) fn strings(&mut self, field: &str) -> Result<Vec<String>, FrameError> {
        let n = self.count(field)?;
        (0..n).map(|_| self.string(field)).collect()
    }

    /// A nested record; bytes after the fields this version knows are
    /// skipped.
    pub(super) fn record<R: Record>(
        &mut self,
        field: &str,
        record: &'static str,
    ) -> Result<R, FrameError> {
        let bytes = self.sized(field)?;
        R::take(&mut Reader::new(bytes, record))
    }

    pub(super) fn records<R: Record>(
        &mut self,
        field: &str,
        record: &'static str,
    ) -> Result<Vec<R>, FrameError> {
        let n = self.count(field)?;
        (0..n).map(|_| self.record(field, record)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_overlong_ones_are_errors() {
        for v in [0, 1, 127, 128, 300, u64::from(u16::MAX), u64::MAX] {
            let mut w = Writer::default();
            w.varint(v);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes, "T");
            assert_eq!(r.varint("v").unwrap(), v);
            assert_eq!(r.remaining(), 0);
        }
        let overflow = [0xff; 9].iter().chain(&[0x02]).copied().collect::<Vec<_>>();
        assert!(Reader::new(&overflow, "T").varint("v").is_err());
        assert!(Reader::new(&[0xff; 11], "T").varint("v").is_err());
        assert!(Reader::new(&[0x80], "T").varint("v").is_err());
    }

    #[test]
    fn errors_name_the_record_and_the_field() {
        let err = Reader::new(&[5, b'a'], "HELLO").string("name").unwrap_err();
        assert_eq!(
            err,
            FrameError::Malformed("HELLO.name: needs 5 bytes, 1 left".into())
        );
        let err = Reader::new(&[200, 1], "UPDATE")
            .strings("services")
            .unwrap_err();
        assert!(err.to_string().contains("200 items in 0 bytes"), "{err}");
    }
}
