//! A structural check of untrusted CBOR, run before the protocol decoder.
//!
//! This is a small hand-written walker rather than minicbor's `Decoder`.
//! minicbor's `skip()` is iterative but does not report nesting depth, and
//! its typed readers hide a string's declared length when the input is too
//! short, so we could neither bound depth nor say which declared length was
//! absurd. The walker keeps its own explicit stack, capped at
//! `Limits::max_cbor_depth` entries, so 100 000 nested arrays cost neither
//! call stack nor more than a few hundred bytes of heap. It never allocates
//! for a declared length: every length is compared with the remaining input
//! first.

use super::reader::Reader;
use super::{GuardError, Limits};

/// One open container (or tag, or indefinite-length string) on the walker's stack.
#[derive(Debug, Clone, Copy)]
enum Open {
    /// A definite-length array or map (map entries count twice), or a tag
    /// (one item), with the number of items still to come.
    Items(u64),
    /// An indefinite-length array or map, closed by a break byte. For a map,
    /// the number of items read so far must be even at the break.
    IndefiniteItems { is_map: bool, read: u64 },
    /// An indefinite-length byte (2) or text (3) string: definite-length
    /// chunks of the same major type until a break.
    IndefiniteString { major: u8 },
}

const BREAK: u8 = 0xff;

/// Checks that `bytes` is exactly one well-formed CBOR item within `limits`:
/// nesting depth, container and string lengths (declared lengths are refused
/// when they exceed the remaining input, before any allocation), valid UTF-8
/// in text strings, well-formed indefinite-length items and tags, and no
/// trailing bytes.
pub fn check_cbor(bytes: &[u8], limits: &Limits) -> Result<(), GuardError> {
    super::check_frame_size(bytes.len(), limits)?;
    let mut reader = Reader::new(bytes);
    let mut stack: Vec<Open> = Vec::new();
    let mut started = false;
    loop {
        while let Some(Open::Items(0)) = stack.last() {
            stack.pop();
        }
        if started && stack.is_empty() {
            break;
        }
        started = true;

        let initial = reader.u8("CBOR item")?;
        if initial == BREAK {
            match stack.pop() {
                Some(Open::IndefiniteString { .. }) => continue,
                Some(Open::IndefiniteItems { is_map, read }) => {
                    if is_map && read % 2 != 0 {
                        return Err(GuardError::Malformed(
                            "CBOR indefinite-length map with a key but no value",
                        ));
                    }
                    continue;
                }
                _ => {
                    return Err(GuardError::Malformed(
                        "CBOR break outside an indefinite item",
                    ))
                }
            }
        }

        let major = initial >> 5;
        let info = initial & 0x1f;
        if let Some(Open::IndefiniteString { major: outer }) = stack.last() {
            if major != *outer || info == 31 {
                return Err(GuardError::Malformed(
                    "CBOR indefinite-length string holds something other than a definite chunk of its type",
                ));
            }
        }
        match stack.last_mut() {
            Some(Open::Items(left)) => *left -= 1,
            Some(Open::IndefiniteItems { read, .. }) => *read += 1,
            _ => {}
        }

        let argument = read_argument(&mut reader, major, info)?;
        match (major, argument) {
            (0 | 1, Some(_)) => {}
            (2 | 3, Some(len)) => {
                if len > limits.max_cbor_string_bytes as u64 {
                    return Err(GuardError::TooLong {
                        what: "CBOR string (max_cbor_string_bytes)",
                        len,
                        limit: limits.max_cbor_string_bytes,
                    });
                }
                let content = reader.take(len, "CBOR string")?;
                if major == 3 && std::str::from_utf8(content).is_err() {
                    return Err(GuardError::Malformed("CBOR text string is not UTF-8"));
                }
            }
            (2 | 3, None) => push(&mut stack, Open::IndefiniteString { major }, limits)?,
            (4 | 5, Some(len)) => {
                if len > limits.max_cbor_container_len as u64 {
                    return Err(GuardError::TooMany {
                        what: "CBOR array or map (max_cbor_container_len)",
                        count: len,
                        limit: limits.max_cbor_container_len,
                    });
                }
                // Every item takes at least one byte.
                let items = if major == 5 { len * 2 } else { len };
                if items > reader.remaining() as u64 {
                    return Err(GuardError::LengthExceedsInput {
                        what: "CBOR array or map",
                        declared: len,
                        remaining: reader.remaining(),
                    });
                }
                push(&mut stack, Open::Items(items), limits)?;
            }
            (4 | 5, None) => push(
                &mut stack,
                Open::IndefiniteItems {
                    is_map: major == 5,
                    read: 0,
                },
                limits,
            )?,
            (6, Some(_)) => push(&mut stack, Open::Items(1), limits)?,
            (7, Some(value)) => {
                if info == 24 && value < 32 {
                    return Err(GuardError::Malformed("CBOR two-byte simple value below 32"));
                }
            }
            _ => {
                return Err(GuardError::Malformed(
                    "CBOR indefinite length on a type without one",
                ))
            }
        }
    }
    if !reader.is_empty() {
        return Err(GuardError::TrailingBytes {
            what: "CBOR item",
            count: reader.remaining(),
        });
    }
    Ok(())
}

