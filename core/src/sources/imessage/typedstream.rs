//! A decoder for the text of Messages' `attributedBody`: an `NSAttributedString` archived
//! with `NSArchiver` in the "typedstream" format (version 4), which recent macOS writes
//! instead of filling `message.text`.
//!
//! The format, as NeXT/Apple's `typedstream` specifies it:
//! - a header: the stream version as an integer (4), the signature `streamtyped` as a
//!   length-prefixed string, and the system version as an integer (1000);
//! - integers: one signed byte when it is not a tag; tag `0x81` then a little-endian `i16`,
//!   tag `0x82` then a little-endian `i32`;
//! - tags: `0x84` a new entry follows, `0x85` nil, `0x86` end of an object; a byte from
//!   `0x92` up is a reference to an earlier entry, numbered from `0x92`;
//! - shared strings (type encodings and class names) get their own table; objects and
//!   classes share another, numbered in the order they appear;
//! - a value is preceded by its type encoding: `@` an object, `+` a length-prefixed byte
//!   string;
//! - an object is `0x84`, its class (`0x84`, the name as a shared string, a version
//!   integer, then its superclass the same way, ending with nil, or a reference to a class
//!   seen before), its values, and `0x86`.
//!
//! An `NSAttributedString` archives its string first (an `NSString` whose one value is the
//! UTF-8 bytes under type `+`), then the attribute runs, which the text does not need. This
//! decoder reads exactly that prefix and refuses anything else with a typed error (never
//! the blob's content).

use std::fmt;

const TAG_INT16: u8 = 0x81;
const TAG_INT32: u8 = 0x82;
const TAG_NEW: u8 = 0x84;
const TAG_NIL: u8 = 0x85;
const TAG_END: u8 = 0x86;
const REFERENCE_BASE: u8 = 0x92;
const SIGNATURE: &[u8] = b"streamtyped";
const STREAM_VERSION: i64 = 4;
const SYSTEM_VERSION: i64 = 1000;

