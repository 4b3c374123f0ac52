//! Runs simulation cases in a child process (`tern-sim worker`), one after another, so a case
//! that takes the whole process down (a stack overflow aborts; no unwinding can catch it) is
//! reported as that case's failure, with the trace so far and the replay command, and the
//! sweep goes on in a fresh child.
//!
//! The protocol is lines: the parent writes `SEED RANDOM_LATENCY(0|1) TRACE_FILE|- PATH`
//! (tab-separated), the worker prints its report, every line prefixed with `|`, and ends it
//! with `@@ ok|fail SIMULATED_SECS WALL_SECS`. A case with no result within ten minutes of wall
//! time is reported as hung and its worker killed. The trace
//! so far of a case that killed its worker comes from replaying it (runs are deterministic)
//! in a worker that echoes each trace entry to its stderr as it happens.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::scenario::Scenario;
use crate::scenario::RANDOM_LATENCY_MAX;
use crate::world::{self, Options};

/// Set in a worker that must echo trace entries to stderr as they are recorded.
pub const ECHO_TRACE_ENV: &str = "TERN_SIM_ECHO_TRACE";

/// Names the planted bug (`tern::planted`) a worker runs the broker with.
pub const PLANTED_BUG_ENV: &str = "TERN_PLANTED_BUG";

/// Lines of the dead worker's stderr shown in a report.
const STDERR_TAIL_LINES: usize = 30;

/// One run: a scenario file, a seed, and whether links get random latency.
#[derive(Debug, Clone)]
pub struct Case {
    pub path: PathBuf,
    pub seed: u64,
    pub random_latency: bool,
    /// Write the run's trace here.
    pub trace: Option<PathBuf>,
}

impl Case {
    /// The command that replays this case.
    pub fn replay(&self) -> String {
        let latency = if self.random_latency {
            " --random-latency"
        } else {
            ""
        };
        format!(
            "cargo run -p tern-sim -- run {} --seed {}{latency}",
            self.path.display(),
            self.seed
        )
    }
}

/// What became of a case.
#[derive(Debug)]
pub struct Report {
    pub failed: bool,
    pub simulated_secs: f64,
    pub wall_secs: f64,
    /// The worker's report (failure details), or why the worker died.
    pub text: String,
}

/// How long one case may take in wall time before its worker is taken for hung and killed,
/// unless the supervisor is given another limit ([`Supervisor::with_case_limit`]).
const CASE_WALL_MAX: Duration = Duration::from_secs(600);