/// Reads the argument that follows an initial byte; `None` means
/// indefinite length (additional information 31).
fn read_argument(reader: &mut Reader<'_>, major: u8, info: u8) -> Result<Option<u64>, GuardError> {
    let width = match info {
        0..=23 => return Ok(Some(u64::from(info))),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        28..=30 => {
            return Err(GuardError::Malformed(
                "CBOR reserved additional information",
            ))
        }
        _ => {
            return match major {
                2..=5 => Ok(None),
                _ => Err(GuardError::Malformed(
                    "CBOR indefinite length on a type without one",
                )),
            }
        }
    };
    let bytes = reader.take(width, "CBOR argument")?;
    Ok(Some(
        bytes
            .iter()
            .fold(0u64, |value, &byte| (value << 8) | u64::from(byte)),
    ))
}

fn push(stack: &mut Vec<Open>, open: Open, limits: &Limits) -> Result<(), GuardError> {
    if stack.len() >= limits.max_cbor_depth {
        return Err(GuardError::CborTooDeep {
            limit: limits.max_cbor_depth,
        });
    }
    stack.push(open);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8]) -> Result<(), GuardError> {
        check_cbor(bytes, &Limits::default())
    }

    #[test]
    fn accepts_well_formed_items() {
        let mut buf = Vec::new();
        let mut enc = minicbor::Encoder::new(&mut buf);
        enc.map(3)
            .and_then(|e| e.str("type"))
            .and_then(|e| e.str("sync"))
            .and_then(|e| e.str("data"))
            .and_then(|e| e.bytes(&[1, 2, 3]))
            .and_then(|e| e.str("list"))
            .and_then(|e| e.array(2))
            .and_then(|e| e.u64(u64::MAX))
            .and_then(|e| e.f64(1.5))
            .expect("encoding into a Vec cannot fail");
        assert_eq!(check(&buf), Ok(()));
        // Indefinite-length array holding an indefinite-length text string, and a tag.
        assert_eq!(
            check(&[0x9f, 0x7f, 0x61, b'a', 0x61, b'b', 0xff, 0xc1, 0x01, 0xff]),
            Ok(())
        );
        assert_eq!(check(&[0xa0]), Ok(()));
        assert_eq!(check(&[0xf6]), Ok(()));
    }

    #[test]
    fn refuses_malformed_items() {
        assert_eq!(check(&[]), Err(GuardError::Truncated { what: "CBOR item" }));
        assert_eq!(
            check(&[0x82, 0x01]),
            Err(GuardError::LengthExceedsInput {
                what: "CBOR array or map",
                declared: 2,
                remaining: 1
            })
        );
        assert_eq!(
            check(&[0x9f, 0x01]),
            Err(GuardError::Truncated { what: "CBOR item" })
        );
        assert!(matches!(
            check(&[0x01, 0x02]),
            Err(GuardError::TrailingBytes { count: 1, .. })
        ));
        assert!(matches!(check(&[0xff]), Err(GuardError::Malformed(_))));
        assert!(matches!(check(&[0x1c]), Err(GuardError::Malformed(_))));
        assert!(matches!(check(&[0x1f]), Err(GuardError::Malformed(_))));
        assert!(matches!(check(&[0xdf]), Err(GuardError::Malformed(_))));
        // Text that is not UTF-8.
        assert!(matches!(
            check(&[0x62, 0xc3, 0x28]),
            Err(GuardError::Malformed(_))
        ));
        // An indefinite map with a dangling key.
        assert!(matches!(
            check(&[0xbf, 0x01, 0xff]),
            Err(GuardError::Malformed(_))
        ));
        // A byte-string chunk inside an indefinite text string.
        assert!(matches!(
            check(&[0x7f, 0x41, 0x00, 0xff]),
            Err(GuardError::Malformed(_))
        ));
        // A simple value encoded in two bytes must be at least 32.
        assert!(matches!(
            check(&[0xf8, 0x10]),
            Err(GuardError::Malformed(_))
        ));
    }

    #[test]
    fn refuses_absurd_lengths_before_reading() {
        // A byte string claiming 2^60 bytes.
        let mut bytes = vec![0x5b];
        bytes.extend(&(1u64 << 60).to_be_bytes());
        assert!(matches!(
            check(&bytes),
            Err(GuardError::TooLong { len, .. }) if len == 1 << 60
        ));
        let lenient = Limits {
            max_cbor_string_bytes: usize::MAX,
            max_cbor_container_len: usize::MAX,
            ..Limits::default()
        };
        assert_eq!(
            check_cbor(&bytes, &lenient),
            Err(GuardError::LengthExceedsInput {
                what: "CBOR string",
                declared: 1 << 60,
                remaining: 0
            })
        );
        // An array claiming u32::MAX items.
        assert!(matches!(
            check_cbor(&[0x9a, 0xff, 0xff, 0xff, 0xff, 0x00], &lenient),
            Err(GuardError::LengthExceedsInput { declared, .. }) if declared == u64::from(u32::MAX)
        ));
    }

    #[test]
    fn depth_is_counted_for_arrays_maps_tags_and_strings() {
        let limits = Limits {
            max_cbor_depth: 2,
            ..Limits::default()
        };
        assert_eq!(check_cbor(&[0x81, 0x81, 0x01], &limits), Ok(()));
        assert_eq!(
            check_cbor(&[0x81, 0x81, 0x81, 0x01], &limits),
            Err(GuardError::CborTooDeep { limit: 2 })
        );
        assert_eq!(
            check_cbor(&[0xc1, 0xc1, 0xc1, 0x01], &limits),
            Err(GuardError::CborTooDeep { limit: 2 })
        );
        assert_eq!(
            check_cbor(&[0x81, 0xa1, 0x01, 0x5f, 0xff], &limits),
            Err(GuardError::CborTooDeep { limit: 2 })
        );
    }
}
