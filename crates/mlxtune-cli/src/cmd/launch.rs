//! `mlxtune launch -n N [--hosts FILE] [--backend ring|nccl|mpi] -- train ...`: starts the
//! ranks of a data-parallel run as `mlx.launch` does (one process per rank, with the
//! environment MLX's distributed init reads), forwards SIGINT / SIGTERM / SIGHUP to them,
//! and when one rank fails stops the others and fails naming that rank.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mlxtune_engine::train::distributed::{Backend, ENV_BACKEND};

#[derive(clap::Args)]
pub struct Args {
    /// Number of processes (ranks) to start on this machine.
    #[arg(short = 'n', long = "processes")]
    processes: Option<usize>,
    /// Ring backend: MLX's host file (JSON, one list of "ip:port" per rank). Its length is
    /// the group size; without it the ranks listen on free ports of 127.0.0.1.
    #[arg(long, value_name = "FILE")]
    hosts: Option<PathBuf>,
    /// With --hosts: the ranks to start here (comma-separated; default all of them).
    #[arg(long, value_delimiter = ',')]
    ranks: Vec<usize>,
    /// MLX distributed backend: ring, nccl or mpi (default: nccl on a CUDA build, else ring).
    #[arg(long)]
    backend: Option<String>,
    /// Seconds the other ranks get to exit after one failed or a signal, before SIGKILL.
    #[arg(long, default_value_t = 5)]
    grace: u64,
    /// The mlxtune command every rank runs (after `--`), e.g. `train --config job.json`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// One rank to start: its number and the variables MLX reads.
struct RankPlan {
    rank: usize,
    env: Vec<(String, String)>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let backend = match &a.backend {
        Some(b) => b
            .parse::<Backend>()
            .map_err(|_| anyhow::anyhow!("--backend `{b}`: expected ring, nccl or mpi"))?,
        None if mlxtune_engine::runtime::backend() == "cuda" => Backend::Nccl,
        None => Backend::Ring,
    };
    let exe = std::env::current_exe().context("finding the mlxtune executable")?;
    let hostfile = HostFile::new(&a, backend)?;
    let plans = plan(&a, backend, &hostfile)?;
    install_signal_forwarding();
    let children = match backend {
        Backend::Mpi => vec![(0, spawn_mpirun(&exe, &a, plans.len())?)],
        _ => plans
            .iter()
            .map(|p| Ok((p.rank, spawn_rank(&exe, &a.command, p)?)))
            .collect::<anyhow::Result<_>>()?,
    };
    let result = supervise(children, Duration::from_secs(a.grace));
    drop(hostfile);
    result
}

/// The ring's host file: the given one, or one written for free local ports (removed
/// when the launch ends).
struct HostFile {
    path: Option<PathBuf>,
    written: bool,
    size: usize,
}

impl Drop for HostFile {
    fn drop(&mut self) {
        if let (true, Some(p)) = (self.written, &self.path) {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl HostFile {
    fn new(a: &Args, backend: Backend) -> anyhow::Result<HostFile> {
        if let Some(path) = &a.hosts {
            let size = read_hostfile(path)?;
            if a.processes.is_some_and(|n| n != size) {
                bail!(
                    "-n {} disagrees with --hosts {} ({size} ranks)",
                    a.processes.unwrap_or(0),
                    path.display()
                );
            }
            return Ok(HostFile {
                path: Some(path.clone()),
                written: false,
                size,
            });
        }
        let Some(n) = a.processes else {
            bail!("give -n N (the number of ranks) or --hosts FILE");
        };
        if n == 0 {
            bail!("-n must be at least 1");
        }
        if backend != Backend::Ring {
            return Ok(HostFile {
                path: None,
                written: false,
                size: n,
            });
        }
        let hosts: Vec<Vec<String>> = (0..n)
            .map(|_| Ok(vec![format!("127.0.0.1:{}", free_port()?)]))
            .collect::<anyhow::Result<_>>()?;
        let path = std::env::temp_dir().join(format!("mlxtune-hosts-{}.json", std::process::id()));
        std::fs::write(&path, serde_json::to_string(&hosts)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(HostFile {
            path: Some(path),
            written: true,
            size: n,
        })
    }
}

/// The number of ranks in an MLX ring host file, after checking its shape.
fn read_hostfile(path: &Path) -> anyhow::Result<usize> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--hosts {}", path.display()))?;
    let hosts: Vec<Vec<String>> = serde_json::from_str(&text).with_context(|| {
        format!(
            "--hosts {}: expected a JSON list with one list of \"ip:port\" per rank",
            path.display()
        )
    })?;
    if let Some((r, _)) = hosts.iter().enumerate().find(|(_, h)| h.is_empty()) {
        bail!("--hosts {}: rank {r} has no address", path.display());
    }
    if hosts.is_empty() {
        bail!("--hosts {}: no ranks", path.display());
    }
    Ok(hosts.len())
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The ranks started here and their environments.
fn plan(a: &Args, backend: Backend, hosts: &HostFile) -> anyhow::Result<Vec<RankPlan>> {
    let size = hosts.size;
    let ranks: Vec<usize> = match a.ranks.is_empty() {
        true => (0..size).collect(),
        false => a.ranks.clone(),
    };
    if let Some(r) = ranks.iter().find(|r| **r >= size) {
        bail!("--ranks: rank {r} is outside the group of {size}");
    }
    let port = free_port()?;
    let visible: Option<Vec<String>> = std::env::var("CUDA_VISIBLE_DEVICES")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    ranks
        .into_iter()
        .map(|rank| {
            let mut env = vec![
                (ENV_BACKEND.to_string(), backend.as_str().to_string()),
                ("MLX_RANK".into(), rank.to_string()),
                ("MLX_WORLD_SIZE".into(), size.to_string()),
            ];
            match backend {
                Backend::Ring => {
                    let p = hosts.path.as_ref().expect("a ring has a host file");
                    env.push(("MLX_HOSTFILE".into(), p.display().to_string()));
                }
                Backend::Nccl => {
                    let gpu = visible
                        .as_ref()
                        .and_then(|v| v.get(rank % v.len().max(1)).cloned())
                        .unwrap_or_else(|| rank.to_string());
                    env.push(("NCCL_HOST_IP".into(), "127.0.0.1".into()));
                    env.push(("NCCL_PORT".into(), port.to_string()));
                    env.push(("CUDA_VISIBLE_DEVICES".into(), gpu));
                }
                Backend::Mpi => {}
            }
            Ok(RankPlan { rank, env })
        })
        .collect()
}

fn spawn_rank(exe: &Path, command: &[String], p: &RankPlan) -> anyhow::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.args(command).envs(p.env.iter().cloned());
    detach(&mut cmd);
    cmd.spawn()
        .with_context(|| format!("starting rank {}", p.rank))
}

/// MPI starts its own ranks: `mpirun -np N mlxtune ...` with the backend variable exported.
fn spawn_mpirun(exe: &Path, a: &Args, n: usize) -> anyhow::Result<Child> {
    let mut cmd = Command::new("mpirun");
    cmd.args(["-np", &n.to_string(), "-x", ENV_BACKEND])
        .arg(exe)
        .args(&a.command)
        .env(ENV_BACKEND, Backend::Mpi.as_str());
    detach(&mut cmd);
    cmd.spawn()
        .context("--backend mpi needs `mpirun` (Open MPI) on PATH")
}

/// Each rank gets its own process group (terminal signals reach the launcher, which
/// forwards them) and, on Linux, dies with the launcher.
fn detach(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn remember_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

fn install_signal_forwarding() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let handler = remember_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        unsafe { libc::signal(sig, handler) };
    }
}

fn send(child: &Child, sig: libc::c_int) {
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

/// Waits for every rank. The first failure (a rank killed by a signal is preferred over
/// the ranks that failed because it was gone) stops the others: SIGTERM, then SIGKILL
/// after `grace`.
fn supervise(mut children: Vec<(usize, Child)>, grace: Duration) -> anyhow::Result<()> {
    let mut done: Vec<Option<ExitStatus>> = vec![None; children.len()];
    let mut failure: Option<(usize, ExitStatus)> = None;
    let mut forwarded: Option<libc::c_int> = None;
    let mut kill_at: Option<Instant> = None;
    while done.iter().any(Option::is_none) {
        let sig = SIGNAL.swap(0, Ordering::SeqCst);
        if sig != 0 {
            forwarded = Some(sig);
            for (i, (_, c)) in children.iter().enumerate() {
                if done[i].is_none() {
                    send(c, sig);
                }
            }
            kill_at.get_or_insert(Instant::now() + grace);
        }
        let mut newly = Vec::new();
        for (i, (rank, c)) in children.iter_mut().enumerate() {
            if done[i].is_none() {
                if let Some(s) = c.try_wait().context("waiting for a rank")? {
                    done[i] = Some(s);
                    newly.push((*rank, s));
                }
            }
        }
        if failure.is_none() {
            failure = first_failure(&newly);
            if failure.is_some() {
                for (i, (_, c)) in children.iter().enumerate() {
                    if done[i].is_none() {
                        send(c, libc::SIGTERM);
                    }
                }
                kill_at.get_or_insert(Instant::now() + grace);
            }
        }
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            for (i, (_, c)) in children.iter_mut().enumerate() {
                if done[i].is_none() {
                    let _ = c.kill();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some((rank, status)) = failure {
        bail!(
            "rank {rank} {}; the other ranks were stopped",
            describe(status)
        );
    }
    if let Some(sig) = forwarded {
        bail!("stopped by signal {sig}, forwarded to every rank");
    }
    Ok(())
}

fn first_failure(newly: &[(usize, ExitStatus)]) -> Option<(usize, ExitStatus)> {
    use std::os::unix::process::ExitStatusExt;
    let failed = newly.iter().filter(|(_, s)| !s.success());
    let mut failed: Vec<_> = failed.copied().collect();
    failed.sort_by_key(|(rank, s)| (s.signal().is_none(), *rank));
    failed.first().copied()
}

fn describe(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(9)) => "was killed (SIGKILL)".into(),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".into(),
    }
}
