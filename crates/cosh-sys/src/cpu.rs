//! Which CPUs a thread runs on: measurements that must cross between two cores (a wake-up,
//! a benchmark's sender and receiver) hold their threads on two different ones.

use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

/// The CPUs the calling thread may run on now, to give back with [`restore`].
pub fn allowed() -> Option<CpuSet> {
    sched_getaffinity(None).ok()
}

/// The first two CPUs the calling thread may run on, if it may run on two.
pub fn first_two() -> Option<(usize, usize)> {
    let set = allowed()?;
    let mut cpus = (0..CpuSet::MAX_CPU).filter(|c| set.is_set(*c));
    Some((cpus.next()?, cpus.next()?))
}

/// Runs the calling thread on `cpu` only.
pub fn pin(cpu: usize) -> Result<(), String> {
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(None, &set).map_err(|e| format!("cannot run on CPU {cpu}: {e}"))
}

/// Lets the calling thread run on `set` again (from [`allowed`]).
pub fn restore(set: &CpuSet) {
    let _ = sched_setaffinity(None, set);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_pinned_runs_there_and_gets_its_cpus_back() {
        let before = allowed().expect("affinity");
        let Some((first, _)) = first_two() else {
            return; // one CPU: nothing to choose
        };
        std::thread::spawn(move || {
            pin(first).expect("pin");
            let now = allowed().expect("affinity");
            assert!(now.is_set(first) && now.count() == 1);
            restore(&before);
            assert_eq!(allowed().expect("affinity").count(), before.count());
        })
        .join()
        .expect("thread");
    }
}
