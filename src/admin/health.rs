//! `/readyz`: ready when a message could be spooled now and every SMTP listener is
//! accepting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::spool::Spool;

/// What readiness is checked against.
pub struct Readiness {
    pub spool: Arc<Spool>,
    /// SMTP listeners configured.
    pub listeners: usize,
    /// SMTP listeners accepting now (each one's task counts itself out when it ends).
    pub listening: Arc<AtomicUsize>,
}

impl Readiness {
    /// `Ok`, or a one-line reason.
    pub async fn check(&self) -> Result<(), String> {
        let up = self.listening.load(Ordering::Relaxed);
        if up < self.listeners || self.listeners == 0 {
            return Err(format!(
                "{up} of {} SMTP listeners accepting",
                self.listeners
            ));
        }
        let spool = self.spool.clone();
        match tokio::task::spawn_blocking(move || spool.probe_writable()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!(
                "spool directory {} not writable: {e}",
                self.spool.dir().display()
            )),
            Err(e) => Err(format!("spool check failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_only_with_a_writable_spool_and_all_listeners() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let r = Readiness {
            spool: Arc::new(spool),
            listeners: 2,
            listening: Arc::new(AtomicUsize::new(2)),
        };
        assert_eq!(r.check().await, Ok(()));
        assert_eq!(
            std::fs::read_dir(dir.path().join("queue")).unwrap().count(),
            0,
            "the probe file is removed"
        );
        r.listening.store(1, Ordering::Relaxed);
        assert_eq!(
            r.check().await,
            Err("1 of 2 SMTP listeners accepting".into())
        );
        r.listening.store(2, Ordering::Relaxed);
        // A file where the queue directory was: no file can be made there, even by root.
        let queue = dir.path().join("queue");
        std::fs::remove_dir(&queue).unwrap();
        std::fs::write(&queue, b"not a directory").unwrap();
        let err = r.check().await.unwrap_err();
        assert!(
            err.starts_with("spool directory") && err.contains("not writable"),
            "{err}"
        );
        assert!(!err.contains('\n'), "one line: {err}");
    }
}
