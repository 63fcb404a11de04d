//! `imap-push-proxy serve [--config FILE] [--listen ADDR] [--data-dir DIR]`
//! `imap-push-proxy check-config [--config FILE]`

use std::path::PathBuf;
use std::process::ExitCode;

use imap_push_proxy::{capacity, fd_budget, App, Config};

/// Every freed heap block is wiped: passwords and tokens pass through buffers of rustls,
/// serde and std that no code here can reach (see `httpd::alloc`).
#[global_allocator]
static HEAP: httpd::alloc::Wiping<std::alloc::System> =
    httpd::alloc::Wiping::new(std::alloc::System);

const USAGE: &str = "\
imap-push-proxy: IMAP IDLE to Web Push

USAGE:
    imap-push-proxy serve [--config FILE] [--listen ADDR] [--data-dir DIR]
    imap-push-proxy check-config [--config FILE]

Without --config the embedded defaults apply: the API listens on 127.0.0.1:8080 and
keeps its data (the VAPID key) in ./data. Flags override the config file.
SIGTERM or SIGINT: stop accepting, log out every IMAP session, send each
subscription its reconnect push, and exit.

check-config prints the effective settings (secrets redacted), the descriptor budget,
the memory at full capacity and each kernel limit that stops this box short of
limits.sessions_max. Exit status: 0 valid, 1 invalid, 2 usage.";

/// Why a command failed; each kind has its exit status.
enum Failure {
    /// The command line is wrong: exit 2.
    Usage(String),
    /// The config or the start failed: exit 1.
    Failed(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Failed(message)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Failed(message)) => {
            eprintln!("imap-push-proxy: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::Usage(message)) => {
            eprintln!("imap-push-proxy: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<(), Failure> {
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("check-config") => check_config(&args[1..]),
        Some("--version" | "-V") => {
            println!("imap-push-proxy {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(Failure::Usage("expected a command".into())),
    }
}

/// `check-config`: the config judged, then what it asks of this box. A kernel limit that
/// falls short is a warning (the box may be prepared later), not an invalid config.
fn check_config(args: &[String]) -> Result<(), Failure> {
    let mut config_file: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--config" => config_file = Some(PathBuf::from(flag_value(flag, it.next())?)),
            other => return Err(Failure::Usage(format!("unknown flag {other}"))),
        }
    }
    let config = load(config_file.as_deref())?;
    check_files(&config)?;
    let config_file_path = config_file.clone();
    // Debug is the redacting view: its destructuring makes every new field be judged
    // secret or not before it compiles.
    println!(
        "config: {}",
        config_file.map_or("(built-in defaults)".into(), |p| p.display().to_string())
    );
    println!("{config:#?}");
    print!("{}", capacity::assess(&config, &capacity::Kernel::read()));
    for warning in config_warnings(&config, config_file_path.as_deref()) {
        println!("WARNING: {warning}");
    }
    println!("config ok");
    Ok(())
}

/// Every warning about a valid config: secret files others may read, and a public
/// listener that pushes to endpoints nobody proved to own.
fn config_warnings(config: &Config, config_file: Option<&std::path::Path>) -> Vec<String> {
    let mut warnings = secret_file_warnings(config, config_file);
    warnings.extend(config.verification_warning());
    warnings
}

/// Files holding a secret that every user of the box may read: the token file, and the
/// config itself when it holds `api_token`. Only the path and mode are named.
fn secret_file_warnings(config: &Config, config_file: Option<&std::path::Path>) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let inline = config.api_token.is_some() && config.api_token_file.is_none();
    let holders = config
        .api_token_file
        .as_deref()
        .into_iter()
        .chain(config_file.filter(|_| inline));
    holders
        .filter_map(|path| {
            let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
            (mode & 0o004 != 0).then(|| {
                format!(
                    "{} holds the API token and every user may read it (mode {mode:04o}): \
                     chmod 0640, group of the service's user",
                    path.display()
                )
            })
        })
        .collect()
}

fn flag_value<'a>(flag: &str, value: Option<&'a String>) -> Result<&'a String, Failure> {
    value.ok_or_else(|| Failure::Usage(format!("{flag} needs a value")))
}

fn load(path: Option<&std::path::Path>) -> Result<Config, Failure> {
    let config = match path {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// The files the server opens at start: a missing one is an invalid config here rather
/// than a failed start later.
fn check_files(config: &Config) -> Result<(), Failure> {
    let tls = config.tls.iter().flat_map(|t| [&t.cert_file, &t.key_file]);
    for (key, path) in tls.map(|p| ("tls", p)).chain(
        config
            .imap_extra_ca_file
            .iter()
            .map(|p| ("imap_extra_ca_file", p)),
    ) {
        if let Err(e) = std::fs::File::open(path) {
            return Err(Failure::Failed(format!(
                "config key `{key}`: {}: {e}",
                path.display()
            )));
        }
    }
    Ok(())
}

fn serve(args: &[String]) -> Result<(), Failure> {
    let mut config_file: Option<PathBuf> = None;
    let mut listen: Option<String> = None;
    let mut data_dir: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--config" => config_file = Some(PathBuf::from(flag_value(flag, it.next())?)),
            "--listen" => listen = Some(flag_value(flag, it.next())?.clone()),
            "--data-dir" => data_dir = Some(PathBuf::from(flag_value(flag, it.next())?)),
            other => return Err(Failure::Usage(format!("unknown flag {other}"))),
        }
    }
    let mut config = load(config_file.as_deref())?;
    if let Some(listen) = listen {
        config.listen = listen.parse().map_err(|_| {
            Failure::Usage(format!(
                "--listen {listen}: not an address like 127.0.0.1:8080"
            ))
        })?;
    }
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    config.validate().map_err(|e| e.to_string())?;
    for warning in config_warnings(&config, config_file.as_deref()) {
        eprintln!("imap-push-proxy: WARNING: {warning}");
    }
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

fn block_termination_signals() -> Result<libc::sigset_t, Failure> {
    // SAFETY: sigemptyset/sigaddset initialise a local set; pthread_sigmask changes only this
    // thread's mask, before any other thread exists.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(Failure::Failed("could not block SIGTERM/SIGINT".into()));
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
