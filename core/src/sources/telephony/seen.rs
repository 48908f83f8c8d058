//! Which provider rows the source remembers, as one bitmap per 1,024 `_id`s of a table
//! (key `seen/<table>/<bucket>`, 128 bytes): a scan of an unchanged provider reads one small
//! row of memory per 1,024 provider rows and tests a bit per row, instead of a key per row.
//! A bit is set exactly when the row's own entry (`sms/<_id>`, `mms/<_id>`) is remembered,
//! and both change in the same commit.

use super::memory::Table;

/// `_id`s per bitmap.
pub const BUCKET: i64 = 1024;
const BYTES: usize = (BUCKET / 8) as usize;

pub fn bucket_of(id: i64) -> i64 {
    id.div_euclid(BUCKET)
}

/// The store key of a table's bitmap for `bucket`, zero-padded so key order is bucket order.
pub fn key(table: Table, bucket: i64) -> String {
    format!("seen/{}/{bucket:012}", table.name())
}

/// Bounds of a table's bitmap keys, exclusive (`/` < digits < `0`... the next byte after `/`).
pub fn range(table: Table) -> (String, String) {
    (format!("seen/{}/", table.name()), format!("seen/{}0", table.name()))
}

pub fn bucket_of_key(key: &str) -> Option<i64> {
    key.rsplit('/').next()?.parse().ok()
}

/// The rows of one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bits(Vec<u8>);

impl Bits {
    pub fn empty() -> Bits {
        Bits(vec![0; BYTES])
    }

    /// A stored bitmap; `None` for a value of another size.
    pub fn parse(value: &[u8]) -> Option<Bits> {
        (value.len() == BYTES).then(|| Bits(value.to_vec()))
    }

    fn at(id: i64) -> (usize, u8) {
        let i = id.rem_euclid(BUCKET) as usize;
        (i / 8, 1 << (i % 8))
    }

    pub fn has(&self, id: i64) -> bool {
        let (byte, mask) = Self::at(id);
        self.0[byte] & mask != 0
    }

    pub fn set(&mut self, id: i64, on: bool) {
        let (byte, mask) = Self::at(id);
        if on { self.0[byte] |= mask } else { self.0[byte] &= !mask }
    }

    /// The ids set, ascending, for the bitmap of `bucket`.
    pub fn ids(&self, bucket: i64) -> Vec<i64> {
        (0..BUCKET).filter(|i| self.0[(*i / 8) as usize] & (1 << (i % 8)) != 0).map(|i| bucket * BUCKET + i).collect()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_and_keys_sort_by_bucket() {
        let mut b = Bits::empty();
        for id in [2048, 2049, 3071, 2500] {
            b.set(id, true);
        }
        b.set(2500, false);
        assert_eq!(b.ids(2), [2048, 2049, 3071]);
        assert!(b.has(3071) && !b.has(2500) && !b.has(2050));
        assert_eq!(Bits::parse(b.bytes()), Some(b.clone()));
        assert_eq!(Bits::parse(&[0; 3]), None);
        assert_eq!((bucket_of(1023), bucket_of(1024)), (0, 1));
        assert!(key(Table::Sms, 9) < key(Table::Sms, 10));
        let (after, before) = range(Table::Sms);
        assert!(after < key(Table::Sms, 0) && key(Table::Sms, 999_999) < before);
        assert!(!(after < key(Table::Mms, 1) && key(Table::Mms, 1) < before));
        assert_eq!(bucket_of_key(&key(Table::Mms, 42)), Some(42));
    }
}