/// Why a blob could not be decoded. Names the place, never the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The blob ended inside a value.
    Truncated,
    /// Not a version-4 typedstream (`streamtyped` signature).
    NotTypedstream,
    /// A byte where the format allows none (what was expected).
    Unexpected(&'static str),
    /// A reference to an entry that was never defined.
    BadReference,
    /// The root object is not an attributed string (or its string not an `NSString`).
    NotAttributedString,
    /// The string's bytes are not UTF-8.
    NotUtf8,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("attributedBody: truncated typedstream"),
            DecodeError::NotTypedstream => f.write_str("attributedBody: not a version 4 typedstream"),
            DecodeError::Unexpected(what) => write!(f, "attributedBody: expected {what}"),
            DecodeError::BadReference => f.write_str("attributedBody: reference to an undefined entry"),
            DecodeError::NotAttributedString => f.write_str("attributedBody: not an archived NSAttributedString"),
            DecodeError::NotUtf8 => f.write_str("attributedBody: string is not UTF-8"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The plain text of an archived `NSAttributedString`.
pub fn attributed_string_text(blob: &[u8]) -> Result<String, DecodeError> {
    let mut r = Reader { bytes: blob, at: 0, shared: Vec::new(), objects: Vec::new() };
    r.header()?;
    r.expect_type(b"@")?;
    let root = r.object_classes()?;
    if !root.iter().any(|c| c == "NSAttributedString") {
        return Err(DecodeError::NotAttributedString);
    }
    r.expect_type(b"@")?;
    let string = r.object_classes()?;
    if !string.iter().any(|c| c == "NSString") {
        return Err(DecodeError::NotAttributedString);
    }
    r.expect_type(b"+")?;
    let bytes = r.counted_bytes()?;
    if r.byte()? != TAG_END {
        return Err(DecodeError::Unexpected("the end of the string object"));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NotUtf8)
}

/// One entry of the object table: a class (its name) or an object.
enum Entry {
    Class { name: String, superclasses: Vec<String> },
    Object,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    shared: Vec<Vec<u8>>,
    objects: Vec<Entry>,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.bytes.get(self.at).ok_or(DecodeError::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(DecodeError::Truncated)?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn int_after(&mut self, first: u8) -> Result<i64, DecodeError> {
        match first {
            TAG_INT16 => Ok(i16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")) as i64),
            TAG_INT32 => Ok(i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as i64),
            0x80..=0x91 => Err(DecodeError::Unexpected("an integer")),
            b => Ok(b as i8 as i64),
        }
    }

    fn int(&mut self) -> Result<i64, DecodeError> {
        let first = self.byte()?;
        self.int_after(first)
    }

    /// A length-prefixed byte string (not shared).
    fn counted_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.int()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Unexpected("a non-negative length"))?;
        self.take(len)
    }

    fn header(&mut self) -> Result<(), DecodeError> {
        let version = self.int().map_err(|_| DecodeError::NotTypedstream)?;
        let signature = self.counted_bytes().map_err(|_| DecodeError::NotTypedstream)?;
        if version != STREAM_VERSION || signature != SIGNATURE {
            return Err(DecodeError::NotTypedstream);
        }
        if self.int()? != SYSTEM_VERSION {
            return Err(DecodeError::NotTypedstream);
        }
        Ok(())
    }

    /// A shared string: new (and remembered) or a reference to one read before.
    fn shared_string(&mut self) -> Result<Vec<u8>, DecodeError> {
        match self.byte()? {
            TAG_NEW => {
                let s = self.counted_bytes()?.to_vec();
                self.shared.push(s.clone());
                Ok(s)
            }
            b if b >= REFERENCE_BASE => {
                self.shared.get(usize::from(b - REFERENCE_BASE)).cloned().ok_or(DecodeError::BadReference)
            }
            _ => Err(DecodeError::Unexpected("a shared string")),
        }
    }

    fn expect_type(&mut self, encoding: &[u8]) -> Result<(), DecodeError> {
        let found = self.shared_string()?;
        if found != encoding {
            return Err(DecodeError::Unexpected(match encoding {
                b"@" => "an object value",
                _ => "a byte-string value",
            }));
        }
        Ok(())
    }

    /// A class and its superclasses, most derived first.
    fn class_chain(&mut self) -> Result<Vec<String>, DecodeError> {
        match self.byte()? {
            TAG_NEW => {
                let name = String::from_utf8(self.shared_string()?).map_err(|_| DecodeError::Unexpected("a class name"))?;
                let _version = self.int()?;
                let index = self.objects.len();
                self.objects.push(Entry::Class { name: name.clone(), superclasses: Vec::new() });
                let superclasses = self.class_chain()?;
                self.objects[index] = Entry::Class { name: name.clone(), superclasses: superclasses.clone() };
                Ok(std::iter::once(name).chain(superclasses).collect())
            }
            TAG_NIL => Ok(Vec::new()),
            b if b >= REFERENCE_BASE => match self.objects.get(usize::from(b - REFERENCE_BASE)) {
                Some(Entry::Class { name, superclasses }) => {
                    Ok(std::iter::once(name.clone()).chain(superclasses.iter().cloned()).collect())
                }
                _ => Err(DecodeError::BadReference),
            },
            _ => Err(DecodeError::Unexpected("a class")),
        }
    }

    /// The start of a new object: its class chain.
    fn object_classes(&mut self) -> Result<Vec<String>, DecodeError> {
        if self.byte()? != TAG_NEW {
            return Err(DecodeError::Unexpected("a new object"));
        }
        self.objects.push(Entry::Object);
        self.class_chain()
    }
}

/// Writes `text` as Messages archives it in `attributedBody`, following the same format;
/// for building `chat.db` fixtures.
#[cfg(any(test, feature = "tools"))]
pub fn encode_attributed_string(text: &str) -> Vec<u8> {
    fn int(out: &mut Vec<u8>, v: i64) {
        if (-110..=127).contains(&v) {
            out.push(v as i8 as u8);
        } else if let Ok(v) = i16::try_from(v) {
            out.push(TAG_INT16);
            out.extend_from_slice(&v.to_le_bytes());
        } else {
            out.push(TAG_INT32);
            out.extend_from_slice(&(v as i32).to_le_bytes());
        }
    }
    fn counted(out: &mut Vec<u8>, bytes: &[u8]) {
        int(out, bytes.len() as i64);
        out.extend_from_slice(bytes);
    }
    fn new_shared(out: &mut Vec<u8>, s: &[u8]) {
        out.push(TAG_NEW);
        counted(out, s);
    }
    let mut out = Vec::new();
    int(&mut out, STREAM_VERSION);
    counted(&mut out, SIGNATURE);
    int(&mut out, SYSTEM_VERSION);
    // shared strings: 0 "@", 1 NSAttributedString, 2 NSObject, 3 NSString, 4 "+"
    // objects:        0 the attributed string, 1 its class, 2 NSObject, 3 the string, 4 NSString
    new_shared(&mut out, b"@");
    out.push(TAG_NEW);
    out.push(TAG_NEW);
    new_shared(&mut out, b"NSAttributedString");
    int(&mut out, 0);
    out.push(TAG_NEW);
    new_shared(&mut out, b"NSObject");
    int(&mut out, 0);
    out.push(TAG_NIL);
    out.push(REFERENCE_BASE); // "@"
    out.push(TAG_NEW);
    out.push(TAG_NEW);
    new_shared(&mut out, b"NSString");
    int(&mut out, 1);
    out.push(REFERENCE_BASE + 2); // class NSObject
    new_shared(&mut out, b"+");
    counted(&mut out, text.as_bytes());
    out.push(TAG_END);
    // The attribute runs follow in a real blob; the decoder stops before them. One run
    // (`iI`: start, length) over the whole string and an empty dictionary stand for them.
    new_shared(&mut out, b"iI");
    int(&mut out, 1);
    int(&mut out, text.chars().map(char::len_utf16).sum::<usize>() as i64);
    out.push(REFERENCE_BASE); // "@"
    out.push(TAG_NEW);
    out.push(TAG_NEW);
    new_shared(&mut out, b"NSDictionary");
    int(&mut out, 0);
    out.push(REFERENCE_BASE + 2);
    new_shared(&mut out, b"i");
    int(&mut out, 0);
    out.push(TAG_END);
    out.push(TAG_END);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_the_specification_describes() {
        for text in ["hi", "", "Déjà vu 🙂 — ünïcode", &"long ".repeat(100), &"x".repeat(40_000)] {
            assert_eq!(attributed_string_text(&encode_attributed_string(text)).as_deref(), Ok(text));
        }
    }

    #[test]
    fn decodes_a_hand_written_blob_byte_by_byte() {
        // Written out from the format description, independently of the encoder above.
        let mut blob = vec![0x04, 0x0b];
        blob.extend_from_slice(b"streamtyped");
        blob.extend_from_slice(&[0x81, 0xe8, 0x03, 0x84, 0x01, b'@', 0x84, 0x84, 0x84, 0x19]);
        blob.extend_from_slice(b"NSMutableAttributedString");
        blob.extend_from_slice(&[0x00, 0x84, 0x84, 0x12]);
        blob.extend_from_slice(b"NSAttributedString");
        blob.extend_from_slice(&[0x00, 0x84, 0x84, 0x08]);
        blob.extend_from_slice(b"NSObject");
        blob.extend_from_slice(&[0x00, 0x85, 0x92, 0x84, 0x84, 0x84, 0x0f]);
        blob.extend_from_slice(b"NSMutableString");
        blob.extend_from_slice(&[0x01, 0x84, 0x84, 0x08]);
        blob.extend_from_slice(b"NSString");
        blob.extend_from_slice(&[0x01, 0x95, 0x84, 0x01, b'+', 0x05]);
        blob.extend_from_slice(b"Hello");
        blob.push(0x86);
        assert_eq!(attributed_string_text(&blob).as_deref(), Ok("Hello"));
    }

    #[test]
    fn refuses_what_is_not_an_attributed_string_with_a_typed_error() {
        let good = encode_attributed_string("secret words");
        assert_eq!(attributed_string_text(b""), Err(DecodeError::NotTypedstream));
        assert_eq!(attributed_string_text(b"bplist00"), Err(DecodeError::NotTypedstream));
        let inside_text = good.windows(6).position(|w| w == b"secret").unwrap() + 3;
        for cut in [20, 40, inside_text] {
            let e = attributed_string_text(&good[..cut]).unwrap_err();
            assert!(matches!(e, DecodeError::Truncated | DecodeError::Unexpected(_)), "{e:?}");
            assert!(!e.to_string().contains("secret"));
        }
        let mut wrong_class = good.clone();
        let at = wrong_class.windows(18).position(|w| w == b"NSAttributedString").unwrap();
        wrong_class[at..at + 2].copy_from_slice(b"XX");
        assert_eq!(attributed_string_text(&wrong_class), Err(DecodeError::NotAttributedString));
        let mut bad_ref = good.clone();
        let at = bad_ref.windows(8).position(|w| w == b"NSString").unwrap();
        bad_ref[at + 9] = 0xf0; // the superclass reference
        assert_eq!(attributed_string_text(&bad_ref), Err(DecodeError::BadReference));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let good = encode_attributed_string("some text");
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut blob = good.clone();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state as usize) % blob.len();
                blob[i] = (state >> 32) as u8;
            }
            let _ = attributed_string_text(&blob);
        }
    }
}
