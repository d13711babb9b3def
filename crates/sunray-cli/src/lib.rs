//! The `sunray` command: `start`, `stop`, `status`, `dashboard`, `tune plot`, `slurm`.

#[cfg(feature = "dashboard")]
mod dashboard;
mod slurm;
mod start;
mod status;
mod stop;
#[cfg(feature = "dashboard")]
mod tune;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sunray",
    version,
    about = "Ray core and Ray Tune, in Rust: start and inspect clusters"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a head (`--head`) or join a node to a head (`--address`) on this host.
    Start(start::StartArgs),
    /// Stop sunray heads and node agents that `sunray start` started on this host (this user's).
    ///
    /// Which ones: with --address HOST:PORT, that cluster only (its head and the node
    /// agents here that joined it); without it, the cluster $SUNRAY_ADDRESS names when it
    /// is set; inside a Slurm job (SLURM_JOB_ID set), that job's cluster; otherwise (or
    /// with --all) every head and node agent in this user's session folder
    /// ($SUNRAY_TMPDIR/sunray-<uid>, else /tmp/sunray-<uid>). An address no cluster
    /// there has stops nothing and lists the clusters it knows. Only processes that are
    /// provably the sunray process that wrote their session are signalled.
    Stop(stop::StopArgs),
    /// Show the nodes of a cluster and its task counts.
    Status(status::StatusArgs),
    /// Serve the web dashboard: the cluster live and Tune experiments' learning curves.
    #[cfg(feature = "dashboard")]
    Dashboard(dashboard::DashboardArgs),
    /// Tune experiments on disk: `sunray tune plot DIR -o curves.png`.
    #[cfg(feature = "dashboard")]
    #[command(subcommand)]
    Tune(tune::TuneCmd),
    /// Run a cluster over a Slurm allocation: `sunray slurm run -- <driver>`.
    #[command(subcommand)]
    Slurm(slurm::SlurmCmd),
}

/// Runs the command line; exits the process with its status.
pub fn main() {
    let exe = std::env::current_exe().unwrap_or_else(|_| "sunray".into());
    std::process::exit(run_command_line(exe, std::env::args().collect()));
}

/// How this command runs itself again (background daemons, node agents under `srun`):
/// its executable and its arguments (the first being the program's name).
static INVOCATION: std::sync::OnceLock<(std::path::PathBuf, Vec<String>)> =
    std::sync::OnceLock::new();

/// The executable that runs `sunray` commands: this one, or the Python package's
/// `sunray` script when the command line runs inside the Python extension.
pub(crate) fn self_exe() -> std::path::PathBuf {
    INVOCATION
        .get()
        .map(|(e, _)| e.clone())
        .unwrap_or_else(|| std::env::current_exe().unwrap_or_else(|_| "sunray".into()))
}

/// The arguments this command was given, without the program's name.
pub(crate) fn self_args() -> Vec<String> {
    INVOCATION
        .get()
        .map(|(_, a)| a[1..].to_vec())
        .unwrap_or_else(|| std::env::args().skip(1).collect())
}

/// Runs `args` (the program's name first) as the `sunray` command, with `exe` as the
/// executable that runs it again; returns the exit status. The Python package's
/// `sunray` script calls this through the extension.
pub fn run_command_line(exe: std::path::PathBuf, args: Vec<String>) -> i32 {
    let _ = INVOCATION.set((exe, args.clone()));
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let r = match cli.cmd {
        Cmd::Start(a) => start::run(a),
        Cmd::Stop(a) => stop::run(a),
        Cmd::Status(a) => status::run(a),
        #[cfg(feature = "dashboard")]
        Cmd::Dashboard(a) => dashboard::run(a),
        #[cfg(feature = "dashboard")]
        Cmd::Tune(c) => tune::run(c),
        Cmd::Slurm(c) => slurm::run(c),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sunray: error: {e:#}");
            1
        }
    }
}

pub(crate) fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SUNRAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The head to talk to: the flag, `$SUNRAY_ADDRESS`, or the only head on this host.
pub(crate) fn resolve_address(given: Option<String>) -> anyhow::Result<String> {
    if let Some(a) = given.or_else(sunray_runtime::session::address_from_env) {
        sunray_runtime::wire::check_address(&a).map_err(anyhow::Error::msg)?;
        return Ok(a);
    }
    let heads = sunray_runtime::session::local_head_addresses();
    match heads.len() {
        0 => anyhow::bail!(
            "no cluster address given and no sunray head runs on this host: pass --address HOST:PORT or set SUNRAY_ADDRESS"
        ),
        1 => Ok(heads[0].clone()),
        _ => anyhow::bail!(
            "several sunray heads run on this host ({}): pass --address",
            heads.join(", ")
        ),
    }
}

/// The token for `address`: `--token-file`, `--token`/`$SUNRAY_TOKEN`, or this host's
/// session directory. Without one, says whether the address is wrong or nothing
/// answers there before blaming the token.
pub(crate) fn resolve_token(
    given: Option<String>,
    file: Option<&std::path::Path>,
    address: &str,
) -> anyhow::Result<String> {
    if let Some(f) = file {
        return read_token_file(f);
    }
    given
        .filter(|t| !t.is_empty())
        .or_else(|| sunray_runtime::session::find_token(address))
        .ok_or_else(|| anyhow::anyhow!(sunray_runtime::wire::explain_missing_token(address)))
}

/// Reads a token from a file (surrounding white space ignored).
pub(crate) fn read_token_file(f: &std::path::Path) -> anyhow::Result<String> {
    let t = std::fs::read_to_string(f)
        .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", f.display()))?;
    let t = t.trim().to_string();
    anyhow::ensure!(!t.is_empty(), "the token file {} is empty", f.display());
    Ok(t)
}

/// The error a background `sunray` printed, as one line: its `sunray: error:` line
/// without the prefix (the caller adds its own), else the last line it printed.
pub(crate) fn child_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("sunray: error: "))
        .or(lines.last().copied())
        .unwrap_or("it exited without saying why")
        .to_string()
}

/// SIGTERM, SIGINT or SIGHUP.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    let mut int = signal(SignalKind::interrupt()).expect("signal handler");
    let mut hup = signal(SignalKind::hangup()).expect("signal handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = hup.recv() => {}
    }
}

/// Sends this process's stdout and stderr to `path` (appending): for background
/// processes whose parent has gone.
pub(crate) fn redirect_output(path: &std::path::Path) {
    use std::os::fd::IntoRawFd;
    if let Ok(f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let fd = f.into_raw_fd();
        unsafe {
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            libc::close(fd);
        }
    }
}

/// Re-runs this executable with `args` in a new session (detached from the terminal and
/// the job step) and waits for its first line: `Ok(rest)` for `READY rest`, else
/// `Err(what it printed on stderr)`.
pub(crate) fn spawn_detached(
    args: &[String],
    token: Option<&str>,
) -> anyhow::Result<Result<String, String>> {
    use anyhow::Context;
    use std::io::{BufRead, Read};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(crate::self_exe());
    if let Some(t) = token {
        cmd.env(sunray_runtime::env::TOKEN, t);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .context("cannot start a background sunray process")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .ok();
    if let Some(rest) = line.trim().strip_prefix("READY ") {
        return Ok(Ok(rest.to_string()));
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)
        .ok();
    let _ = child.wait();
    Ok(Err(err.trim().to_string()))
}
