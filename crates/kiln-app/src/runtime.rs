//! The process's one tokio runtime: multi-thread with two workers, made on first use and
//! kept until the process exits. Commands are synchronous functions; each runs its async work
//! (solves, registry requests, the engine's BuildKit API) with [`block_on`], which refuses to
//! run inside the runtime (tokio would panic on a nested `block_on`).

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

use crate::AppError;

fn runtime() -> Result<&'static Runtime, AppError> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| AppError::Engine(format!("cannot start the async runtime: {e}")))
}

/// Run `work` to completion on the process's runtime, from synchronous code. Called from
/// inside the runtime (an async task, or a blocking task it spawned) it is an error, not the
/// panic a nested `block_on` would be.
pub(crate) fn block_on<F: Future>(work: F) -> Result<F::Output, AppError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(AppError::Engine(
            "internal error: a command's blocking call ran inside the async runtime".to_string(),
        ));
    }
    Ok(runtime()?.block_on(work))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_runtime_for_every_call() {
        let first = runtime().unwrap() as *const Runtime;
        let thread = std::thread::spawn(|| runtime().unwrap() as *const Runtime as usize)
            .join()
            .unwrap();
        assert_eq!(first as usize, thread);
        // Work spawned by one call is still served by the next (the runtime lives on).
        let (tx, rx) = tokio::sync::oneshot::channel();
        block_on(async {
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let _ = tx.send(7);
            });
        })
        .unwrap();
        assert_eq!(block_on(rx).unwrap().unwrap(), 7);
    }

    #[test]
    fn calls_from_threads_at_once_share_it() {
        let threads: Vec<_> = (0..4)
            .map(|i| {
                std::thread::spawn(move || {
                    block_on(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        i
                    })
                    .unwrap()
                })
            })
            .collect();
        let sum: i32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(sum, 6);
    }

    #[test]
    fn nested_block_on_is_an_error_not_a_panic() {
        let inner = block_on(async { block_on(async { 1 }) }).unwrap();
        let err = inner.unwrap_err().to_string();
        assert!(err.contains("inside the async runtime"), "{err}");
        // From a blocking task the runtime spawned, too.
        let inner = block_on(async {
            tokio::task::spawn_blocking(|| block_on(async { 1 }).is_err())
                .await
                .unwrap()
        })
        .unwrap();
        assert!(inner);
    }
}
