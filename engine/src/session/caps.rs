//! The capabilities a session acts on, as bit flags (no strings kept).

use imap_codec_lite::Capabilities;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps(u16);

impl Caps {
    pub const IDLE: Caps = Caps(1 << 0);
    pub const NOTIFY: Caps = Caps(1 << 1);
    pub const STARTTLS: Caps = Caps(1 << 2);
    pub const LOGINDISABLED: Caps = Caps(1 << 3);
    pub const AUTH_PLAIN: Caps = Caps(1 << 4);
    pub const AUTH_XOAUTH2: Caps = Caps(1 << 5);
    pub const AUTH_OAUTHBEARER: Caps = Caps(1 << 6);
    pub const SASL_IR: Caps = Caps(1 << 7);
    pub const LITERAL_PLUS: Caps = Caps(1 << 8);
    pub const LITERAL_MINUS: Caps = Caps(1 << 9);
    pub const ID: Caps = Caps(1 << 10);

    const NAMES: [(&'static [u8], Caps); 11] = [
        (b"IDLE", Caps::IDLE),
        (b"NOTIFY", Caps::NOTIFY),
        (b"STARTTLS", Caps::STARTTLS),
        (b"LOGINDISABLED", Caps::LOGINDISABLED),
        (b"AUTH=PLAIN", Caps::AUTH_PLAIN),
        (b"AUTH=XOAUTH2", Caps::AUTH_XOAUTH2),
        (b"AUTH=OAUTHBEARER", Caps::AUTH_OAUTHBEARER),
        (b"SASL-IR", Caps::SASL_IR),
        (b"LITERAL+", Caps::LITERAL_PLUS),
        (b"LITERAL-", Caps::LITERAL_MINUS),
        (b"ID", Caps::ID),
    ];

    pub fn from_list(list: &Capabilities<'_>) -> Caps {
        let mut caps = Caps::default();
        for atom in list.iter() {
            for (name, flag) in Caps::NAMES {
                if atom.eq_ignore_ascii_case(name) {
                    caps.0 |= flag.0;
                }
            }
        }
        caps
    }

    /// The raw bits (for a handover).
    pub fn bits(self) -> u16 {
        self.0
    }

    /// Caps from [`Caps::bits`].
    pub fn from_bits(bits: u16) -> Caps {
        Caps(bits)
    }

    pub fn has(self, flag: Caps) -> bool {
        self.0 & flag.0 == flag.0
    }
}
