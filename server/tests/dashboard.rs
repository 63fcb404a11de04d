//! What `/metrics` promises operators, against the real server after real activity (a
//! registration against Dovecot and one mail delivered and pushed):
//! - the three histograms (reactor turn time, EXISTS read to push leaving, journal commit
//!   time) are there in Prometheus form, and their counts moved;
//! - every metric that `deploy/grafana-dashboard.json` names in a panel's PromQL exists.

use std::collections::BTreeSet;
use std::time::Duration;

use push::testing::{Sink, Subscriber};
use server::App;
use testkit::{simple_message, Dovecot, DovecotConfig};

mod common;

use common::{http, loopback_config, TempDir};

/// Registers against a real Dovecot, delivers one mail, waits for its push, and returns
/// the `/metrics` text.
fn metrics_after_activity() -> String {
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let sink = Sink::start();
    let phone = Subscriber::generate();
    let dir = TempDir::new();
    let app = App::start(loopback_config(&dir, Some(&dovecot))).unwrap();
    let addr = app.local_addr();
    let new_mail: serde_json::Value =
        serde_json::from_str(&phone.subscription_json(&sink.url("/new"))).unwrap();
    let body = serde_json::json!({
        "imap": {"host": "127.0.0.1", "port": dovecot.imaps_port(), "security": "tls",
                 "username": "alice", "password": "secret-alice"},
        "new_mail": new_mail,
        "reconnect": {"endpoint": sink.url("/reconnect")},
    });
    let reply = http(addr, "POST", "/v1/subscriptions", &body.to_string(), "");
    assert_eq!(reply.status, 201, "{}", reply.body);
    dovecot.deliver("alice", &simple_message("hi")).unwrap();
    assert_eq!(sink.wait_for(1, Duration::from_secs(10)).len(), 1);
    let metrics = http(addr, "GET", "/metrics", "", "");
    assert_eq!(metrics.status, 200);
    app.shutdown();
    metrics.body
}

/// A histogram's cumulative buckets, `_sum` and `_count` in `text`.
fn histogram(text: &str, name: &str) -> (Vec<(String, u64)>, f64, u64) {
    let bucket = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&bucket))
        .map(|rest| {
            let (le, n) = rest.split_once("\"} ").unwrap();
            (le.to_owned(), n.parse().unwrap())
        })
        .collect();
    let value = |suffix: &str| {
        let prefix = format!("{name}{suffix} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name}{suffix} in\n{text}"))
            .to_owned()
    };
    let sum = value("_sum").parse().unwrap();
    let count = value("_count").parse().unwrap();
    (buckets, sum, count)
}

#[test]
fn the_three_histograms_move_with_real_activity() {
    let text = metrics_after_activity();
    for name in [
        "imap_push_reactor_turn_seconds",
        "imap_push_exists_to_push_seconds",
        "imap_push_journal_commit_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} histogram\n")),
            "{name} is no histogram in\n{text}"
        );
        let (buckets, sum, count) = histogram(&text, name);
        assert!(buckets.len() > 2, "{name}: {buckets:?}");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{name}: buckets not monotone: {buckets:?}"
        );
        let last = buckets.last().unwrap();
        assert_eq!(
            last,
            &("+Inf".to_owned(), count),
            "{name}: +Inf is the count"
        );
        assert!(count >= 1, "{name}: nothing recorded");
        assert!(sum > 0.0, "{name}: sum {sum}");
        eprintln!("{name}: count {count}, sum {sum} s");
    }
    // One mail, one first attempt: exactly one observation from EXISTS to the push.
    assert_eq!(histogram(&text, "imap_push_exists_to_push_seconds").2, 1);
}

/// The names of the samples in a Prometheus text exposition (`_bucket`, `_sum` and
/// `_count` of a histogram are samples of their own there, as PromQL names them).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let end = l.find(['{', ' ']).unwrap_or(l.len());
            l[..end].to_owned()
        })
        .collect()
}

/// PromQL modifiers that may take a label list in parentheses.
const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// PromQL words that are neither metrics nor functions (functions are followed by `(`),
/// besides [`LABEL_LIST_KEYWORDS`].
const KEYWORDS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];

