//! `imap-push-proxy serve [--config FILE] [--listen ADDR] [--data-dir DIR]`
//! `imap-push-proxy check-config [--config FILE]`

use std::path::PathBuf;
use std::process::ExitCode;

use server::logging::{self, LevelSource};
use server::upgrade::Binary;
use server::{capacity, fd_budget, image, reload, App, Config};

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
subscription its reconnect push, and exit. SIGUSR2: upgrade in place: hand the
live IMAP sessions and the API listener to the binary now at this path, in the
same PID, without a reconnect. SIGHUP: read the config file again, apply log_level
and the API's TLS certificate, and apply any other changed key by the same
in-place upgrade (data_dir needs a restart).

Logs go to stderr, as text or JSON (log_format), filtered by log_level or RUST_LOG.

check-config prints the effective settings (secrets redacted), the descriptor budget,
the memory at full capacity and each kernel limit that stops this box short of
limits.sessions_max. Exit status: 0 valid, 1 invalid, 2 usage.";

/// Why a command failed; each kind has its exit status.
enum Failure {
    /// The command line is wrong: exit 2.
    Usage(String),
    /// The config or the start failed: exit 1.
    Failed(String),
    /// Failed after the log was set up, and logged there: exit 1, nothing more printed.
    Logged,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Failed(message)
    }
}

fn main() -> ExitCode {
    // Read first: after a package upgrade the path names the new binary (what SIGUSR2
    // executes), while /proc/self/exe names the old, deleted one.
    let binary = Binary::at_start().ok();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args, binary) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Failed(message)) => {
            eprintln!("imap-push-proxy: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::Logged) => ExitCode::FAILURE,
        Err(Failure::Usage(message)) => {
            eprintln!("imap-push-proxy: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String], binary: Option<Binary>) -> Result<(), Failure> {
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..], binary),
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

/// The `serve` flags that override the config file, applied again on each SIGHUP so
/// that they are not reported as changed keys.
struct Overrides {
    listen: Option<std::net::SocketAddr>,
    data_dir: Option<PathBuf>,
}

impl Overrides {
    fn apply(&self, config: &mut Config) {
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
    }
}

fn serve(args: &[String], binary: Option<Binary>) -> Result<(), Failure> {
    let mut config_file: Option<PathBuf> = None;
    let mut overrides = Overrides {
        listen: None,
        data_dir: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--config" => config_file = Some(PathBuf::from(flag_value(flag, it.next())?)),
            "--listen" => {
                let listen = flag_value(flag, it.next())?;
                overrides.listen = Some(listen.parse().map_err(|_| {
                    Failure::Usage(format!(
                        "--listen {listen}: not an address like 127.0.0.1:8080"
                    ))
                })?);
            }
            "--data-dir" => overrides.data_dir = Some(PathBuf::from(flag_value(flag, it.next())?)),
            other => return Err(Failure::Usage(format!("unknown flag {other}"))),
        }
    }
    let mut config = load(config_file.as_deref())?;
    overrides.apply(&mut config);
    config.validate().map_err(|e| e.to_string())?;
    // Before the log exists, a failure is one line on stderr; after, it is a log event.
    let env = std::env::var(logging::LOG_ENV).ok();
    let (directive, source) = logging::effective_directive(&config.log_level, env);
    let logs = logging::init(&directive, config.log_format).map_err(|e| match source {
        LevelSource::Env => format!("{}: {e}", logging::LOG_ENV),
        LevelSource::Config => format!("config key `log_level`: {e}"),
    })?;
    let reload = Reload {
        config_file,
        overrides,
        logs,
        level_source: source,
        binary,
    };
    serve_logged(config, &reload).map_err(|e| {
        tracing::error!("{e}");
        Failure::Logged
    })
}

/// What SIGHUP needs to read the config again and apply it.
struct Reload {
    config_file: Option<PathBuf>,
    overrides: Overrides,
    logs: logging::LogHandle,
    level_source: LevelSource,
    /// The binary an upgrade executes (`None`: its path could not be read at start).
    binary: Option<Binary>,
}

fn serve_logged(config: Config, reload: &Reload) -> Result<(), String> {
    // Signals are taken by this thread alone: every thread started below inherits the mask.
    let signals = block_signals().map_err(|_| "could not block SIGTERM/SIGINT/SIGHUP/SIGUSR2")?;
    for warning in config_warnings(&config, reload.config_file.as_deref()) {
        tracing::warn!("{warning}");
    }
    // Descriptors are the ceiling of sessions: take all the hard limit allows.
    match fd_budget::raise_nofile_limit() {
        Ok((before, after)) if before != after => {
            tracing::info!(before, after, "descriptor limit raised")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "descriptor limit not raised"),
    }
    let report = capacity::assess(&config, &capacity::Kernel::read());
    for short in &report.shortfalls {
        tracing::warn!(
            limit = short.limit,
            value = %short.value,
            sessions = short.sessions,
            fix = %short.fix,
            "a kernel limit stops this box short of limits.sessions_max"
        );
    }
    let mut running = config.clone();
    let image = inherited_image();
    let mut app = App::start_resumed(config, image).map_err(|e| e.to_string())?;
    log_start(&app, &running, &report);
    loop {
        match wait_for(&signals) {
            libc::SIGHUP => {
                let (applied, wants_upgrade) = reread(&app, running, reload);
                running = applied;
                if wants_upgrade {
                    upgrade(&mut app, reload);
                }
            }
            libc::SIGUSR2 => upgrade(&mut app, reload),
            signal => {
                let name = if signal == libc::SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                tracing::info!(signal = name, "shutting down");
                break;
            }
        }
    }
    // The run summary is logged by the owner once everything is flushed.
    app.shutdown();
    Ok(())
}

/// The state image the process this one replaced handed over, if any. An image this
/// binary cannot read gives a normal start: every journalled subscription then gets its
/// `server_restart` push, as after a crash.
fn inherited_image() -> Option<image::Image> {
    let fd = image::inherited_fd()?;
    match image::read(fd) {
        Ok(image) => Some(image),
        Err(e) => {
            tracing::warn!(error = %e, "upgrade: the state image is not usable; starting as after a crash");
            None
        }
    }
}

/// SIGUSR2 (or SIGHUP with keys that need a new process): replace this process in place.
/// Returns only if the upgrade did not happen; the server serves on.
fn upgrade(app: &mut App, reload: &Reload) {
    let Some(binary) = &reload.binary else {
        tracing::error!("upgrade: the binary's path was not known at start; serving on");
        return;
    };
    tracing::info!("upgrade: handing the sessions over");
    let error = app.upgrade(binary);
    tracing::error!(error = %error, "upgrade cancelled; serving on");
}

/// The start line: what this server runs with.
fn log_start(app: &App, config: &Config, report: &capacity::Report) {
    let budget = app.budget();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %app.local_addr(),
        https = config.tls.is_some(),
        data_dir = %config.data_dir.display(),
        sessions_capacity = budget.map_or(0, |b| b.sessions_capacity),
        descriptor_limit = budget.map_or(0, |b| b.nofile),
        api_connections = budget.map_or(0, |b| b.api_connections),
        memory_at_capacity = %capacity::human_bytes(report.memory.total_bytes()),
        journal_recovered = app.recovered(),
        "started"
    );
}

