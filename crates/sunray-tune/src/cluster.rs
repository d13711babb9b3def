//! How the controller reaches the cluster. The Rust API runs trials as the registered
//! `sunray_tune::run_trial` task of this executable; the Python front end runs them as
//! Python tasks over its own connection. Either way the controller sees the same few
//! calls, and trials talk back through the same messages (`trainable::ToDriver`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::Receiver;

use bytes::Bytes;
use sunray::ext::TaskEvent;
use sunray::{IntoArg, NodeInfo, ObjectRef, TaskOptions};

use crate::trainable::TRIAL_TASK;
use crate::TuneError;

/// What the controller needs of the cluster.
pub trait TrialCluster: Send {
    /// Submits the task that runs trial `trial_id`, holding `resources`; returns the id
    /// its [`TaskEvent::Finished`] will carry.
    fn launch(
        &mut self,
        trial_id: &str,
        experiment_dir: &Path,
        marker: &str,
        resources: &TaskOptions,
    ) -> Result<u64, TuneError>;
    /// The outcome of a launched task that finished (its error's message), forgetting it.
    fn outcome(&mut self, task: u64) -> Result<(), String>;
    /// Answers a trial's message.
    fn reply(&self, task: u64, data: Bytes) -> Result<(), TuneError>;
    /// The cluster's nodes, when the head answers.
    fn nodes(&self) -> Option<Vec<NodeInfo>>;
    /// Trials' messages and task completions.
    fn events(&self) -> Result<Receiver<TaskEvent>, TuneError>;
}

/// Trials of a Rust trainable registered in this executable.
pub(crate) struct NativeCluster {
    trainable: &'static str,
    tasks: HashMap<u64, ObjectRef<()>>,
}

fn cluster_err(e: impl std::fmt::Display) -> TuneError {
    TuneError::Cluster(e.to_string())
}

impl NativeCluster {
    pub fn new(trainable: &'static str) -> Self {
        NativeCluster {
            trainable,
            tasks: HashMap::new(),
        }
    }
}

impl TrialCluster for NativeCluster {
    fn launch(
        &mut self,
        trial_id: &str,
        experiment_dir: &Path,
        marker: &str,
        resources: &TaskOptions,
    ) -> Result<u64, TuneError> {
        let args = vec![
            IntoArg::<String>::into_arg(self.trainable.to_string()),
            IntoArg::<String>::into_arg(trial_id.to_string()),
            IntoArg::<String>::into_arg(experiment_dir.to_string_lossy().into_owned()),
            IntoArg::<String>::into_arg(marker.to_string()),
        ];
        let r: ObjectRef<()> = sunray::__private::submit(TRIAL_TASK, args, resources);
        let id = r.id();
        self.tasks.insert(id, r);
        Ok(id)
    }
    fn outcome(&mut self, task: u64) -> Result<(), String> {
        match self.tasks.remove(&task) {
            Some(r) => r.get().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
    fn reply(&self, task: u64, data: Bytes) -> Result<(), TuneError> {
        sunray::ext::client()
            .map_err(cluster_err)?
            .reply_to_task(task, data)
            .map_err(cluster_err)
    }
    fn nodes(&self) -> Option<Vec<NodeInfo>> {
        sunray::nodes().ok()
    }
    fn events(&self) -> Result<Receiver<TaskEvent>, TuneError> {
        Ok(sunray::ext::client().map_err(cluster_err)?.task_events())
    }
}
