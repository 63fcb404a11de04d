//! `imap-push-proxy check-config`: its exit statuses (0 valid, 1 invalid, 2 usage), its
//! report, and that no secret reaches its output; `api_token_file` read by `Config::load`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::TempDir;
use server::Config;

const SECRET: &str = "tok-5ecret-9f8e7d6c5b4a3210";

fn check_config(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imap-push-proxy"))
        .arg("check-config")
        .args(args)
        .output()
        .unwrap()
}

fn write(dir: &TempDir, name: &str, text: &str, mode: u32) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Both streams, checked for the secret in every form it could leak.
fn assert_no_secret(output: &Output) {
    let all = [&output.stdout[..], &output.stderr[..]].concat();
    let text = String::from_utf8_lossy(&all);
    assert!(!text.contains(SECRET), "secret printed: {text}");
    assert!(
        !text.contains(&SECRET[4..14]),
        "part of the secret printed: {text}"
    );
}

#[test]
fn a_valid_config_exits_0_with_the_report() {
    let out = check_config(&[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for part in [
        "(built-in defaults)",
        "sessions_max: 1000000",
        "capacity: limits.sessions_max = 1000000",
        "descriptors: RLIMIT_NOFILE",
        "memory at full capacity: 5.2 GiB",
        "log_level: \"info\"",
        "log_format: Text",
        "config ok",
    ] {
        assert!(text.contains(part), "{part:?} missing in {text}");
    }
}

#[test]
fn an_invalid_config_exits_1() {
    let dir = TempDir::new();
    let cases = [
        (
            "refresh.toml",
            "idle_refresh_secs = 0\n",
            "idle_refresh_secs",
        ),
        ("typo.toml", "idle_refresh_sec = 10\n", "idle_refresh_sec"),
        ("level.toml", "log_level = \"server=loud\"\n", "`log_level`"),
        ("format.toml", "log_format = \"xml\"\n", "`log_format`"),
        (
            "tls.toml",
            "[tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n",
            "/nonexistent/cert.pem",
        ),
    ];
    for (name, text, named) in cases {
        let path = write(&dir, name, text, 0o644);
        let out = check_config(&["--config", &path]);
        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{name}: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("config ok"));
    }
    let missing = check_config(&["--config", "/nonexistent/config.toml"]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
}

#[test]
fn a_wrong_command_line_exits_2() {
    for args in [
        &["--bogus"][..],
        &["--config"][..],
        &["--config", "a", "extra"][..],
    ] {
        let out = check_config(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("USAGE"));
    }
}

#[test]
fn no_secret_is_printed_inline_from_a_file_or_in_an_error() {
    let dir = TempDir::new();
    let inline = write(
        &dir,
        "inline.toml",
        &format!("api_token = {SECRET:?}\n"),
        0o640,
    );
    let out = check_config(&["--config", &inline]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"<redacted>\""));
    assert_no_secret(&out);

    let token = write(&dir, "token", &format!("{SECRET}\n"), 0o640);
    let from_file = write(
        &dir,
        "file.toml",
        &format!("api_token_file = {token:?}\n"),
        0o640,
    );
    let out = check_config(&["--config", &from_file]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_no_secret(&out);

    let both = format!("api_token = {SECRET:?}\napi_token_file = {token:?}\n");
    let out = check_config(&["--config", &write(&dir, "both.toml", &both, 0o640)]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not both"));
    assert_no_secret(&out);

    // A token too short is refused without being echoed.
    let short = write(&dir, "short", "tok-5ecret\n", 0o640);
    let short_config = write(
        &dir,
        "short.toml",
        &format!("api_token_file = {short:?}\n"),
        0o640,
    );
    let out = check_config(&["--config", &short_config]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("tok-5ecret"));
}

#[test]
fn a_secret_every_user_may_read_is_warned_about_by_path_only() {
    let dir = TempDir::new();
    let token = write(&dir, "token", &format!("{SECRET}\n"), 0o644);
    let config = write(
        &dir,
        "c.toml",
        &format!("api_token_file = {token:?}\n"),
        0o644,
    );
    let out = check_config(&["--config", &config]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("WARNING: {token} holds the API token")),
        "{stdout}"
    );
    assert!(!stdout.contains(&format!("WARNING: {config}")), "{stdout}");
    assert_no_secret(&out);
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = check_config(&["--config", &config]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("WARNING"));
    // Inline, the config file is the one that holds it.
    let inline = write(&dir, "i.toml", &format!("api_token = {SECRET:?}\n"), 0o644);
    let out = check_config(&["--config", &inline]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("WARNING: {inline} holds")),
        "{stdout}"
    );
    assert_no_secret(&out);
}

fn load_with_token_file(dir: &TempDir, contents: &str) -> Result<Config, String> {
    let token = write(dir, "token", contents, 0o640);
    let config = write(
        dir,
        "c.toml",
        &format!("api_token_file = {token:?}\n"),
        0o640,
    );
    Config::load(Path::new(&config)).map_err(|e| e.to_string())
}

#[test]
fn the_token_file_is_one_line_with_its_newline_trimmed() {
    let dir = TempDir::new();
    for contents in [
        format!("{SECRET}\n"),
        format!("{SECRET}\r\n"),
        SECRET.to_owned(),
    ] {
        let config = load_with_token_file(&dir, &contents).unwrap();
        let token = config.api_token.expect("the token is read");
        assert!(token.matches(SECRET), "{contents:?}");
        assert_eq!(token.len(), SECRET.len());
    }
    // Only one line ending goes: a second is part of the token, which then does not match.
    let config = load_with_token_file(&dir, &format!("{SECRET}\n\n")).unwrap();
    assert!(!config.api_token.unwrap().matches(SECRET));
    let e = load_with_token_file(&dir, "\n").unwrap_err();
    assert!(e.contains("api_token"), "{e}");
    let missing = TempDir::new();
    let config = write(
        &missing,
        "c.toml",
        "api_token_file = \"/nonexistent/token\"\n",
        0o644,
    );
    let e = Config::load(Path::new(&config)).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/token"), "{e}");
}

/// A listener beyond loopback without endpoint verification is warned of (it can be made
/// to push to any URL); with verification on, or on loopback, it is not.
#[test]
fn a_public_listener_without_endpoint_verification_is_warned_of() {
    let dir = TempDir::new();
    let cases = [
        ("public.toml", "listen = \"0.0.0.0:8080\"\n", true),
        (
            "verified.toml",
            "listen = \"0.0.0.0:8080\"\nrequire_endpoint_verification = true\n",
            false,
        ),
        ("loopback.toml", "listen = \"127.0.0.1:8080\"\n", false),
    ];
    for (name, text, warned) in cases {
        let path = write(&dir, name, text, 0o644);
        let out = check_config(&["--config", &path]);
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let warning = stdout
            .lines()
            .any(|l| l.starts_with("WARNING: ") && l.contains("require_endpoint_verification"));
        assert_eq!(warning, warned, "{name}: {stdout}");
    }
}

#[test]
fn serve_refuses_a_bad_log_level_or_rust_log_naming_it() {
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let bad = write(
        &dir,
        "bad.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nlog_level = \"x=loud\"\n",
            data.display()
        ),
        0o644,
    );
    let good = write(
        &dir,
        "good.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            data.display()
        ),
        0o644,
    );
    let serve = |config: &str, rust_log: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_imap-push-proxy"));
        command
            .args(["serve", "--config", config])
            .env_remove("RUST_LOG");
        if let Some(v) = rust_log {
            command.env("RUST_LOG", v);
        }
        command.output().unwrap()
    };
    let out = serve(&bad, None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`log_level`"),
        "{out:?}"
    );
    let out = serve(&good, Some("x=loud"));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("RUST_LOG"),
        "{out:?}"
    );
}

/// The shared journal's URL is shown without its password, and a config that needs a
/// `node_id` says so (exit 1), without the password either.
#[test]
fn the_journal_url_is_shown_without_its_password() {
    let dir = TempDir::new();
    let url = format!("postgres://push:{SECRET}@db.example:5432/push");
    let good = format!("journal = \"{url}\"\nnode_id = \"n1\"\n");
    let path = write(&dir, "good.toml", &good, 0o600);
    let out = check_config(&["--config", &path]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_no_secret(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("postgres://push:***@db.example:5432/push"),
        "{text}"
    );
    assert!(text.contains("node_id: Some(\n        \"n1\""), "{text}");
    let path = write(&dir, "no-id.toml", &format!("journal = \"{url}\"\n"), 0o600);
    let out = check_config(&["--config", &path]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_no_secret(&out);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("`node_id`") && text.contains("required"),
        "{text}"
    );
}
