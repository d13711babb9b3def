//! The head's actor table: which actors exist, where each lives, the calls waiting for
//! it, and what happens when it dies (restart or burial). Plain bookkeeping with no I/O;
//! the head carries out what it decides (sending calls, resubmitting the creation task,
//! failing calls).

use std::collections::{HashMap, VecDeque};

use sunray_proto::{
    ActorId, ActorOptions, ActorState, ActorView, BinaryInfo, ClientId, NodeId, Resources, TaskId,
    TaskSpec,
};

/// Dead actors kept for `sunray status` (and for a clear error to late callers).
const DEAD_KEPT: usize = 100;

pub struct ActorEntry {
    pub opts: ActorOptions,
    pub owner: ClientId,
    /// Its driver's program: a detached actor may restart after its driver left.
    pub binary: BinaryInfo,
    pub resources: Resources,
    pub state: ActorState,
    /// Where its creation task was placed (and so where its worker lives).
    pub node: Option<NodeId>,
    pub restarts: u32,
    /// The creation task as last sent, its arguments resolved: what a restart runs.
    pub spec: Option<TaskSpec>,
    /// Calls not sent yet, in the order the head received them (the order they run in).
    pub queue: VecDeque<TaskId>,
    /// Calls sent to its node, oldest first.
    pub sent: VecDeque<TaskId>,
    /// `kill(no_restart=True)` was asked: its death is final.
    pub no_restart: bool,
    /// Clients told where this incarnation lives (`HeadToDriver::ActorAt`).
    pub told: std::collections::HashSet<ClientId>,
    /// Why it died last (it may have been restarted since).
    pub death: Option<String>,
}

impl ActorEntry {
    fn may_restart(&self) -> bool {
        !self.no_restart
            && (self.opts.max_restarts < 0 || (self.restarts as i64) < self.opts.max_restarts)
    }

    /// Retries a call of this actor gets when the actor dies under it.
    pub fn call_retries(&self) -> u32 {
        match self.opts.max_task_retries {
            n if n < 0 => u32::MAX,
            n => n.min(u32::MAX as i64) as u32,
        }
    }

    /// "Counter (actor 0x…)", "Counter 'name' (actor 0x…)".
    pub fn describe(&self, id: ActorId) -> String {
        match &self.opts.name {
            Some(n) => format!("{} '{n}' (actor {id:#x})", self.opts.class),
            None => format!("{} (actor {id:#x})", self.opts.class),
        }
    }
}

/// What became of an actor that lost its process or node.
#[derive(Debug, PartialEq, Eq)]
pub enum Fate {
    /// Its creation task runs again; `retry` calls go back to the front of its queue
    /// (in order), `fail` calls had no retries left.
    Restart {
        retry: Vec<TaskId>,
        fail: Vec<TaskId>,
    },
    /// Dead for good: every call it had fails.
    Dead { fail: Vec<TaskId> },
}

#[derive(Default)]
pub struct Actors {
    by_id: HashMap<ActorId, ActorEntry>,
    names: HashMap<String, ActorId>,
    dead: VecDeque<ActorId>,
}

