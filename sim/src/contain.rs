//! Containment: a run executes on a thread with the stack a production runtime worker has
//! (`tern::net::WORKER_STACK_BYTES`), so a recursion that would crash the real broker crashes
//! the simulation too, and a panic anywhere in it (the broker's tasks, a client, the
//! director) becomes a failure of that run, with the trace so far, instead of a silent dead
//! task or a dead test process. What cannot be caught in-process (a stack overflow aborts)
//! is contained one level up: `tern-sim` runs cases in a child process (`supervisor.rs`).

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static CAPTURED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f` on a new thread with the production worker stack and returns its result, or the
/// panic message if it panicked.
pub fn on_production_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("simulation".into())
            .stack_size(tern::net::WORKER_STACK_BYTES)
            .spawn_scoped(scope, f)
            .map_err(|e| format!("cannot start the simulation thread: {e}"))?;
        thread.join().map_err(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into())
        })
    })
}

/// Runs `f` with panics on this thread recorded (first one wins) instead of printed: tokio
/// swallows a panicking task's unwind, so the record is how the director learns of it.
/// Returns `f`'s result, or None if a panic unwound out of it.
pub fn capturing_panics<T>(f: impl FnOnce() -> T) -> Option<T> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CAPTURING.get() {
                CAPTURED.with(|c| {
                    c.borrow_mut().get_or_insert_with(|| info.to_string());
                });
            } else {
                previous(info);
            }
        }));
    });
    CAPTURED.with(|c| c.borrow_mut().take());
    CAPTURING.set(true);
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CAPTURING.set(false);
    result.ok()
}

/// The first panic recorded on this thread since `capturing_panics` began, if any.
pub fn panicked() -> Option<String> {
    CAPTURED.with(|c| c.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_a_task_is_recorded_and_a_deep_recursion_has_the_production_stack() {
        let outcome = on_production_stack(|| {
            capturing_panics(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    // tokio catches the task's unwind; only the record shows it.
                    let _ = tokio::spawn(async { panic!("boom in a task") }).await;
                });
                panicked()
            })
        });
        let recorded = outcome.unwrap().unwrap().unwrap();
        assert!(recorded.contains("boom in a task"), "{recorded}");
        let direct = on_production_stack(|| capturing_panics(|| panic!("direct")));
        assert_eq!(direct.unwrap(), None);
    }
}