/// SIGHUP: the config file read again. The new log level and API certificate apply;
/// every other changed key is applied by an in-place upgrade (the new process reads the
/// file), except `data_dir`, which needs a restart. A file that does not load (or a
/// certificate that does not) changes nothing. Returns the settings now in force and
/// whether an upgrade should apply the rest.
fn reread(app: &App, running: Config, reload: &Reload) -> (Config, bool) {
    let Some(path) = &reload.config_file else {
        tracing::info!("SIGHUP: no config file to read again (built-in defaults)");
        return (running, false);
    };
    let new = match load(Some(path)).and_then(|mut new| {
        reload.overrides.apply(&mut new);
        new.validate().map_err(|e| Failure::Failed(e.to_string()))?;
        check_files(&new)?;
        Ok(new)
    }) {
        Ok(new) => new,
        Err(Failure::Failed(e) | Failure::Usage(e)) => {
            tracing::error!(error = %e, "SIGHUP: config not reloaded; the settings in force stay");
            return (running, false);
        }
        Err(Failure::Logged) => return (running, false),
    };
    // The certificate is loaded before anything changes, so a bad one changes nothing.
    let cert = match (&running.tls, &new.tls) {
        (Some(_), Some(t)) => match httpd::TlsCert::load(&httpd::TlsFiles {
            cert_file: t.cert_file.clone(),
            key_file: t.key_file.clone(),
        }) {
            Ok(cert) => Some(cert),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: certificate not reloaded; the settings in force stay");
                return (running, false);
            }
        },
        _ => None,
    };
    let mut applied = running.clone();
    apply_level(&mut applied, &new, reload);
    if let Some(cert) = cert {
        if app.replace_tls(cert) {
            applied.tls = new.tls.clone();
            tracing::info!("SIGHUP: API certificate reloaded; new connections use it");
        }
    }
    let keys = reload::restart_keys(&applied, &new);
    if keys.contains(&"data_dir") {
        // The journal is elsewhere: the next process could not match the sessions.
        for key in keys {
            tracing::warn!(
                key,
                "SIGHUP: changed in the config file; needs a restart to apply"
            );
        }
        return (applied, false);
    }
    for key in &keys {
        tracing::info!(
            key,
            "SIGHUP: changed in the config file; applied by an in-place upgrade"
        );
    }
    (applied, !keys.is_empty())
}

/// The new `log_level`, unless `RUST_LOG` is in force.
fn apply_level(applied: &mut Config, new: &Config, reload: &Reload) {
    if applied.log_level == new.log_level {
        return;
    }
    if reload.level_source == LevelSource::Env {
        tracing::info!("SIGHUP: log_level changed, but RUST_LOG is set and wins");
        applied.log_level = new.log_level.clone();
        return;
    }
    match reload.logs.set_filter(&new.log_level) {
        Ok(()) => {
            applied.log_level = new.log_level.clone();
            tracing::info!(log_level = %new.log_level, "SIGHUP: log level changed");
        }
        Err(e) => tracing::error!(error = %e, "SIGHUP: log level not changed"),
    }
}

fn block_signals() -> Result<libc::sigset_t, Failure> {
    // SAFETY: sigemptyset/sigaddset initialise a local set; pthread_sigmask changes only this
    // thread's mask, before any other thread exists.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(Failure::Failed(
                "could not block SIGTERM/SIGINT/SIGHUP/SIGUSR2".into(),
            ));
        }
        Ok(set)
    }
}

fn wait_for(set: &libc::sigset_t) -> i32 {
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` was initialised by block_signals; sigwait writes one int.
    loop {
        if unsafe { libc::sigwait(set, &mut signal) } == 0 {
            return signal;
        }
    }
}
