//! `sipsentry bench`: the arguments, checked, turned into a load run
//! ([`crate::bench::uac`]) or the answering side ([`crate::bench::uas`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::bench::{uac, uas};
use crate::error::{Error, Result};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("role").required(true).args(["target", "uas"])))]
pub struct BenchArgs {
    /// Where to send calls (the proxy, or a UAS directly).
    #[arg(long, value_name = "HOST:PORT")]
    pub target: Option<String>,
    /// Run the answering side on this address instead.
    #[arg(long, value_name = "LISTEN", conflicts_with_all = ["target", "compare"])]
    pub uas: Option<std::net::SocketAddr>,
    /// The transport toward the target.
    #[arg(long, value_enum, default_value = "udp")]
    pub transport: Transport,
    /// With --transport tls: CA certificates (PEM) trusted beside the
    /// system's roots for the targets' certificates (which must carry the
    /// target's IP address).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// UAS: serve TLS, not plain TCP, on the stream port, with this
    /// certificate chain (PEM) and --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// UAS: the private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// INVITEs per second (open loop).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Number of calls.
    #[arg(long, conflicts_with = "duration")]
    pub count: Option<u64>,
    /// Seconds of load (count = rate × duration).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Caller numbers, one per line, used in turn (default: generated).
    #[arg(long, value_name = "FILE")]
    pub callers: Option<PathBuf>,
    /// The called number.
    #[arg(long, default_value = "+15551234567")]
    pub called: String,
    /// A header line added to every INVITE (repeatable), e.g.
    /// `--header 'Identity: …'` to measure signed calls.
    #[arg(long = "header", value_name = "LINE")]
    pub headers: Vec<String>,
    /// At most K calls in flight.
    #[arg(long, value_name = "K")]
    pub concurrency: Option<u64>,
    /// Seconds without a final response before a call counts as a timeout.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
    /// Also send calls to this target, taking turns on one schedule, and print
    /// what each target adds over the last one (e.g. --target PROXY --compare
    /// UAS). Repeatable: --compare KAMAILIO --compare UAS.
    #[arg(long, value_name = "TARGET2")]
    pub compare: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// UAS: send 180 Ringing before answering.
    #[arg(long)]
    pub ring: bool,
    /// UAS: wait this many milliseconds before the 200 OK.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub answer_delay: u64,
    /// Also answer as the UAS on this UDP address, on the UAC's own thread
    /// (point the proxy's next hop and the --compare baseline here): the
    /// UAS's wake-ups leave the figures. With --ring; not with --answer-delay.
    #[arg(long, value_name = "LISTEN", conflicts_with = "uas")]
    pub with_uas: Option<std::net::SocketAddr>,
    /// Never sleep between messages: poll the sockets, yielding the CPU in
    /// between. Takes a core; with --with-uas the instrument then wakes no
    /// thread of its own, so what is left is what the target adds.
    #[arg(long, conflicts_with = "uas")]
    pub spin: bool,
    /// Also write every call's figures to FILE as CSV (call, target,
    /// scheduled time on CLOCK_MONOTONIC in ns, µs to the provisional, to the
    /// final and from BYE to its 200, status code), to match latencies with
    /// a scheduler trace or a capture taken at the same time.
    #[arg(long, value_name = "FILE", conflicts_with = "uas")]
    pub samples: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The UAC's TLS client: the system's roots and `ca`.
fn client_config(
    ca: Option<&std::path::Path>,
) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    let roots = crate::pem::roots(true, ca)?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// The UAS's TLS server.
fn acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            crate::pem::certificates(cert)?,
            crate::pem::private_key(key)?,
        )?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

fn resolve(target: &str) -> anyhow::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    target
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {target:?}; use HOST:PORT"))?
        .next()
        .with_context(|| format!("{target:?} resolves to no address"))
}

/// A combination of arguments that cannot work (exit 2, like clap's own).
fn usage(ok: bool, why: &'static str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(why.into()))
    }
}

/// `sipsentry bench`.
pub fn run(args: BenchArgs, runtime: &tokio::runtime::Runtime) -> Result<()> {
    if let Some(listen) = args.uas {
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(c), Some(k)) => Some(acceptor(c, k).context("cannot serve TLS")?),
            _ => None,
        };
        let opts = uas::UasOptions {
            listen,
            ring: args.ring,
            answer_delay: Duration::from_millis(args.answer_delay),
            tls,
        };
        return runtime
            .block_on(uas::run(opts, super::shutdown_signal()))
            .with_context(|| format!("cannot run the UAS on {listen}"))
            .map_err(Error::from);
    }
    let mut targets = vec![resolve(args.target.as_deref().unwrap_or_default())?];
    for other in &args.compare {
        targets.push(resolve(other)?);
    }
    usage(
        args.rate > 0.0 && args.rate.is_finite(),
        "--rate must be a positive number",
    )?;
    let count = match (args.count, args.duration) {
        (Some(n), _) => n,
        (None, Some(s)) => (s * args.rate).round() as u64,
        (None, None) => (args.rate * 10.0).round() as u64,
    };
    let callers = match &args.callers {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read callers file {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        None => vec![],
    };
    usage(
        args.headers.iter().all(|h| !h.contains(['\r', '\n'])),
        "--header takes one header line (repeat --header for more)",
    )?;
    usage(
        args.with_uas.is_none() || matches!(args.transport, Transport::Udp),
        "--with-uas answers over UDP only; for TCP run the UAS on its own (sipsentry bench --uas LISTEN)",
    )?;
    usage(
        args.with_uas.is_none() || args.answer_delay == 0,
        "--with-uas answers at once; for --answer-delay run the UAS on its own (sipsentry bench --uas LISTEN)",
    )?;
    let opts = uac::UacOptions {
        targets,
        tcp: matches!(args.transport, Transport::Tcp | Transport::Tls),
        tls: match args.transport {
            Transport::Tls => {
                Some(client_config(args.tls_ca.as_deref()).context("cannot make TLS connections")?)
            }
            _ => None,
        },
        rate: args.rate,
        count,
        callers,
        called: args.called,
        extra_headers: args
            .headers
            .iter()
            .map(|h| format!("{}\r\n", h.trim_end()))
            .collect(),
        concurrency: args.concurrency,
        timeout: Duration::from_secs_f64(args.timeout),
        progress: !args.json,
        uas: args.with_uas.map(|listen| uas::UasOptions {
            listen,
            ring: args.ring,
            answer_delay: Duration::from_millis(args.answer_delay),
            tls: None,
        }),
        spin: args.spin,
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = std::sync::Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, std::sync::atomic::Ordering::Relaxed))
            .context("cannot install the Ctrl-C handler")?;
    }
    let report = uac::run(&opts, stop).context("bench could not start")?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("cannot encode the report")?
        );
    } else {
        print!("{}", report.text());
    }
    // After the report, so a samples file that cannot be written loses
    // nothing else.
    if let Some(path) = &args.samples {
        std::fs::File::create(path)
            .map_err(csv::Error::from)
            .and_then(|f| report.write_samples(std::io::BufWriter::new(f)))
            .with_context(|| format!("cannot write the samples to {}", path.display()))?;
    }
    Ok(())
}
