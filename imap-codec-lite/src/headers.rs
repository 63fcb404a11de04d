//! Reading what `UID FETCH ... (UID BODY.PEEK[HEADER.FIELDS (...)])` returns: the UID and
//! the header block of one FETCH response, its fields unfolded, and RFC 2047 encoded-words
//! decoded for display.
//!
//! RFCs to read first: RFC 3501 §7.4.2 (FETCH response, `msg-att`), RFC 5322 §2.2 (header
//! fields, folding), RFC 2047 (encoded-words), RFC 6532 (raw UTF-8 in header fields).
//!
//! Pure functions on borrowed bytes. They never panic on any input, and every output is
//! bounded by a named limit.

use std::borrow::Cow;

/// Longest unfolded field value kept for decoding; the rest is ignored. A client asks
/// the server for a bounded header block per message anyway (the engine: `HEADER_BLOCK_LEN_MAX`).
pub const FIELD_RAW_LEN_MAX: usize = 16 * 1024;

/// What one FETCH response carried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched<'a> {
    /// `UID n`, if present.
    pub uid: Option<u32>,
    /// The `BODY[HEADER.FIELDS (...)]` block, if present (`NIL` gives an empty block).
    pub block: Option<Cow<'a, [u8]>>,
}

/// Picks the UID and the header block out of the bytes between a FETCH response's outer
/// parentheses. Items it does not know are skipped; a malformed item ends the scan with
/// what was found before it.
///
/// ```abnf
/// msg-att         = "(" (msg-att-dynamic / msg-att-static)
///                   *(SP (msg-att-dynamic / msg-att-static)) ")"
/// msg-att-static  = ... / "UID" SP uniqueid /
///                   "BODY" section ["<" number ">"] SP nstring
/// nstring         = string / nil
/// string          = quoted / literal
/// ```
pub fn parse_fetch(attrs: &[u8]) -> Fetched<'_> {
    let mut c = Cur { buf: attrs, pos: 0 };
    let mut fetched = Fetched::default();
    loop {
        c.skip_spaces();
        if c.at_end() {
            return fetched;
        }
        let name = c.take_while(|b| !matches!(b, b' ' | b'[' | b'(' | b')' | b'"' | b'{'));
        if name.is_empty() {
            return fetched;
        }
        if name.eq_ignore_ascii_case(b"UID") {
            if !c.eat(b' ') {
                return fetched;
            }
            match c.number() {
                Some(uid) => fetched.uid = Some(uid),
                None => return fetched,
            }
            continue;
        }
        let mut header_fields = false;
        if c.peek() == Some(b'[') {
            let Some(section) = c.section() else {
                return fetched;
            };
            header_fields = contains_ignore_case(section, b"HEADER.FIELDS")
                && !contains_ignore_case(section, b"HEADER.FIELDS.NOT");
            if c.peek() == Some(b'<') {
                c.take_while(|b| b != b'>');
                if !c.eat(b'>') {
                    return fetched;
                }
            }
        }
        if !c.eat(b' ') {
            return fetched;
        }
        let body = name.eq_ignore_ascii_case(b"BODY") && header_fields;
        if body {
            match c.nstring() {
                Some(block) => fetched.block = Some(block),
                None => return fetched,
            }
        } else if !c.skip_value() {
            return fetched;
        }
    }
}

/// Calls `each(name, value)` for every field of a header block, in order, with the value
/// unfolded (RFC 5322 §2.2.3: CRLF before white space removed) and cut at
/// [`FIELD_RAW_LEN_MAX`]. Lines without a colon are skipped. `scratch` is reused for the
/// values.
pub fn for_each_field(block: &[u8], scratch: &mut Vec<u8>, mut each: impl FnMut(&[u8], &[u8])) {
    let mut name: Option<&[u8]> = None;
    scratch.clear();
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if name.is_some() {
                push_bounded(scratch, line);
            }
            continue;
        }
        if let Some(done) = name.take() {
            each(done, scratch);
        }
        scratch.clear();
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let field = trim(&line[..colon]);
            if !field.is_empty() {
                name = Some(field);
                push_bounded(scratch, &line[colon + 1..]);
            }
        }
    }
    if let Some(done) = name {
        each(done, scratch);
    }
}

