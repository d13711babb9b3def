//! The head's memory of what workers printed: the last lines of each node, and of each
//! of the last tasks that printed, for `sunray status`-like views (the dashboard). Every
//! line also goes to its driver as it comes; this only keeps bounded tails.

use std::collections::{HashMap, VecDeque};

use sunray_proto::{NodeId, TaskId, TaskOutput};

/// Lines kept per node.
pub const NODE_LINES: usize = 500;
/// Lines kept per task.
pub const TASK_LINES: usize = 200;
/// Tasks whose output is kept (the most recent to print).
pub const TASKS_KEPT: usize = 256;

struct TaskTail {
    function: String,
    node: NodeId,
    lines: VecDeque<String>,
    total: u64,
}

#[derive(Default)]
pub struct LogTails {
    nodes: HashMap<NodeId, VecDeque<String>>,
    tasks: HashMap<TaskId, TaskTail>,
    /// Tasks by their first line, oldest first (the oldest is forgotten first).
    order: VecDeque<TaskId>,
}

fn push(q: &mut VecDeque<String>, line: String, cap: usize) {
    if q.len() == cap {
        q.pop_front();
    }
    q.push_back(line);
}

impl LogTails {
    /// `lines` printed on `node` by the worker `origin` names, while it ran `task`.
    pub fn record(
        &mut self,
        node: NodeId,
        origin: &str,
        task: Option<(TaskId, &str)>,
        lines: &[String],
    ) {
        let n = self.nodes.entry(node).or_default();
        for l in lines {
            push(n, format!("({origin}) {l}"), NODE_LINES);
        }
        let Some((task, function)) = task else { return };
        if !self.tasks.contains_key(&task) {
            if self.order.len() == TASKS_KEPT {
                if let Some(old) = self.order.pop_front() {
                    self.tasks.remove(&old);
                }
            }
            self.order.push_back(task);
            self.tasks.insert(
                task,
                TaskTail {
                    function: function.to_string(),
                    node,
                    lines: VecDeque::new(),
                    total: 0,
                },
            );
        }
        let t = self.tasks.get_mut(&task).expect("inserted above");
        for l in lines {
            push(&mut t.lines, l.clone(), TASK_LINES);
            t.total += 1;
        }
    }

    pub fn node(&self, node: NodeId) -> Vec<String> {
        self.nodes
            .get(&node)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn task(&self, task: TaskId) -> Vec<String> {
        self.tasks
            .get(&task)
            .map(|t| t.lines.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The tasks whose output is kept, newest first.
    pub fn tasks(&self) -> Vec<TaskOutput> {
        self.order
            .iter()
            .rev()
            .filter_map(|id| {
                let t = self.tasks.get(id)?;
                Some(TaskOutput {
                    task: *id,
                    function: t.function.clone(),
                    node: t.node,
                    lines: t.total,
                })
            })
            .collect()
    }

    pub fn forget_node(&mut self, node: NodeId) {
        self.nodes.remove(&node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_are_bounded_and_keep_the_newest() {
        let mut l = LogTails::default();
        for i in 0..(TASKS_KEPT as u64 + 10) {
            let lines: Vec<String> = (0..3).map(|k| format!("t{i} line {k}")).collect();
            l.record(1, "pid=1, ip=x", Some((i, "m::f")), &lines);
        }
        let tasks = l.tasks();
        assert_eq!(tasks.len(), TASKS_KEPT);
        assert_eq!(tasks[0].task, TASKS_KEPT as u64 + 9, "newest first");
        assert!(l.task(0).is_empty(), "the oldest is forgotten");
        assert_eq!(
            l.task(265),
            vec!["t265 line 0", "t265 line 1", "t265 line 2"]
        );
        let node = l.node(1);
        assert_eq!(node.len(), NODE_LINES);
        assert_eq!(node.last().unwrap(), "(pid=1, ip=x) t265 line 2");
        let many: Vec<String> = (0..TASK_LINES + 5).map(|k| k.to_string()).collect();
        l.record(2, "o", Some((999, "m::g")), &many);
        assert_eq!(l.task(999).len(), TASK_LINES);
        assert_eq!(l.tasks()[0].lines, (TASK_LINES + 5) as u64);
    }
}