/// The metric names a PromQL expression reads: identifiers that are not functions,
/// aggregation modifiers' label lists, label matchers, string literals, ranges,
/// dashboard variables or keywords.
fn metric_names(expr: &str) -> Vec<String> {
    let expr = strip_between(expr, '"', '"');
    let expr = strip_between(&expr, '{', '}');
    let expr = strip_between(&expr, '[', ']');
    let expr = strip_label_lists(&expr);
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let starts = c.is_ascii_alphabetic() || c == '_' || c == ':';
        let after_variable = i > 0 && chars[i - 1] == '$';
        if !starts || after_variable {
            // Skip the rest of a number or a $variable as one token.
            let skip_word = c == '$' || c.is_ascii_digit() || after_variable;
            i += 1;
            while skip_word && i < chars.len() && is_word(chars[i]) {
                i += 1;
            }
            continue;
        }
        let start = i;
        while i < chars.len() && is_word(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let next = chars[i..].iter().find(|c| !c.is_whitespace());
        let is_function = next == Some(&'(');
        let lower = word.to_ascii_lowercase();
        let keyword =
            KEYWORDS.contains(&lower.as_str()) || LABEL_LIST_KEYWORDS.contains(&lower.as_str());
        if !is_function && !keyword {
            names.push(word);
        }
    }
    names
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Removes everything from each `open` to its `close`, both included.
fn strip_between(s: &str, open: char, close: char) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in s.chars() {
        match (inside, c) {
            (false, c) if c == open => inside = true,
            (true, c) if c == close => inside = false,
            (false, c) => out.push(c),
            (true, _) => {}
        }
    }
    out
}

/// Removes the label lists of `by (..)`, `without (..)`, `on (..)`, `ignoring (..)`,
/// `group_left (..)` and `group_right (..)`.
fn strip_label_lists(s: &str) -> String {
    let mut out = s.to_owned();
    for keyword in LABEL_LIST_KEYWORDS {
        let mut rest = out.as_str();
        let mut kept = String::new();
        while let Some(at) = find_word(rest, keyword) {
            let after = &rest[at + keyword.len()..];
            let trimmed = after.trim_start();
            kept.push_str(&rest[..at]);
            match (trimmed.starts_with('('), trimmed.find(')')) {
                (true, Some(close)) => rest = &trimmed[close + 1..],
                _ => {
                    kept.push_str(keyword);
                    rest = after;
                }
            }
        }
        kept.push_str(rest);
        out = kept;
    }
    out
}

/// Where `word` occurs in `s` as a whole word.
fn find_word(s: &str, word: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut from = 0;
    while let Some(at) = s[from..].find(word).map(|i| i + from) {
        let before = at == 0 || !is_word(bytes[at - 1] as char);
        let end = at + word.len();
        let after = end == s.len() || !is_word(bytes[end] as char);
        if before && after {
            return Some(at);
        }
        from = end;
    }
    None
}

#[test]
fn names_are_extracted_from_promql_without_functions_labels_or_variables() {
    let expr = r#"histogram_quantile(0.99, sum by (le, instance) (rate(imap_push_journal_commit_seconds_bucket{instance=~"$instance", job="x"}[$__rate_interval]))) / on(instance) group_left imap_push_sessions_capacity offset 5m + 2e3"#;
    assert_eq!(
        metric_names(expr),
        [
            "imap_push_journal_commit_seconds_bucket",
            "imap_push_sessions_capacity"
        ]
    );
    assert_eq!(
        metric_names("sum without (state) (imap_push_sessions) > bool 0"),
        ["imap_push_sessions"]
    );
}

/// Every `expr` of every panel (rows' nested panels included), with the panel's title.
fn panel_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut panels: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .expect("the dashboard has panels")
        .iter()
        .collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((title.clone(), expr.to_owned()));
            }
        }
    }
    out
}

#[test]
fn every_metric_the_dashboard_names_is_in_metrics() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs = panel_exprs(&dashboard);
    assert!(exprs.len() >= 10, "{} queries", exprs.len());
    let exposed = sample_names(&metrics_after_activity());
    let mut missing = Vec::new();
    let mut named = BTreeSet::new();
    for (title, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "panel {title:?}: no metric in {expr}");
        for name in names {
            if !exposed.contains(&name) {
                missing.push(format!("panel {title:?}: {name}"));
            }
            named.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "metrics the dashboard names that /metrics lacks:\n{}\n/metrics has: {exposed:?}",
        missing.join("\n")
    );
    eprintln!("{} metrics named by {} queries", named.len(), exprs.len());
}