fn push_bounded(out: &mut Vec<u8>, bytes: &[u8]) {
    let room = FIELD_RAW_LEN_MAX.saturating_sub(out.len());
    out.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// Calls `each` with every address in a `From` value: what is inside `<...>`, or, with no
/// angle brackets at all, each comma-separated part without comments.
///
/// ```abnf
/// from         = "From:" mailbox-list CRLF              ; RFC 5322 §3.6.2
/// mailbox      = name-addr / addr-spec
/// name-addr    = [display-name] angle-addr
/// angle-addr   = [CFWS] "<" addr-spec ">" [CFWS]
/// ```
pub fn for_each_address(value: &[u8], mut each: impl FnMut(&[u8])) {
    if value.contains(&b'<') {
        for part in value.split(|&b| b == b'<').skip(1) {
            if let Some(end) = part.iter().position(|&b| b == b'>') {
                each(trim(&part[..end]));
            }
        }
        return;
    }
    for part in value.split(|&b| b == b',') {
        let without_comment = match part.iter().position(|&b| b == b'(') {
            Some(open) => &part[..open],
            None => part,
        };
        let address = trim(without_comment);
        if !address.is_empty() {
            each(address);
        }
    }
}

/// Appends `raw` (an unstructured field value) to `out` for display: RFC 2047
/// encoded-words in UTF-8, US-ASCII or ISO-8859-1 decoded (B and Q forms), white space
/// between adjacent encoded-words dropped (§6.2), raw 8-bit bytes read as UTF-8 (RFC 6532,
/// invalid sequences replaced), control characters turned into spaces, runs of white space
/// collapsed, the ends trimmed. At most `len_max` bytes are appended, cut on a character
/// boundary and ended with `…` when cut.
pub fn decode_for_display(raw: &[u8], len_max: usize, out: &mut String) {
    let mut text = String::new();
    let mut rest = raw;
    let mut after_word = false;
    while !rest.is_empty() {
        let (gap, word, tail) = match next_encoded_word(rest) {
            Some((start, end, word)) => (&rest[..start], Some(word), &rest[end..]),
            None => (rest, None, &rest[rest.len()..]),
        };
        let gap_is_space = gap
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
        if !(after_word && word.is_some() && gap_is_space) {
            text.push_str(&String::from_utf8_lossy(gap));
        }
        if let Some(word) = word {
            word.decode_into(&mut text);
        }
        after_word = word.is_some();
        rest = tail;
        if text.len() > len_max.saturating_mul(2) + 64 {
            // Enough to fill the output however white space collapses below.
            break;
        }
    }
    let start = out.len();
    let mut space = false;
    for ch in text.trim().chars() {
        let ch = if ch.is_control() || ch.is_whitespace() {
            ' '
        } else {
            ch
        };
        if ch == ' ' && space {
            continue;
        }
        space = ch == ' ';
        if out.len() - start + ch.len_utf8() > len_max {
            truncate_with_ellipsis(out, start, len_max);
            return;
        }
        out.push(ch);
    }
}

/// Cuts `out[start..]` so that it plus `…` fits `len_max` bytes, on a char boundary.
fn truncate_with_ellipsis(out: &mut String, start: usize, len_max: usize) {
    const ELLIPSIS: char = '\u{2026}';
    let mut keep = (start + len_max.saturating_sub(ELLIPSIS.len_utf8())).min(out.len());
    while !out.is_char_boundary(keep) {
        keep -= 1;
    }
    out.truncate(keep);
    if len_max >= ELLIPSIS.len_utf8() {
        out.push(ELLIPSIS);
    }
}

/// One encoded-word, its parts borrowed.
///
/// ```abnf
/// encoded-word = "=?" charset "?" encoding "?" encoded-text "?="   ; RFC 2047 §2
/// charset      = token    ; RFC 2231 §5 adds ["*" language]
/// encoding     = token    ; "B" or "Q"
/// ```
#[derive(Clone, Copy, Debug)]
struct EncodedWord<'a> {
    /// The whole word, shown as is when its charset is unknown.
    raw: &'a [u8],
    charset: &'a [u8],
    base64: bool,
    text: &'a [u8],
}

/// Finds the first encoded-word: its start, its end and its parts.
fn next_encoded_word(bytes: &[u8]) -> Option<(usize, usize, EncodedWord<'_>)> {
    let mut from = 0;
    while let Some(at) = find(&bytes[from..], b"=?") {
        let start = from + at;
        if let Some((len, word)) = encoded_word_at(&bytes[start..]) {
            return Some((start, start + len, word));
        }
        from = start + 2;
    }
    None
}

