//! The checks of the record-layer fuzz target (`engine/fuzz`), shared with the test that
//! replays its corpus (`engine/tests/tls_fuzz_corpus.rs`), so CI needs no fuzzer.
//!
//! Input: one byte choosing the version and suite and the mode, then either raw bytes from
//! a hostile server (mode 0: nothing authenticates, so this explores framing and lengths),
//! or a list of `type, length, bytes` that a mirror layer seals with the server's keys
//! (mode 1: this reaches the post-handshake messages, alerts and KeyUpdates). The stream is
//! cut in chunks whose sizes come from the input too. Checks: no panic; a record is never
//! longer than the lent buffer; plaintext stays inside its record; the session ends at the
//! first error and stays ended.

use super::compact::{Compact, Received};
use super::record::{DirectionKeys, RecordLayer, Suite, Version};
use super::RECORD_BUF_LEN;

const ALL: [(Version, Suite); 6] = [
    (Version::Tls13, Suite::Aes128Gcm),
    (Version::Tls13, Suite::Aes256Gcm),
    (Version::Tls13, Suite::Chacha20Poly1305),
    (Version::Tls12, Suite::Aes128Gcm),
    (Version::Tls12, Suite::Aes256Gcm),
    (Version::Tls12, Suite::Chacha20Poly1305),
];

fn keys(suite: Suite, version: Version, seed: u8) -> DirectionKeys {
    let key = [seed; 32];
    let secret = [seed ^ 0x55; 48];
    let secret = match version {
        Version::Tls13 => &secret[..suite.secret_len()],
        Version::Tls12 => &[][..],
    };
    // Lengths come from the suite: cannot fail.
    DirectionKeys::new(suite, &key[..suite.key_len()], &[seed; 12], 0, secret)
        .expect("lengths fit the suite")
}

/// Runs one input through the compact layer.
pub fn records(data: &[u8]) {
    let Some((&select, rest)) = data.split_first() else {
        return;
    };
    let (version, suite) = ALL[(select & 0x7F) as usize % ALL.len()];
    let client = RecordLayer::new(
        version,
        suite,
        keys(suite, version, 1),
        keys(suite, version, 2),
    );
    let mut client = Compact::new(client);
    let stream = if select & 0x80 == 0 {
        rest.to_vec()
    } else {
        let mut server = RecordLayer::new(
            version,
            suite,
            keys(suite, version, 2),
            keys(suite, version, 1),
        );
        sealed_stream(&mut server, rest)
    };
    feed(&mut client, &stream);
}

/// Seals `type, len (u16), bytes` items with the server's keys.
fn sealed_stream(server: &mut RecordLayer, mut spec: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let [typ, hi, lo, rest @ ..] = spec {
        let len = (u16::from_be_bytes([*hi, *lo]) as usize).min(rest.len());
        let (plain, tail) = rest.split_at(len);
        if server.seal(*typ, plain, &mut out).is_err() {
            break;
        }
        spec = tail;
    }
    out
}

/// Feeds `stream` in chunks, as the reactor would: whole records only, from a buffer of
/// the lent size.
fn feed(client: &mut Compact, stream: &[u8]) {
    let mut buf = vec![0u8; RECORD_BUF_LEN];
    let mut used = 0;
    let mut at = 0;
    let mut reply = Vec::new();
    let mut chunk = 1;
    while at < stream.len() {
        // Chunk sizes from the stream itself: 1 to 4096 bytes.
        chunk = (chunk * 31 + stream[at] as usize) % 4096 + 1;
        let n = chunk.min(stream.len() - at).min(buf.len() - used);
        buf[used..used + n].copy_from_slice(&stream[at..at + n]);
        used += n;
        at += n;
        loop {
            let len = match client.record_len(&buf[..used]) {
                Ok(Some(len)) => len,
                Ok(None) if used < buf.len() => break,
                // A full buffer must have held a whole record.
                Ok(None) => panic!("a record longer than the lent buffer was accepted"),
                Err(_) => return,
            };
            assert!(len <= RECORD_BUF_LEN);
            match client.handle_record(&mut buf[..len], &mut reply) {
                Ok(Received::Data { start, end }) => assert!(start <= end && end <= len),
                Ok(Received::Nothing) => {}
                Ok(Received::CloseNotify) | Err(_) => return,
            }
            reply.clear();
            buf.copy_within(len..used, 0);
            used -= len;
        }
    }
}
