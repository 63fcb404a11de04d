//! Small RFC 5322 messages for delivery in tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A minimal valid message (CRLF line endings) with the given subject, a
/// unique `Message-ID`, the current `Date` and a one-line body.
pub fn simple_message(subject: &str) -> Vec<u8> {
    message_with_body(subject, "This is a test message from testkit.\r\n")
}

/// Like [`simple_message`] with an explicit body (used verbatim; use CRLF).
pub fn message_with_body(subject: &str, body: &str) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "Return-Path: <sender@example.com>\r\n\
         From: Test Sender <sender@example.com>\r\n\
         To: Test Recipient <recipient@example.com>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <testkit.{pid}.{now}.{n}@example.com>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         {body}",
        date = rfc5322_date(now),
        pid = std::process::id(),
    )
    .into_bytes()
}

/// `Tue, 2 Jan 2024 03:04:05 +0000` for a Unix timestamp.
fn rfc5322_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_709_251_199),
            "Thu, 29 Feb 2024 23:59:59 +0000"
        );
        assert_eq!(
            rfc5322_date(1_704_164_645),
            "Tue, 2 Jan 2024 03:04:05 +0000"
        );
    }

    #[test]
    fn message_shape() {
        let m = String::from_utf8(simple_message("hi")).unwrap();
        assert!(m.contains("\r\nSubject: hi\r\n"));
        assert!(m.contains("\r\n\r\n"));
        assert_ne!(simple_message("x"), simple_message("x"));
    }
}