fn encoded_word_at(bytes: &[u8]) -> Option<(usize, EncodedWord<'_>)> {
    let body = bytes.get(2..)?;
    let q1 = body.iter().position(|&b| b == b'?')?;
    let charset = &body[..q1];
    let encoding = *body.get(q1 + 1)?;
    if body.get(q1 + 2) != Some(&b'?') {
        return None;
    }
    let text_start = q1 + 3;
    let text_len = find(body.get(text_start..)?, b"?=")?;
    let text = &body[text_start..text_start + text_len];
    // RFC 2047 §2: tokens hold no white space or specials; an encoded-word is at most 75
    // characters, which some mailers ignore, so only the shape is checked.
    let token = |t: &[u8]| !t.is_empty() && t.iter().all(|b| b.is_ascii_graphic() && *b != b'?');
    if !token(charset) || text.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let base64 = match encoding {
        b'B' | b'b' => true,
        b'Q' | b'q' => false,
        _ => return None,
    };
    let len = 2 + text_start + text_len + 2;
    Some((
        len,
        EncodedWord {
            raw: &bytes[..len],
            charset,
            base64,
            text,
        },
    ))
}

impl EncodedWord<'_> {
    fn decode_into(&self, out: &mut String) {
        let charset = match self.charset.iter().position(|&b| b == b'*') {
            Some(star) => &self.charset[..star],
            None => self.charset,
        };
        let decoded = if self.base64 {
            decode_base64(self.text)
        } else {
            Some(decode_q(self.text))
        };
        let Some(bytes) = decoded else {
            out.push_str(&String::from_utf8_lossy(self.raw));
            return;
        };
        if charset.eq_ignore_ascii_case(b"UTF-8") || charset.eq_ignore_ascii_case(b"US-ASCII") {
            out.push_str(&String::from_utf8_lossy(&bytes));
        } else if charset.eq_ignore_ascii_case(b"ISO-8859-1")
            || charset.eq_ignore_ascii_case(b"LATIN1")
        {
            out.extend(bytes.iter().map(|&b| char::from(b)));
        } else {
            out.push_str(&String::from_utf8_lossy(self.raw));
        }
    }
}

/// RFC 2047 §4.2: `_` is a space, `=XX` a byte in hex, anything else itself.
fn decode_q(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'_' => out.push(b' '),
            b'=' => match (text.get(i + 1).and_then(hex), text.get(i + 2).and_then(hex)) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'='),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex(b: &u8) -> Option<u8> {
    char::from(*b).to_digit(16).map(|d| d as u8)
}

