//! Runs simulation cases in a child process (`tern-sim worker`), one after another, so a case
//! that takes the whole process down (a stack overflow aborts; no unwinding can catch it) is
//! reported as that case's failure, with the trace so far and the replay command, and the
//! sweep goes on in a fresh child.
//!
//! The protocol is lines: the parent writes `SEED RANDOM_LATENCY(0|1) TRACE_FILE|- PATH`, the
//! worker prints its report and ends it with `@@ ok|fail SIMULATED_SECS WALL_SECS`. The trace
//! so far of a case that killed its worker comes from replaying it (runs are deterministic)
//! in a worker that echoes each trace entry to its stderr as it happens.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::scenario::Scenario;
use crate::world::{self, Options, RANDOM_LATENCY_MAX};

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

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: PathBuf,
}

/// Owns the worker process and restarts it when a case kills it.
pub struct Supervisor {
    exe: PathBuf,
    scratch: PathBuf,
    env: Vec<(String, String)>,
    worker: Option<Worker>,
}

impl Supervisor {
    /// `exe` is the `tern-sim` binary; `scratch` a directory for the workers' stderr files.
    pub fn new(exe: PathBuf, scratch: PathBuf) -> Supervisor {
        Supervisor {
            exe,
            scratch,
            env: Vec::new(),
            worker: None,
        }
    }

    /// Workers get this environment variable too.
    pub fn with_env(mut self, key: &str, value: &str) -> Supervisor {
        self.env.push((key.into(), value.into()));
        self
    }

    fn spawn(&self, echo_trace: bool) -> std::io::Result<Worker> {
        std::fs::create_dir_all(&self.scratch)?;
        let stderr = self
            .scratch
            .join(format!("worker-{}.stderr", std::process::id()));
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
        Ok(Worker {
            child,
            stdin,
            stdout,
            stderr,
        })
    }

    /// Runs one case in the worker (starting one if needed).
    pub fn run(&mut self, case: &Case) -> std::io::Result<Report> {
        if self.worker.is_none() {
            self.worker = Some(self.spawn(false)?);
        }
        let worker = self.worker.as_mut().expect("started");
        match exchange(worker, case)? {
            Some(report) => Ok(report),
            None => {
                let dead = self.worker.take().expect("started");
                self.died(dead, case)
            }
        }
    }

    /// The worker died during `case`: say how, and replay the case in an echoing worker for
    /// the trace so far.
    fn died(&mut self, mut dead: Worker, case: &Case) -> std::io::Result<Report> {
        let status = dead.child.wait()?;
        let why = tail(&dead.stderr, STDERR_TAIL_LINES);
        let mut echo = self.spawn(true)?;
        // Skip what an earlier case echoed: only this replay's lines matter.
        let _ = exchange(&mut echo, case)?;
        let _ = echo.child.wait();
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

/// Sends `case` to the worker and reads its report; None if the worker died first.
fn exchange(worker: &mut Worker, case: &Case) -> std::io::Result<Option<Report>> {
    let trace = case
        .trace
        .as_ref()
        .map_or("-".to_string(), |p| p.display().to_string());
    let line = format!(
        "{} {} {} {}\n",
        case.seed,
        u8::from(case.random_latency),
        trace,
        case.path.display()
    );
    if worker
        .stdin
        .write_all(line.as_bytes())
        .and_then(|_| worker.stdin.flush())
        .is_err()
    {
        return Ok(None);
    }
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if worker.stdout.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if let Some(end) = line.strip_prefix("@@ ") {
            let words: Vec<&str> = end.split_whitespace().collect();
            let number = |i: usize| words.get(i).and_then(|w| w.parse().ok()).unwrap_or(0.0);
            return Ok(Some(Report {
                failed: words.first() != Some(&"ok"),
                simulated_secs: number(1),
                wall_secs: number(2),
                text,
            }));
        }
        text.push_str(&line);
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
        let mut words = line.splitn(4, ' ');
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
        writeln!(
            out,
            "{}@@ {} {:.6} {:.6}",
            report.text,
            if report.failed { "fail" } else { "ok" },
            report.simulated_secs,
            report.wall_secs
        )?;
        out.flush()?;
    }
    Ok(())
}

/// The planted bug named by `TERN_PLANTED_BUG`, if any.
pub fn planted_bug_from_env() -> Option<tern::planted::PlantedBug> {
    let name = std::env::var(PLANTED_BUG_ENV).ok()?;
    tern::planted::PlantedBug::from_name(&name)
}

/// Runs a case in this process and writes its report (failure details and replay command).
// Wall time is reported to the user, never fed to the simulation.
#[allow(clippy::disallowed_methods)]
pub fn run_in_process(case: &Case) -> Report {
    let scenario = match Scenario::load(&case.path) {
        Ok(s) => s,
        Err(error) => {
            return Report {
                failed: true,
                simulated_secs: 0.0,
                wall_secs: 0.0,
                text: format!("  {error}\n"),
            }
        }
    };
    let options = Options {
        seed: case.seed,
        max_latency: case.random_latency.then_some(RANDOM_LATENCY_MAX),
        planted_bug: planted_bug_from_env(),
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
