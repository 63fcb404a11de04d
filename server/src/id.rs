//! The public id of a subscription: 16 random bytes, shown as 32 lowercase hex digits.
//!
//! Why a type: the id is a capability (GET and DELETE need nothing else), kept in many
//! places per subscription (registry maps, journal record, push subscription, pool
//! keys). As a `Copy` array it costs no allocation per copy, and only the API and the
//! journal turn it into text and back ([`SubscriptionId::parse`], `Display`, serde).
//! The journal keeps the same hex string as before, so older binaries read its records.
//!
//! Never log it: `Debug` shows only the first four hex digits, so a stray `{:?}` in an
//! error does not hand out the capability.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes in an id.
pub const ID_BYTES: usize = 16;

/// A subscription id. `Display` is the 32 lowercase hex digits the API and the journal
/// use; `Debug` is truncated.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId([u8; ID_BYTES]);

/// Text that is not 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAnId;

impl fmt::Display for NotAnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a subscription id (32 hex digits)")
    }
}

impl std::error::Error for NotAnId {}

impl SubscriptionId {
    /// The id made of `bytes` (fresh random bytes, for a new subscription).
    pub const fn from_bytes(bytes: [u8; ID_BYTES]) -> SubscriptionId {
        SubscriptionId(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; ID_BYTES] {
        &self.0
    }

    /// Reads 32 lowercase hex digits, the only form the server ever shows: anything
    /// else names no subscription.
    pub fn parse(text: &str) -> Result<SubscriptionId, NotAnId> {
        let digits = text.as_bytes();
        if digits.len() != 2 * ID_BYTES {
            return Err(NotAnId);
        }
        let mut bytes = [0u8; ID_BYTES];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Ok(SubscriptionId(bytes))
    }
}

fn nibble(digit: u8) -> Result<u8, NotAnId> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        _ => Err(NotAnId),
    }
}

/// A test's id made of a short name (its bytes, zero-padded): readable in failures.
#[cfg(test)]
pub(crate) fn named(name: &str) -> SubscriptionId {
    let mut bytes = [0u8; ID_BYTES];
    let len = name.len().min(ID_BYTES);
    bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
    SubscriptionId(bytes)
}

impl FromStr for SubscriptionId {
    type Err = NotAnId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SubscriptionId::parse(text)
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubscriptionId({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

impl Serialize for SubscriptionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SubscriptionId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        SubscriptionId::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn hex_round_trips_in_lower_case() {
        let id = SubscriptionId::parse(HEX).unwrap();
        assert_eq!(id.as_bytes()[..3], [0x00, 0x11, 0x22]);
        assert_eq!(id.to_string(), HEX);
        assert_eq!(HEX.parse::<SubscriptionId>(), Ok(id));
    }

    #[test]
    fn anything_but_32_hex_digits_is_refused() {
        for text in [
            "",
            &HEX.to_uppercase(),
            &HEX[..31],
            &format!("{HEX}0"),
            "00112233445566778899aabbccddeefg",
            "0011223344556677 899aabbccddeeff",
            "+0112233445566778899aabbccddeeff",
            "é0112233445566778899aabbccddeef",
        ] {
            assert_eq!(SubscriptionId::parse(text), Err(NotAnId), "{text:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_whole_capability() {
        let id = SubscriptionId::parse(HEX).unwrap();
        let debug = format!("{id:?}");
        assert_eq!(debug, "SubscriptionId(0011…)");
        assert!(!debug.contains(&HEX[4..8]), "{debug}");
    }

    #[test]
    fn serde_keeps_the_hex_string_older_journals_hold() {
        let id = SubscriptionId::from_bytes([0xab; ID_BYTES]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(ID_BYTES)));
        assert_eq!(serde_json::from_str::<SubscriptionId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SubscriptionId>("\"not-hex\"").is_err());
        assert!(serde_json::from_str::<SubscriptionId>("17").is_err());
    }
}