/// RFC 4648 base64 with or without padding; `None` for anything else.
fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    let value = |b: u8| -> Option<u32> {
        Some(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let text = match text.iter().position(|&b| b == b'=') {
        Some(pad) if text[pad..].iter().all(|&b| b == b'=') => &text[..pad],
        Some(_) => return None,
        None => text,
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    for chunk in text.chunks(4) {
        let mut acc = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            acc |= value(b)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace());
    match (start, end) {
        (Some(s), Some(e)) => &bytes[s..=e],
        _ => &[],
    }
}

/// A read position in the attributes. Every method checks bounds.
struct Cur<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos.min(self.buf.len());
        let len = self.buf[start..].iter().take_while(|&&b| f(b)).count();
        self.pos = start + len;
        &self.buf[start..start + len]
    }

    /// ```abnf
    /// uniqueid = nz-number
    /// ```
    fn number(&mut self) -> Option<u32> {
        let digits = self.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() {
            return None;
        }
        digits.iter().try_fold(0u32, |n, &d| {
            n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
        })
    }

    /// `[` section `]`: returns what is between the brackets (quoted strings inside may
    /// hold `]`).
    fn section(&mut self) -> Option<&'a [u8]> {
        if !self.eat(b'[') {
            return None;
        }
        let start = self.pos;
        loop {
            match self.peek()? {
                b']' => {
                    let inside = &self.buf[start..self.pos];
                    self.pos += 1;
                    return Some(inside);
                }
                b'"' => {
                    self.quoted()?;
                }
                _ => self.pos += 1,
            }
        }
    }

    /// ```abnf
    /// quoted = DQUOTE *QUOTED-CHAR DQUOTE
    /// ```
    /// Returns the raw bytes between the quotes, escapes still in.
    fn quoted(&mut self) -> Option<&'a [u8]> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.pos;
        loop {
            match self.peek()? {
                b'"' => {
                    let raw = &self.buf[start..self.pos];
                    self.pos += 1;
                    return Some(raw);
                }
                b'\\' => self.pos += 2,
                _ => self.pos += 1,
            }
        }
    }

    /// ```abnf
    /// literal = "{" number64 ["+"] "}" CRLF *CHAR8
    /// ```
    fn literal(&mut self) -> Option<&'a [u8]> {
        if !self.eat(b'{') {
            return None;
        }
        let digits = self.take_while(|b| b.is_ascii_digit());
        let len = std::str::from_utf8(digits).ok()?.parse::<usize>().ok()?;
        self.eat(b'+');
        if !(self.eat(b'}') && self.eat(b'\r') && self.eat(b'\n')) {
            return None;
        }
        let data = self.buf.get(self.pos..self.pos.checked_add(len)?)?;
        self.pos += len;
        Some(data)
    }

    /// `nstring = string / nil`: the octets (unescaped when quoted); NIL is empty.
    fn nstring(&mut self) -> Option<Cow<'a, [u8]>> {
        match self.peek()? {
            b'"' => {
                let raw = self.quoted()?;
                if !raw.contains(&b'\\') {
                    return Some(Cow::Borrowed(raw));
                }
                let mut out = Vec::with_capacity(raw.len());
                let mut escaped = false;
                for &b in raw {
                    if b == b'\\' && !escaped {
                        escaped = true;
                        continue;
                    }
                    escaped = false;
                    out.push(b);
                }
                Some(Cow::Owned(out))
            }
            b'{' => self.literal().map(Cow::Borrowed),
            _ => {
                let word = self.take_while(|b| !matches!(b, b' ' | b')'));
                word.eq_ignore_ascii_case(b"NIL")
                    .then_some(Cow::Borrowed(&[][..]))
            }
        }
    }

    /// Skips one value: a parenthesized list (nesting, strings and literals inside), a
    /// string, or an atom or number. False if it is malformed.
    fn skip_value(&mut self) -> bool {
        match self.peek() {
            Some(b'"') => self.quoted().is_some(),
            Some(b'{') => self.literal().is_some(),
            Some(b'(') => {
                let mut depth = 0usize;
                loop {
                    match self.peek() {
                        Some(b'(') => {
                            depth += 1;
                            self.pos += 1;
                        }
                        Some(b')') => {
                            depth -= 1;
                            self.pos += 1;
                            if depth == 0 {
                                return true;
                            }
                        }
                        Some(b'"') => {
                            if self.quoted().is_none() {
                                return false;
                            }
                        }
                        Some(b'{') => {
                            if self.literal().is_none() {
                                return false;
                            }
                        }
                        Some(_) => self.pos += 1,
                        None => return false,
                    }
                }
            }
            Some(_) => !self
                .take_while(|b| !matches!(b, b' ' | b')' | b'('))
                .is_empty(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(block: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        for_each_field(block, &mut scratch, |n, v| {
            out.push((
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ))
        });
        out
    }

    fn display(raw: &str, len_max: usize) -> String {
        let mut out = String::new();
        decode_for_display(raw.as_bytes(), len_max, &mut out);
        out
    }

    #[test]
    fn uid_and_header_block_in_any_string_form_and_order() {
        let literal = b"UID 7 BODY[HEADER.FIELDS (FROM SUBJECT)] {15}\r\nSubject: hi\r\n\r\n";
        let f = parse_fetch(literal);
        assert_eq!(f.uid, Some(7));
        assert_eq!(f.block.as_deref(), Some(&b"Subject: hi\r\n\r\n"[..]));
        let quoted = br#"FLAGS (\Seen) BODY[HEADER.FIELDS ("FROM")]<0> "Subject: \"x\"" UID 9"#;
        let f = parse_fetch(quoted);
        assert_eq!(f.uid, Some(9));
        assert_eq!(f.block.as_deref(), Some(&b"Subject: \"x\""[..]));
        let nil = b"UID 10 BODY[HEADER.FIELDS (CHAT-VERSION)] NIL";
        assert_eq!(parse_fetch(nil).block.as_deref(), Some(&b""[..]));
        // Other items, with nested lists and literals, are skipped.
        let other = b"MODSEQ (12) ENVELOPE (\"d\" {3}\r\n)x) NIL) RFC822.SIZE 44 UID 3";
        assert_eq!(
            parse_fetch(other),
            Fetched {
                uid: Some(3),
                block: None
            }
        );
        // Flag updates carry no header block.
        assert_eq!(parse_fetch(b"FLAGS (\\Seen)").block, None);
        // HEADER.FIELDS.NOT and other sections are not ours.
        let not = b"UID 4 BODY[HEADER.FIELDS.NOT (X)] {0}\r\n";
        assert_eq!(parse_fetch(not).block, None);
    }

    #[test]
    fn malformed_attributes_give_what_came_before_and_never_panic() {
        assert_eq!(
            parse_fetch(b"UID 5 BODY[HEADER.FIELDS (X)] {99}\r\nshort").uid,
            Some(5)
        );
        assert_eq!(parse_fetch(b"UID 99999999999").uid, None);
        for bad in [
            &b""[..],
            b"(",
            b")",
            b"UID",
            b"UID x",
            b"BODY[",
            b"BODY[HEADER.FIELDS (X)]<0",
            b"BODY[HEADER.FIELDS (X)] \"abc",
            b"BODY[HEADER.FIELDS (X)] {",
            b"BODY[HEADER.FIELDS (X)] {18446744073709551616}\r\n",
            b"X (((",
            b"X \"\\",
            b"\xff\xfe",
        ] {
            let _ = parse_fetch(bad);
        }
        // Every prefix of a valid response is safe too.
        let valid = b"UID 7 FLAGS (\\Seen \"a\") BODY[HEADER.FIELDS (FROM)]<0> {6}\r\nFrom:x";
        for end in 0..valid.len() {
            let _ = parse_fetch(&valid[..end]);
        }
    }

    #[test]
    fn fields_are_unfolded_and_lines_without_colon_skipped() {
        let block =
            b"Subject: a\r\n b\r\n\tc\r\ngarbage\r\nFROM : x <y@z>\nChat-Version: 1.0\r\n\r\n";
        assert_eq!(
            fields(block),
            vec![
                ("Subject".into(), " a b\tc".into()),
                ("FROM".into(), " x <y@z>".into()),
                ("Chat-Version".into(), " 1.0".into()),
            ]
        );
        assert_eq!(fields(b" continuation first\r\n"), vec![]);
        let long = [b"Subject: ".as_slice(), &vec![b'x'; 3 * FIELD_RAW_LEN_MAX]].concat();
        assert_eq!(fields(&long)[0].1.len(), FIELD_RAW_LEN_MAX);
    }

    #[test]
    fn addresses_from_angle_brackets_or_bare() {
        let all = |v: &str| {
            let mut out = Vec::new();
            for_each_address(v.as_bytes(), |a| {
                out.push(String::from_utf8_lossy(a).into_owned())
            });
            out
        };
        assert_eq!(all(" Bob <Bob@Example.org>"), vec!["Bob@Example.org"]);
        assert_eq!(all("bob@example.org (Bob)"), vec!["bob@example.org"]);
        assert_eq!(all("a@b, \"C\" <c@d>"), vec!["c@d"]);
        assert_eq!(all("a@b, c@d"), vec!["a@b", "c@d"]);
        assert_eq!(all("<broken"), Vec::<String>::new());
    }

    #[test]
    fn encoded_words_in_b_and_q_forms() {
        assert_eq!(
            display(" =?UTF-8?B?R3LDvMOfZQ==?= ", 100),
            "Gr\u{fc}\u{df}e"
        );
        assert_eq!(
            display("=?utf-8?q?Gr=C3=BC=C3=9Fe_aus?= Berlin", 100),
            "Gr\u{fc}\u{df}e aus Berlin"
        );
        // White space between two encoded-words goes; around plain text it stays.
        assert_eq!(display("=?UTF-8?Q?a?= \r\n =?UTF-8?Q?b?= c", 100), "ab c");
        assert_eq!(display("=?ISO-8859-1?Q?Caf=E9?=", 100), "Caf\u{e9}");
        assert_eq!(display("=?UTF-8*en?B?aGk=?=", 100), "hi");
        // Unknown charsets and broken words are shown as sent.
        assert_eq!(display("=?KOI8-R?B?aGk=?=", 100), "=?KOI8-R?B?aGk=?=");
        assert_eq!(display("=?UTF-8?B?***?=", 100), "=?UTF-8?B?***?=");
        assert_eq!(display("=?UTF-8?X?a?= =?", 100), "=?UTF-8?X?a?= =?");
        // Raw UTF-8 (RFC 6532), invalid bytes replaced, controls made spaces.
        assert_eq!(
            display("Gr\u{fc}\u{df}e\t\t\u{7}x", 100),
            "Gr\u{fc}\u{df}e x"
        );
        let mut out = String::new();
        decode_for_display(b"a\xffb", 100, &mut out);
        assert_eq!(out, "a\u{fffd}b");
    }

    #[test]
    fn display_text_is_cut_on_a_char_boundary_with_an_ellipsis() {
        assert_eq!(display("abcdef", 6), "abcdef");
        assert_eq!(display("abcdefg", 6), "abc\u{2026}");
        let cut = display(&"\u{fc}".repeat(50_000), 1024);
        assert!(
            cut.len() <= 1024 && cut.ends_with('\u{2026}'),
            "{}",
            cut.len()
        );
        assert_eq!(display("=?UTF-8?B?w7w=?=", 100), "\u{fc}");
        assert_eq!(display("abc", 0), "");
    }
}
