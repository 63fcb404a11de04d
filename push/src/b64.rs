//! base64url (RFC 4648 §5) as Web Push uses it.
//!
//! Browsers emit it without padding; some server libraries pad. We always
//! emit without padding (RFC 8292 §3 and §3.2 require that for JWTs and `k=`)
//! and accept both on input.

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

const ENCODER: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false),
);

const DECODER: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(crate) fn encode(bytes: &[u8]) -> String {
    ENCODER.encode(bytes)
}

/// Decodes base64url with or without padding. Never panics on any input.
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    DECODER.decode(text.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_is_optional_on_input_and_absent_on_output() {
        assert_eq!(decode("AQ"), Some(vec![1]));
        assert_eq!(decode("AQ=="), Some(vec![1]));
        assert_eq!(encode(&[1]), "AQ");
        assert_eq!(decode("+/"), None, "standard alphabet is not base64url");
        assert_eq!(decode("A"), None);
    }
}
