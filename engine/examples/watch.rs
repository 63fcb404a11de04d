//! Embeds the engine and prints its events.
//!
//! IMAP_HOST=imap.example.org IMAP_USER=alice IMAP_PASSWORD=... cargo run -p engine --example watch
use engine::{Engine, EngineConfig, Event, Secret, Security, WatchSpec};
use zeroize::Zeroizing;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("set {name}"));
    let engine = Engine::start(EngineConfig::default())?;
    let id = engine.watch(WatchSpec {
        host: var("IMAP_HOST")?,
        port: 993,
        security: Security::Tls,
        username: var("IMAP_USER")?,
        secret: Secret::Password(Zeroizing::new(var("IMAP_PASSWORD")?.into_bytes())),
        mailboxes: vec!["INBOX".into()],
        since: None,
    })?;
    println!("watching as {id:?}");
    for event in engine.events() {
        match event {
            Event::Ready { ready, .. } => {
                println!("ready: {} messages, idle={}", ready.exists, ready.idle)
            }
            Event::NewMail { exists, .. } => println!("new mail: {exists} messages"),
            Event::Failed { reason, .. } | Event::SessionLost { reason, .. } => {
                println!("ended: {reason}");
                break;
            }
        }
    }
    Ok(())
}