impl Report {
    /// A case that could not run at all (a bad file, a bad planted-bug name).
    fn refused(why: &str) -> Report {
        Report {
            failed: true,
            simulated_secs: 0.0,
            wall_secs: 0.0,
            text: format!("  {why}\n"),
        }
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    /// The worker's stdout, line by line, from a reader thread (so a hung worker can be
    /// waited for with a timeout).
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// What became of a case sent to a worker.
enum Exchange {
    Report(Report),
    /// The worker's output ended before the report: it died.
    Died,
    /// No report within the case limit.
    Hung,
}

/// Owns the worker process and restarts it when a case kills it.
pub struct Supervisor {
    exe: PathBuf,
    scratch: PathBuf,
    env: Vec<(String, String)>,
    worker: Option<Worker>,
    /// Wall time a case may take before its worker is taken for hung.
    case_limit: Duration,
}

/// Workers started by this process, for distinct stderr file names.
static WORKERS: AtomicUsize = AtomicUsize::new(0);

impl Supervisor {
    /// `exe` is the `tern-sim` binary; `scratch` a directory for the workers' stderr files.
    pub fn new(exe: PathBuf, scratch: PathBuf) -> Supervisor {
        Supervisor {
            exe,
            scratch,
            env: Vec::new(),
            worker: None,
            case_limit: CASE_WALL_MAX,
        }
    }

    /// Cases taking longer than `limit` in wall time are hangs (the explorer's generated cases
    /// take a second or so; shrinking a hang must not wait ten minutes per candidate).
    pub fn with_case_limit(mut self, limit: Duration) -> Supervisor {
        self.case_limit = limit;
        self
    }

    /// Workers get this environment variable too.
    pub fn with_env(mut self, key: &str, value: &str) -> Supervisor {
        self.env.push((key.into(), value.into()));
        self
    }

    fn spawn(&self, echo_trace: bool) -> std::io::Result<Worker> {
        std::fs::create_dir_all(&self.scratch)?;
        let n = WORKERS.fetch_add(1, Ordering::Relaxed);
        let stderr = self
            .scratch
            .join(format!("worker-{}-{n}.stderr", std::process::id()));
        let mut command = Command::new(&self.exe);
        command
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr)?);
        if echo_trace {
            command.env(ECHO_TRACE_ENV, "1");
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut child = command.spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let (sender, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("worker-stdout".into())
            .spawn(move || {
                for line in stdout.lines().map_while(Result::ok) {
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Worker {
            child,
            stdin,
            lines,
            stderr,
        })
    }

    /// Runs one case in the worker (starting one if needed). A worker found dead before the
    /// case began (it died idle) is replaced and the case sent again, so no case is blamed
    /// for another's death.
    pub fn run(&mut self, case: &Case) -> std::io::Result<Report> {
        check_protocol_safe(case)?;
        for attempt in 0..2 {
            if self.worker.is_none() {
                self.worker = Some(self.spawn(false)?);
            }
            let worker = self.worker.as_mut().expect("started");
            if !send(worker, case) && attempt == 0 {
                self.worker = None;
                continue;
            }
            return match receive(worker, self.case_limit) {
                Exchange::Report(report) => Ok(report),
                Exchange::Died => {
                    let dead = self.worker.take().expect("started");
                    self.died(dead, case)
                }
                Exchange::Hung => {
                    self.worker = None;
                    Ok(Report {
                        failed: true,
                        simulated_secs: 0.0,
                        wall_secs: self.case_limit.as_secs_f64(),
                        text: format!(
                            "  checker: hang\n  no result within {:?} of wall time; the worker was killed\n  replay: {}\n",
                            self.case_limit,
                            case.replay()
                        ),
                    })
                }
            };
        }
        unreachable!("the second attempt always returns")
    }

    /// The worker died during `case`: say how, and replay the case in a new worker that
    /// echoes each trace entry as it happens, for the trace up to the crash.
    fn died(&mut self, mut dead: Worker, case: &Case) -> std::io::Result<Report> {
        let status = dead.child.wait()?;
        let why = tail(&dead.stderr, STDERR_TAIL_LINES);
        let mut echo = self.spawn(true)?;
        if send(&mut echo, case) {
            let _ = receive(&mut echo, self.case_limit);
        }
        let trace = tail(&echo.stderr, STDERR_TAIL_LINES);
        Ok(Report {
            failed: true,
            simulated_secs: 0.0,
            wall_secs: 0.0,
            text: format!(
                "  checker: crash\n  the simulation process died ({status}); its last words:\n{why}\n  trace so far (replayed):\n{trace}\n  replay: {}\n",
                case.replay()
            ),
        })
    }
}

/// Paths travel as tab-separated fields on one line: they may not hold tabs or newlines.
fn check_protocol_safe(case: &Case) -> std::io::Result<()> {
    let paths = [Some(&case.path), case.trace.as_ref()];
    match paths
        .into_iter()
        .flatten()
        .find(|p| p.display().to_string().contains(['\t', '\n', '\r']))
    {
        Some(p) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{p:?}: a path with a tab or newline cannot be run"),
        )),
        None => Ok(()),
    }
}

/// Sends `case` to the worker; false if it is gone.
fn send(worker: &mut Worker, case: &Case) -> bool {
    let trace = case
        .trace
        .as_ref()
        .map_or("-".to_string(), |p| p.display().to_string());
    let line = format!(
        "{}\t{}\t{}\t{}\n",
        case.seed,
        u8::from(case.random_latency),
        trace,
        case.path.display()
    );
    worker
        .stdin
        .write_all(line.as_bytes())
        .and_then(|_| worker.stdin.flush())
        .is_ok()
}

/// Reads the worker's report: its lines start with `|` (so no text in a report, a topic say,
/// can pass for the end marker), and `@@` ends it.
// Wall time bounds how long a case may hang; it never enters a simulation.
#[allow(clippy::disallowed_methods)]
fn receive(worker: &mut Worker, limit: Duration) -> Exchange {
    let deadline = std::time::Instant::now() + limit;
    let mut text = String::new();
    loop {
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        let line = match worker.lines.recv_timeout(wait) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => return Exchange::Hung,
            Err(mpsc::RecvTimeoutError::Disconnected) => return Exchange::Died,
        };
        if let Some(report_line) = line.strip_prefix('|') {
            text.push_str(report_line);
            text.push('\n');
        } else if let Some(end) = line.strip_prefix("@@ ") {
            let words: Vec<&str> = end.split_whitespace().collect();
            let number = |i: usize| words.get(i).and_then(|w| w.parse().ok()).unwrap_or(0.0);
            return Exchange::Report(Report {
                failed: words.first() != Some(&"ok"),
                simulated_secs: number(1),
                wall_secs: number(2),
                text,
            });
        }
    }
}

/// The last `lines` lines of a file, indented.
fn tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let length = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(length.saturating_sub(64 * 1024)));
        let _ = file.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("    {l}\n"))
        .collect()
}

