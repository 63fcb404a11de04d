//! `imap-push-proxy serve [--config FILE] [--listen ADDR] [--data-dir DIR]`

use std::path::PathBuf;
use std::process::ExitCode;

use imap_push_proxy::{fd_budget, App, Config};

/// Every freed heap block is wiped: passwords and tokens pass through buffers of rustls,
/// serde and std that no code here can reach (see `httpd::alloc`).
#[global_allocator]
static HEAP: httpd::alloc::Wiping<std::alloc::System> =
    httpd::alloc::Wiping::new(std::alloc::System);

const USAGE: &str = "\
imap-push-proxy: IMAP IDLE to Web Push

USAGE:
    imap-push-proxy serve [--config FILE] [--listen ADDR] [--data-dir DIR]

Without --config the embedded defaults apply: the API listens on 127.0.0.1:8080 and
keeps its data (the VAPID key) in ./data. Flags override the config file.
SIGTERM or SIGINT: stop accepting, log out every IMAP session, send each
subscription its reconnect push, and exit.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("imap-push-proxy: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("--version" | "-V") => {
            println!("imap-push-proxy {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("expected a command\n\n{USAGE}")),
    }
}

fn serve(args: &[String]) -> Result<(), String> {
    let mut config_file: Option<PathBuf> = None;
    let mut listen: Option<String> = None;
    let mut data_dir: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => config_file = Some(PathBuf::from(value()?)),
            "--listen" => listen = Some(value()?.clone()),
            "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown flag {other}\n\n{USAGE}")),
        }
    }
    let mut config = match &config_file {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(listen) = listen {
        config.listen = listen
            .parse()
            .map_err(|_| format!("--listen {listen}: not an address like 127.0.0.1:8080"))?;
    }
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    config.validate().map_err(|e| e.to_string())?;
    // Signals are taken by this thread alone: every thread started below inherits the mask.
    let signals = block_termination_signals()?;
    // Descriptors are the ceiling of sessions: take all the hard limit allows.
    match fd_budget::raise_nofile_limit() {
        Ok((before, after)) if before != after => {
            eprintln!("imap-push-proxy: descriptor limit raised from {before} to {after}")
        }
        Ok(_) => {}
        Err(e) => eprintln!("imap-push-proxy: descriptor limit not raised: {e}"),
    }
    let app = App::start(config).map_err(|e| e.to_string())?;
    if let Some(budget) = app.budget() {
        eprintln!(
            "imap-push-proxy: descriptor limit {}, session capacity {}, API connections {}",
            budget.nofile, budget.sessions_capacity, budget.api_connections
        );
    }
    eprintln!("imap-push-proxy: listening on http://{}", app.local_addr());
    let signal = wait_for(&signals);
    eprintln!("imap-push-proxy: signal {signal}, shutting down");
    app.shutdown();
    eprintln!("imap-push-proxy: stopped");
    Ok(())
}

fn block_termination_signals() -> Result<libc::sigset_t, String> {
    // SAFETY: sigemptyset/sigaddset initialise a local set; pthread_sigmask changes only this
    // thread's mask, before any other thread exists.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err("could not block SIGTERM/SIGINT".into());
        }
        Ok(set)
    }
}

fn wait_for(set: &libc::sigset_t) -> i32 {
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` was initialised by block_termination_signals; sigwait writes one int.
    loop {
        if unsafe { libc::sigwait(set, &mut signal) } == 0 {
            return signal;
        }
    }
}
