//! Property-ish tests with a seeded generator (no `rand` crate): random
//! bytes and IMAP-shaped token soup never panic the framer or the parser,
//! and random credentials always encode into commands that parse back.

use imap_codec_lite::fuzz_check::{self, XorShift};
use imap_codec_lite::{parse_response, Command, Framer, LiteralMode, Sasl};

fn random_bytes(rng: &mut XorShift, max_len: usize) -> Vec<u8> {
    let len = rng.below_incl(max_len + 1) - 1;
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Pieces of IMAP that make random streams reach deep into the parser.
const TOKENS: &[&[u8]] = &[
    b"* ",
    b"+ ",
    b"A1 ",
    b"OK",
    b"NO",
    b"BAD",
    b"BYE",
    b"PREAUTH",
    b" ",
    b"\r\n",
    b"\r",
    b"\n",
    b"{3}\r\n",
    b"{0}\r\n",
    b"{2+}\r\n",
    b"~{1}\r\n",
    b"{4294967296}\r\n",
    b"(",
    b")",
    b"\"",
    b"\\",
    b"[",
    b"]",
    b"0",
    b"7",
    b"4294967295",
    b"99999999999",
    b"FETCH",
    b"EXISTS",
    b"EXPUNGE",
    b"RECENT",
    b"CAPABILITY",
    b"ENABLED",
    b"FLAGS",
    b"LIST",
    b"STATUS",
    b"MESSAGES",
    b"UIDNEXT",
    b"UIDVALIDITY",
    b"UNSEEN",
    b"NIL",
    b"ALERT",
    b"PERMANENTFLAGS",
    b"READ-ONLY",
    b"\\Seen",
    b"INBOX",
    b"BODY[]",
    b"\x00",
    b"\xff",
    b"text",
];

fn token_soup(rng: &mut XorShift, max_tokens: usize) -> Vec<u8> {
    let n = rng.below_incl(max_tokens);
    let mut v = Vec::new();
    for _ in 0..n {
        v.extend_from_slice(TOKENS[rng.below_incl(TOKENS.len()) - 1]);
    }
    v
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift::new(0x1234_5678);
    for _ in 0..3000 {
        let data = random_bytes(&mut rng, 300);
        let _ = parse_response(&data);
        let _ = Framer::new().advance(&data);
        fuzz_check::response(&data);
    }
}

#[test]
fn token_soup_never_panics() {
    let mut rng = XorShift::new(42);
    let mut parsed = 0;
    for _ in 0..5000 {
        let mut data = token_soup(&mut rng, 40);
        let _ = parse_response(&data);
        data.extend_from_slice(b"\r\n");
        parsed += usize::from(parse_response(&data).is_ok());
        data.insert(0, rng.next_u64() as u8);
        fuzz_check::response(&data);
    }
    // The soup is IMAP-shaped enough that some of it parses.
    assert!(parsed > 50, "{parsed}");
}

#[test]
fn random_credentials_round_trip() {
    let mut rng = XorShift::new(7);
    for i in 0..3000u32 {
        let user = random_bytes(&mut rng, 40);
        let pass = random_bytes(&mut rng, 1200);
        let host = random_bytes(&mut rng, 20);
        let mode = [
            LiteralMode::Sync,
            LiteralMode::NonSync,
            LiteralMode::LiteralMinus,
        ][i as usize % 3];
        let sasl_ir = i % 2 == 0;
        let cmds = [
            Command::Login {
                username: &user,
                password: &pass,
            },
            Command::Examine { mailbox: &pass },
            Command::Authenticate {
                mechanism: Sasl::Plain {
                    username: &user,
                    password: &pass,
                },
                sasl_ir,
            },
            Command::Authenticate {
                mechanism: Sasl::XOAuth2 {
                    username: &user,
                    token: &pass,
                },
                sasl_ir,
            },
            Command::Authenticate {
                mechanism: Sasl::OAuthBearer {
                    username: &user,
                    host: &host,
                    port: i as u16,
                    token: &pass,
                },
                sasl_ir,
            },
        ];
        for cmd in &cmds {
            fuzz_check::check_command(i, cmd, mode);
        }
        let mut data = vec![i as u8];
        data.extend_from_slice(&random_bytes(&mut rng, 200));
        fuzz_check::command(&data);
    }
}
