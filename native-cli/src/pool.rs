//! Bounded parallel work whose results are written in input order: the remote backend's
//! requests run on `workers` threads, and the one writer (the caller's thread) receives each
//! result in the order of `items`, so an output file is the same whatever the concurrency and
//! a resumed run appends where the previous one stopped. Only `2 × workers` items are handed
//! out ahead of the writer, so one slow request holds back a bounded number of finished ones.
//! On an error no further work is handed out; the items before the failed one are still
//! awaited and written (nothing finished is lost), then the work still running is cancelled
//! (the flag is passed to `work`) and the error is returned.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};

use anyhow::Result;

pub fn ordered<T, R>(
    items: &[T],
    workers: usize,
    work: impl Fn(&T, &AtomicBool) -> Result<R> + Sync,
    mut write: impl FnMut(&T, R) -> Result<()>,
) -> Result<()>
where
    T: Sync,
    R: Send,
{
    let workers = workers.clamp(1, items.len().max(1));
    let window = 2 * workers;
    let cancel = AtomicBool::new(false);
    let (job_tx, job_rx) = mpsc::channel::<usize>();
    let job_rx = Mutex::new(job_rx);
    let (res_tx, res_rx) = mpsc::channel::<(usize, Result<R>)>();
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (job_rx, res_tx, work, cancel) = (&job_rx, res_tx.clone(), &work, &cancel);
            s.spawn(move || {
                loop {
                    // The lock is held only while taking a job, never while working.
                    let job = job_rx.lock().map_err(|_| ()).and_then(|rx| rx.recv().map_err(|_| ()));
                    let Ok(i) = job else { break };
                    if cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    if res_tx.send((i, work(&items[i], cancel))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(res_tx);
        let mut sent = 0;
        while sent < items.len().min(window) {
            let _ = job_tx.send(sent);
            sent += 1;
        }
        let mut ready: BTreeMap<usize, R> = BTreeMap::new();
        let mut next = 0;
        // The earliest failed item: work before it is still awaited and written, none after
        // it is handed out.
        let mut failed: Option<(usize, anyhow::Error)> = None;
        let mut outcome = Ok(());
        'recv: while next < failed.as_ref().map_or(items.len(), |(i, _)| *i) {
            let Ok((i, r)) = res_rx.recv() else { break };
            match r {
                Ok(r) => {
                    ready.insert(i, r);
                }
                Err(e) => {
                    if failed.as_ref().is_none_or(|(j, _)| i < *j) {
                        failed = Some((i, e));
                    }
                }
            }
            while let Some(r) = ready.remove(&next) {
                if let Err(e) = write(&items[next], r) {
                    outcome = Err(e);
                    break 'recv;
                }
                next += 1;
                if failed.is_none() && sent < items.len() {
                    let _ = job_tx.send(sent);
                    sent += 1;
                }
            }
        }
        if let Some((_, e)) = failed
            && outcome.is_ok()
        {
            outcome = Err(e);
        }
        if outcome.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
        drop(job_tx);
        outcome
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn results_are_written_in_input_order_whatever_finishes_first() {
        let items: Vec<u64> = (0..20).collect();
        let mut out = Vec::new();
        ordered(
            &items,
            4,
            |&i, _| {
                // Later items finish first.
                std::thread::sleep(Duration::from_millis(2 * (20 - i)));
                Ok(i * 10)
            },
            |&i, r| {
                out.push((i, r));
                Ok(())
            },
        )
        .expect("runs");
        assert_eq!(out, (0..20).map(|i| (i, i * 10)).collect::<Vec<_>>());
    }

    #[test]
    fn an_error_keeps_the_finished_prefix_and_cancels_the_rest() {
        let items: Vec<u64> = (0..50).collect();
        let started = std::sync::atomic::AtomicUsize::new(0);
        let mut out = Vec::new();
        let e = ordered(
            &items,
            3,
            |&i, _| {
                started.fetch_add(1, Ordering::Relaxed);
                if i == 5 {
                    anyhow::bail!("item 5 failed")
                }
                std::thread::sleep(Duration::from_millis(1));
                Ok(i)
            },
            |&i, _| {
                out.push(i);
                Ok(())
            },
        )
        .expect_err("fails");
        assert_eq!(e.to_string(), "item 5 failed");
        assert_eq!(
            out,
            (0..5).collect::<Vec<_>>(),
            "everything before the failure is written"
        );
        assert!(
            started.load(Ordering::Relaxed) <= 5 + 2 * 3 + 1,
            "work stops within the window"
        );
    }

    #[test]
    fn no_items_is_fine() {
        ordered(&Vec::<u8>::new(), 4, |_, _| Ok(()), |_, ()| Ok(())).expect("empty");
    }
}
