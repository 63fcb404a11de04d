//! The config keys of a node in a cluster: where the journal lives (`journal`), the
//! node's name (`node_id`), and its liveness timing (`heartbeat_secs`,
//! `node_lost_after_secs`). See README, "Running several nodes".

use serde::Deserialize;
use zeroize::Zeroizing;

/// Default of `heartbeat_secs`: a node renews its heartbeat this often.
pub const HEARTBEAT_SECS_DEFAULT: u64 = 5;
/// Default of `node_lost_after_secs`: a node whose heartbeat is older is lost, and the
/// others take its subscriptions over. Six missed heartbeats: a database failover or a
/// long GC pause elsewhere does not cost a whole node's users a reconnect.
pub const NODE_LOST_AFTER_SECS_DEFAULT: u64 = 30;
/// The longest `node_id`: it is a database key and a notification channel name (at most
/// 63 bytes with its prefix).
pub const NODE_ID_LEN_MAX: usize = 32;

/// Where the journal lives: the `journal` key.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum JournalSetting {
    /// `"redb"`: `data_dir/journal.redb`, one box.
    #[default]
    Redb,
    /// A `postgres://` or `postgresql://` URL: a database the cluster's nodes share.
    Postgres(DatabaseUrl),
}

impl TryFrom<String> for JournalSetting {
    type Error = String;

    fn try_from(text: String) -> Result<JournalSetting, String> {
        let text = Zeroizing::new(text);
        if text.as_str() == "redb" {
            return Ok(JournalSetting::Redb);
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(JournalSetting::Postgres(DatabaseUrl(text)));
        }
        // The value is not quoted: it may be a URL with a password in it.
        Err("expected \"redb\" or a postgres:// or postgresql:// URL".into())
    }
}

impl std::fmt::Debug for JournalSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JournalSetting::Redb => f.write_str("\"redb\""),
            JournalSetting::Postgres(url) => write!(f, "{url:?}"),
        }
    }
}

/// A database URL. It may hold a password: wiped when dropped, and shown (`Debug`) with
/// the password and every query parameter left out.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(Zeroizing<String>);

impl DatabaseUrl {
    /// The whole URL, password included: for the database client only.
    pub fn dangerous_expose(&self) -> &str {
        &self.0
    }

    /// `postgres://user:***@host:port/db` (`?...` when there were parameters).
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return "<redacted>".into();
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, _)) => (rest, "?..."),
            None => (rest, ""),
        };
        let rest = match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                let password = if userinfo.contains(':') { ":***" } else { "" };
                format!("{user}{password}@{host}")
            }
            None => rest.to_owned(),
        };
        format!("{scheme}://{rest}{query}")
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// Why `node_id` is not a good name, if it is not: 1 to [`NODE_ID_LEN_MAX`] of
/// `a-z`, `0-9` and `-`.
pub fn check_node_id(id: &str) -> Result<(), String> {
    let good = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
    if id.is_empty() || id.len() > NODE_ID_LEN_MAX || !id.bytes().all(good) {
        return Err(format!(
            "must be 1 to {NODE_ID_LEN_MAX} characters of a-z, 0-9 and -"
        ));
    }
    Ok(())
}

/// A checked `node_id`, `Copy` (it travels in the core's small messages).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NodeName {
    bytes: [u8; NODE_ID_LEN_MAX],
    len: u8,
}

impl NodeName {
    /// `id` if it is a good node id ([`check_node_id`]).
    pub fn new(id: &str) -> Option<NodeName> {
        check_node_id(id).ok()?;
        let mut bytes = [0u8; NODE_ID_LEN_MAX];
        bytes[..id.len()].copy_from_slice(id.as_bytes());
        Some(NodeName {
            bytes,
            len: id.len() as u8,
        })
    }

    pub fn as_str(&self) -> &str {
        // Only checked ASCII goes in.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl std::fmt::Debug for NodeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// When a node stops its own sessions because it could not renew its heartbeat: half
/// way between the heartbeat interval and `node_lost_after`. A healthy node renews well
/// before it, and it comes before any other node may judge this one lost and push
/// `node_lost` to its users (they judge by the database's clock, from the time the last
/// renewal reached the database, which is after this node sent it).
pub fn fence_after(
    heartbeat: std::time::Duration,
    lost_after: std::time::Duration,
) -> std::time::Duration {
    (heartbeat + lost_after) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_shown_without_its_password() {
        let setting = JournalSetting::try_from(
            "postgres://app:s3cret@db.example:5432/push?sslmode=disable&password=x2".to_owned(),
        )
        .unwrap();
        let shown = format!("{setting:?}");
        assert_eq!(shown, "\"postgres://app:***@db.example:5432/push?...\"");
        let bare = JournalSetting::try_from("postgresql://db/push".to_owned()).unwrap();
        assert_eq!(format!("{bare:?}"), "\"postgresql://db/push\"");
        assert_eq!(
            JournalSetting::try_from("redb".to_owned()),
            Ok(JournalSetting::Redb)
        );
        let e = JournalSetting::try_from("mysql://u:s3cret@h/db".to_owned()).unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn node_ids_are_short_names() {
        for good in ["n1", "node-7", "a", &"x".repeat(NODE_ID_LEN_MAX)] {
            assert!(check_node_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "N1",
            "n_1",
            "n 1",
            "nöde",
            "n\"1",
            &"x".repeat(NODE_ID_LEN_MAX + 1),
        ] {
            assert!(check_node_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_node_fences_before_anyone_may_claim_and_after_a_renewal_is_due() {
        let s = std::time::Duration::from_secs;
        assert_eq!(fence_after(s(1), s(5)), s(3));
        assert_eq!(
            fence_after(s(5), s(30)),
            std::time::Duration::from_millis(17_500)
        );
    }
}