/// The worker's side: reads cases from stdin until it closes, runs each in this process and
/// prints its report.
pub fn serve_worker() -> std::io::Result<()> {
    if std::env::var_os(ECHO_TRACE_ENV).is_some() {
        crate::trace::echo_to_stderr(true);
    }
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line?;
        let mut words = line.splitn(4, '\t');
        let seed = words.next().and_then(|w| w.parse().ok()).unwrap_or(1);
        let random_latency = words.next() == Some("1");
        let trace = words.next().filter(|w| *w != "-").map(PathBuf::from);
        let path = PathBuf::from(words.next().unwrap_or_default());
        let case = Case {
            path,
            seed,
            random_latency,
            trace,
        };
        let report = run_in_process(&case);
        let framed: String = report.text.lines().map(|l| format!("|{l}\n")).collect();
        writeln!(
            out,
            "{framed}@@ {} {:.6} {:.6}",
            if report.failed { "fail" } else { "ok" },
            report.simulated_secs,
            report.wall_secs
        )?;
        out.flush()?;
    }
    Ok(())
}

/// The planted bug named by `TERN_PLANTED_BUG`, if any. A name that is no planted bug, or a
/// build without them, is an error: a run must not silently test something else.
pub fn planted_bug_from_env() -> Result<Option<tern::planted::PlantedBug>, String> {
    let Ok(name) = std::env::var(PLANTED_BUG_ENV) else {
        return Ok(None);
    };
    if !tern::planted::AVAILABLE {
        return Err(format!(
            "{PLANTED_BUG_ENV}={name} needs a tern-sim built with --features planted-bugs"
        ));
    }
    tern::planted::PlantedBug::from_name(&name)
        .map(Some)
        .ok_or_else(|| format!("{PLANTED_BUG_ENV}={name}: no planted bug has that name"))
}

/// Runs a case in this process and writes its report (failure details and replay command).
// Wall time is reported to the user, never fed to the simulation.
#[allow(clippy::disallowed_methods)]
pub fn run_in_process(case: &Case) -> Report {
    let scenario = match Scenario::load(&case.path) {
        Ok(s) => s,
        Err(error) => return Report::refused(&error.to_string()),
    };
    let planted_bug = match planted_bug_from_env() {
        Ok(bug) => bug,
        Err(error) => return Report::refused(&error.to_string()),
    };
    let options = Options {
        seed: case.seed,
        max_latency: case.random_latency.then_some(RANDOM_LATENCY_MAX),
        planted_bug,
    };
    let wall = std::time::Instant::now();
    let outcome = world::run(&scenario, &options);
    let wall_secs = wall.elapsed().as_secs_f64();
    if let Some(path) = &case.trace {
        let blamed = outcome.failure.as_ref().and_then(|f| f.at_entry);
        let title = format!("{} seed {}", case.path.display(), case.seed);
        let text = match path.extension().and_then(|e| e.to_str()) {
            Some("svg") => crate::picture::svg(&outcome.trace, blamed),
            Some("html") => crate::picture::html(&outcome.trace, blamed, &title),
            _ => outcome.trace.render(),
        };
        let _ = std::fs::write(path, text);
    }
    let mut text = String::new();
    if let Some(failure) = &outcome.failure {
        text.push_str(&format!(
            "  checker: {}\n  {}\n",
            failure.checker, failure.message
        ));
        if let Some(at) = failure.at_entry {
            text.push_str(&format!(
                "  trace around the failure:\n{}",
                outcome.trace.around(at, 12)
            ));
        }
        text.push_str(&format!("  replay: {}\n", case.replay()));
    }
    Report {
        failed: outcome.failure.is_some(),
        simulated_secs: outcome.simulated.as_secs_f64(),
        wall_secs,
        text,
    }
}
