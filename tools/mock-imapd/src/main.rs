//! `mock-imapd`: see the crate docs (`cargo doc -p mock-imapd`) or `--help`.

use std::process::ExitCode;
use std::time::Duration;

use mock_imapd::{parse_addrs, ChainKind, Config, KeyAlg, TlsSource};

const USAGE: &str = "\
mock-imapd: an IMAP server for density, latency and fault benchmarks (not Dovecot)

  --listen ADDR              plain IMAP, IP:PORT or IP:FIRST-LAST; repeatable
  --listen-tls ADDR          implicit TLS IMAP, same forms; repeatable
  --cert FILE --key FILE     server chain and key, PEM
  --self-signed-ca-out FILE  generate a CA + leaf for 127.0.0.1/localhost, write the CA PEM here
  --chain-kind small|realistic   generated chain: leaf+CA (~1.8 KB RSA) or leaf+intermediate (~3.5 KB)
  --key-alg rsa|ecdsa        generated keys (default rsa: fixed public keys, fresh certificates)
  --no-idle, --no-notify     do not advertise or accept IDLE / NOTIFY
  --no-tls-resumption        no session tickets: every TLS handshake is a full one
  --control ADDR             control channel (loopback TCP, line protocol; try `help`)
  --threads N                worker threads (default 1)
  --max-sessions N           refuse sessions beyond N (default 19500)
  --greeting-delay-ms N      delay before the greeting (and the TLS handshake)
  --messages N               messages in each new session's mailbox (default 0)
";

struct Cli {
    config: Config,
    ca_out: Option<String>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Cli, String> {
    let mut config = Config::default();
    let (mut cert, mut key, mut ca_out) = (None, None, None);
    let (mut chain, mut alg, mut generate) = (ChainKind::Small, KeyAlg::Rsa, false);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--listen" => config
                .listen
                .extend(parse_addrs(&value()?).map_err(|e| e.to_string())?),
            "--listen-tls" => config
                .listen_tls
                .extend(parse_addrs(&value()?).map_err(|e| e.to_string())?),
            "--cert" => cert = Some(value()?),
            "--key" => key = Some(value()?),
            "--self-signed-ca-out" => {
                ca_out = Some(value()?);
                generate = true;
            }
            "--chain-kind" => {
                generate = true;
                chain = match value()?.as_str() {
                    "small" => ChainKind::Small,
                    "realistic" => ChainKind::Realistic,
                    v => return Err(format!("--chain-kind: small or realistic, not {v}")),
                }
            }
            "--key-alg" => {
                generate = true;
                alg = match value()?.as_str() {
                    "rsa" => KeyAlg::Rsa,
                    "ecdsa" => KeyAlg::Ecdsa,
                    v => return Err(format!("--key-alg: rsa or ecdsa, not {v}")),
                }
            }
            "--no-idle" => config.idle = false,
            "--no-notify" => config.notify = false,
            "--no-tls-resumption" => config.tls_resumption = false,
            "--control" => {
                let v = value()?;
                config.control = Some(
                    v.parse()
                        .map_err(|_| format!("--control: bad address {v}"))?,
                );
            }
            "--threads" => config.threads = number(value()?)? as usize,
            "--max-sessions" => config.max_sessions = number(value()?)? as usize,
            "--greeting-delay-ms" => {
                config.greeting_delay = Duration::from_millis(number(value()?)?)
            }
            "--messages" => {
                config.initial_messages = u32::try_from(number(value()?)?)
                    .map_err(|_| "--messages: too large".to_string())?
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    config.tls = match (cert, key) {
        (Some(cert), Some(key)) => {
            if generate {
                return Err("--cert/--key and a generated chain are exclusive".into());
            }
            Some(TlsSource::Files {
                cert: cert.into(),
                key: key.into(),
            })
        }
        (None, None) if generate || !config.listen_tls.is_empty() => {
            Some(TlsSource::Generated { chain, alg })
        }
        (None, None) => None,
        _ => return Err("--cert and --key go together".into()),
    };
    Ok(Cli { config, ca_out })
}

fn main() -> ExitCode {
    let cli = match parse_args(std::env::args().skip(1)) {
        Ok(cli) => cli,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("mock-imapd: {e}\n");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let handle = match mock_imapd::run(cli.config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("mock-imapd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let (Some(path), Some(pem)) = (&cli.ca_out, handle.ca_pem()) {
        if let Err(e) = std::fs::write(path, pem) {
            eprintln!("mock-imapd: writing {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    for a in handle.plain_addrs() {
        println!("plain {a}");
    }
    for a in handle.tls_addrs() {
        println!("tls {a}");
    }
    if let Some((n, bytes)) = handle.tls_chain() {
        println!("chain {n} certificates {bytes} bytes");
    }
    if let Some(a) = handle.control_addr() {
        println!("control {a}");
    }
    println!("ready");
    handle.wait();
    ExitCode::SUCCESS
}