impl Actors {
    pub fn get(&self, id: ActorId) -> Option<&ActorEntry> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: ActorId) -> Option<&mut ActorEntry> {
        self.by_id.get_mut(&id)
    }

    /// A new actor, pending until its creation task is placed and returns.
    pub fn create(
        &mut self,
        id: ActorId,
        owner: ClientId,
        opts: &ActorOptions,
        binary: BinaryInfo,
        resources: Resources,
    ) -> Result<(), String> {
        if self.by_id.contains_key(&id) {
            return Err(format!("actor id {id:#x} is taken"));
        }
        let clash = opts.name.as_ref().and_then(|n| {
            let other = self.names.get(n)?;
            Some(format!(
                "an actor named '{n}' exists already (actor {other:#x}): get it with get_actor('{n}'), or pick another name"
            ))
        });
        if clash.is_none() {
            if let Some(n) = &opts.name {
                self.names.insert(n.clone(), id);
            }
        }
        self.by_id.insert(
            id,
            ActorEntry {
                opts: opts.clone(),
                owner,
                binary,
                resources,
                state: ActorState::Pending,
                node: None,
                restarts: 0,
                spec: None,
                queue: VecDeque::new(),
                sent: VecDeque::new(),
                no_restart: false,
                told: Default::default(),
                death: None,
            },
        );
        match clash {
            None => Ok(()),
            Some(why) => {
                // Kept dead, so that calls on its handle say why it never lived.
                self.bury(id, &why);
                Err(why)
            }
        }
    }

    /// Can `actor` take a call? Its retries if so; why not otherwise.
    pub fn accept_call(&self, actor: ActorId) -> Result<u32, String> {
        match self.by_id.get(&actor) {
            None => Err(format!(
                "there is no actor {actor:#x} (it never existed, or died long ago)"
            )),
            Some(a) if a.state == ActorState::Dead => Err(format!(
                "{} is dead: {}",
                a.describe(actor),
                a.death.as_deref().unwrap_or("unknown cause")
            )),
            Some(a) => Ok(a.call_retries()),
        }
    }

    /// The creation task went to `node` with these (resolved) arguments.
    pub fn placed(&mut self, id: ActorId, node: NodeId, spec: &TaskSpec) {
        if let Some(a) = self.by_id.get_mut(&id) {
            a.node = Some(node);
            a.spec = Some(spec.clone());
        }
    }

    /// Its constructor returned on `node`: true the first time (its creator is told),
    /// false after a restart.
    pub fn alive(&mut self, id: ActorId) -> bool {
        let Some(a) = self.by_id.get_mut(&id) else {
            return false;
        };
        let first = a.state == ActorState::Pending;
        a.state = ActorState::Alive;
        first
    }

    /// The actor lost its process or node. `retry(call)` spends one retry of a call
    /// and says whether it had one. Does nothing to a dead actor (None).
    pub fn lost(
        &mut self,
        id: ActorId,
        why: &str,
        mut retry: impl FnMut(TaskId) -> bool,
    ) -> Option<Fate> {
        let a = self.by_id.get_mut(&id)?;
        if a.state == ActorState::Dead {
            return None;
        }
        let sent: Vec<TaskId> = a.sent.drain(..).collect();
        a.node = None;
        a.told.clear();
        a.death = Some(why.to_string());
        if a.may_restart() {
            a.restarts += 1;
            a.state = ActorState::Restarting;
            let (retry, fail): (Vec<_>, Vec<_>) = sent.into_iter().partition(|t| retry(*t));
            for t in retry.iter().rev() {
                a.queue.push_front(*t);
            }
            return Some(Fate::Restart { retry, fail });
        }
        let mut fail = sent;
        fail.extend(a.queue.drain(..));
        self.bury(id, why);
        Some(Fate::Dead { fail })
    }

    /// Marks the actor dead for good; returns the calls it still had (to fail).
    pub fn kill_now(&mut self, id: ActorId, why: &str) -> Vec<TaskId> {
        let Some(a) = self.by_id.get_mut(&id) else {
            return Vec::new();
        };
        if a.state == ActorState::Dead {
            return Vec::new();
        }
        let mut fail: Vec<TaskId> = a.sent.drain(..).collect();
        fail.extend(a.queue.drain(..));
        self.bury(id, why);
        fail
    }

    fn bury(&mut self, id: ActorId, why: &str) {
        let Some(a) = self.by_id.get_mut(&id) else {
            return;
        };
        a.state = ActorState::Dead;
        a.node = None;
        a.spec = None;
        a.death = Some(why.to_string());
        if let Some(n) = &a.opts.name {
            if self.names.get(n) == Some(&id) {
                self.names.remove(n);
            }
        }
        self.dead.push_back(id);
        while self.dead.len() > DEAD_KEPT {
            if let Some(old) = self.dead.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    /// Live actors of `client` that die with it (not detached).
    pub fn owned_by(&self, client: ClientId) -> Vec<ActorId> {
        let mut v: Vec<ActorId> = self
            .by_id
            .iter()
            .filter(|(_, a)| a.owner == client && !a.opts.detached && a.state != ActorState::Dead)
            .map(|(id, _)| *id)
            .collect();
        v.sort_unstable();
        v
    }

    pub fn view(&self) -> Vec<ActorView> {
        let mut v: Vec<ActorView> = self
            .by_id
            .iter()
            .map(|(id, a)| ActorView {
                id: *id,
                class: a.opts.class.clone(),
                name: a.opts.name.clone(),
                state: a.state,
                node: a.node,
                owner: a.owner,
                detached: a.opts.detached,
                restarts: a.restarts,
                resources: a.resources.clone(),
                pending_calls: (a.queue.len() + a.sent.len()) as u64,
                death: a.death.clone(),
            })
            .collect();
        v.sort_by_key(|a| a.id);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(name: Option<&str>, max_restarts: i64, max_task_retries: i64) -> ActorOptions {
        ActorOptions {
            class: "Counter".into(),
            name: name.map(String::from),
            detached: false,
            max_restarts,
            max_task_retries,
            max_concurrency: 1,
        }
    }

    fn binary() -> BinaryInfo {
        BinaryInfo {
            path: "/bin/x".into(),
            hash: "0".repeat(32),
            size: 1,
            registry_hash: String::new(),
            kind: sunray_proto::ProgramKind::Native,
        }
    }

    #[test]
    fn names_are_unique_among_live_actors_and_free_again_once_dead() {
        let mut t = Actors::default();
        t.create(1, 7, &opts(Some("c"), 0, 0), binary(), Resources::default())
            .unwrap();
        let e = t
            .create(2, 7, &opts(Some("c"), 0, 0), binary(), Resources::default())
            .unwrap_err();
        assert!(e.contains("'c' exists already"), "{e}");
        // The refused one is dead; its calls say why.
        assert!(t.accept_call(2).unwrap_err().contains("exists already"));
        t.kill_now(1, "killed");
        t.create(3, 7, &opts(Some("c"), 0, 0), binary(), Resources::default())
            .unwrap();
    }

    #[test]
    fn restarts_are_counted_and_in_flight_calls_keep_their_order() {
        let mut t = Actors::default();
        t.create(1, 7, &opts(None, 1, 0), binary(), Resources::default())
            .unwrap();
        t.alive(1);
        let a = t.get_mut(1).unwrap();
        a.sent.extend([10, 11, 12]);
        a.queue.extend([13]);
        // 10 and 12 have a retry left, 11 has none.
        let fate = t.lost(1, "crash", |c| c != 11).unwrap();
        assert_eq!(
            fate,
            Fate::Restart {
                retry: vec![10, 12],
                fail: vec![11]
            }
        );
        let a = t.get(1).unwrap();
        assert_eq!(a.queue, [10, 12, 13], "retries go first, in their order");
        assert_eq!((a.state, a.restarts), (ActorState::Restarting, 1));
        assert!(!t.alive(1), "a restart is not a first start");
        // 10 is sent again; the second death exceeds max_restarts=1: every call fails.
        let a = t.get_mut(1).unwrap();
        a.queue.pop_front();
        a.sent.push_back(10);
        let fate = t.lost(1, "crash again", |_| true).unwrap();
        assert_eq!(
            fate,
            Fate::Dead {
                fail: vec![10, 12, 13]
            }
        );
        assert_eq!(t.get(1).unwrap().death.as_deref(), Some("crash again"));
        assert!(t.lost(1, "late report", |_| true).is_none());
        assert!(t.accept_call(1).unwrap_err().contains("crash again"));
    }

    #[test]
    fn kill_without_restart_is_final_even_with_restarts_left() {
        let mut t = Actors::default();
        t.create(1, 7, &opts(None, -1, -1), binary(), Resources::default())
            .unwrap();
        t.alive(1);
        t.get_mut(1).unwrap().no_restart = true;
        assert!(matches!(
            t.lost(1, "killed", |_| true),
            Some(Fate::Dead { .. })
        ));
    }

    #[test]
    fn only_the_last_dead_actors_are_kept() {
        let mut t = Actors::default();
        for id in 0..(DEAD_KEPT as u64 + 10) {
            t.create(id, 1, &opts(None, 0, 0), binary(), Resources::default())
                .unwrap();
            t.kill_now(id, "done");
        }
        assert_eq!(t.view().len(), DEAD_KEPT);
        assert!(t.accept_call(0).unwrap_err().contains("no actor"));
    }
}
